//! A counting OTLP/gRPC trace sink for the load benchmark (`benches/load.py`): decodes every
//! export request with the official opentelemetry-proto definitions and counts the spans.
//! `GET /count` on the second port answers the number of spans received so far.
//!
//! Usage: `otlp_sink GRPC_ADDR COUNT_ADDR`, e.g. `otlp_sink 127.0.0.1:4317 127.0.0.1:4399`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let grpc: std::net::SocketAddr = args
        .next()
        .ok_or("usage: otlp_sink GRPC_ADDR COUNT_ADDR")?
        .parse()?;
    let count_addr: std::net::SocketAddr = args
        .next()
        .ok_or("usage: otlp_sink GRPC_ADDR COUNT_ADDR")?
        .parse()?;
    let count = Arc::new(AtomicU64::new(0));

    let counter = tokio::net::TcpListener::bind(count_addr).await?;
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = counter.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let n = c.load(Ordering::Relaxed);
                    async move {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(
                            n.to_string(),
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    println!("otlp_sink grpc={grpc} count={count_addr}");
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Sink(count)).max_decoding_message_size(64 << 20))
        .serve(grpc)
        .await?;
    Ok(())
}
