//! A counting OTLP/gRPC trace sink for the load benchmarks (`benches/load.py`,
//! `per_request.py`, `instructions.py`, `idle.py`, `soak.py`). `GET /count` on the second port
//! answers the number of spans received so far.
//!
//! Usage: `otlp_sink GRPC_ADDR COUNT_ADDR [--decode]`, e.g.
//! `otlp_sink 127.0.0.1:4317 127.0.0.1:4399`.
//!
//! By default each `TraceService/Export` request is read as protobuf down to its spans
//! (`ExportTraceServiceRequest.resource_spans` → `ResourceSpans.scope_spans` →
//! `ScopeSpans.spans`, every other field skipped by its wire type) and the spans are counted
//! without decoding their contents: the sink shares the load generator's core, and decoding
//! every attribute into owned strings cost about 4 µs per span there (`per_request.py`'s
//! `sink cpu/req`), time taken from the load generator and the upstream in bursts of a
//! whole batch. A malformed request is refused (`INVALID_ARGUMENT`). `--decode` decodes
//! every request whole with the official opentelemetry-proto definitions instead (the
//! contents of spans are checked by the test suite's receiver, `tests/common/otlp.rs`).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const MAX_MESSAGE: usize = 64 << 20;

/// `--decode`: the whole request decoded by the generated server.
struct Decoding(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Decoding {
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

/// The default: `TraceService/Export` with a codec that counts spans.
#[derive(Clone)]
struct Counting(Arc<AtomicU64>);

impl NamedService for Counting {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl tower::Service<http::Request<tonic::body::Body>> for Counting {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let count = self.0.clone();
        Box::pin(async move {
            if req.uri().path() != EXPORT_PATH {
                return Ok(Status::unimplemented(req.uri().path().to_string()).into_http());
            }
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            let mut grpc = Grpc::new(CountCodec)
                .apply_compression_config(accept, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(MAX_MESSAGE), None);
            Ok(grpc.unary(Count(count), req).await)
        })
    }
}

struct Count(Arc<AtomicU64>);

impl UnaryService<u64> for Count {
    type Response = ();
    type Future = Ready<Result<Response<()>, Status>>;

    fn call(&mut self, request: Request<u64>) -> Self::Future {
        self.0.fetch_add(*request.get_ref(), Ordering::Relaxed);
        ready(Ok(Response::new(())))
    }
}

/// Decodes an `ExportTraceServiceRequest` into its number of spans; encodes the (empty)
/// `ExportTraceServiceResponse`.
struct CountCodec;

impl Codec for CountCodec {
    type Encode = ();
    type Decode = u64;
    type Encoder = CountCodec;
    type Decoder = CountCodec;

    fn encoder(&mut self) -> CountCodec {
        CountCodec
    }

    fn decoder(&mut self) -> CountCodec {
        CountCodec
    }
}

impl Encoder for CountCodec {
    type Item = ();
    type Error = Status;

    /// An `ExportTraceServiceResponse` with no field set is zero bytes.
    fn encode(&mut self, _: (), _: &mut EncodeBuf<'_>) -> Result<(), Status> {
        Ok(())
    }
}

impl Decoder for CountCodec {
    type Item = u64;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<u64>, Status> {
        let message: Bytes = buf.copy_to_bytes(buf.remaining());
        count_spans(&message)
            .map(Some)
            .map_err(|err| Status::invalid_argument(format!("malformed request: {err}")))
    }
}

/// The spans in an encoded `ExportTraceServiceRequest` (field numbers from
/// opentelemetry/proto/trace/v1/trace.proto and collector/trace/v1/trace_service.proto).
fn count_spans(request: &[u8]) -> Result<u64, &'static str> {
    let mut spans = 0;
    // ExportTraceServiceRequest.resource_spans = 1
    each_message(request, 1, |resource_spans| {
        // ResourceSpans.scope_spans = 2
        each_message(resource_spans, 2, |scope_spans| {
            // ScopeSpans.spans = 2
            each_message(scope_spans, 2, |_span| {
                spans += 1;
                Ok(())
            })
        })
    })?;
    Ok(spans)
}

/// Calls `f` with the payload of every length-delimited field `field` of a message, and
/// skips every other field by its wire type.
fn each_message(
    mut message: &[u8],
    field: u64,
    mut f: impl FnMut(&[u8]) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    while !message.is_empty() {
        let key = varint(&mut message)?;
        let skip = match key & 7 {
            0 => {
                varint(&mut message)?;
                0
            }
            1 => 8,
            5 => 4,
            2 => {
                let len = usize::try_from(varint(&mut message)?).map_err(|_| "length")?;
                let payload = message.get(..len).ok_or("length past the end")?;
                if key >> 3 == field {
                    f(payload)?;
                }
                len
            }
            _ => return Err("wire type"),
        };
        message = message.get(skip..).ok_or("field past the end")?;
    }
    Ok(())
}

fn varint(buf: &mut &[u8]) -> Result<u64, &'static str> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first().ok_or("varint past the end")?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: otlp_sink GRPC_ADDR COUNT_ADDR [--decode]";
    let mut args = std::env::args().skip(1);
    let grpc: std::net::SocketAddr = args.next().ok_or(usage)?.parse()?;
    let count_addr: std::net::SocketAddr = args.next().ok_or(usage)?.parse()?;
    let decode = match args.next().as_deref() {
        None => false,
        Some("--decode") => true,
        Some(_) => return Err(usage.into()),
    };
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
    println!(
        "otlp_sink grpc={grpc} count={count_addr} mode={}",
        if decode { "decode" } else { "count" }
    );
    let mut server = tonic::transport::Server::builder();
    if decode {
        let service = TraceServiceServer::new(Decoding(count))
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(MAX_MESSAGE);
        server.add_service(service).serve(grpc).await?;
    } else {
        server.add_service(Counting(count)).serve(grpc).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    /// The count agrees with the official definitions' decode, whatever else the message
    /// holds; a cut message is refused.
    #[test]
    fn counts_what_the_official_decode_finds() {
        let span = |name: &str| Span {
            name: name.into(),
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            start_time_unix_nano: u64::MAX,
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    scope_spans: vec![
                        ScopeSpans {
                            spans: vec![span("a"), span("b"), span(&"c".repeat(300))],
                            schema_url: "x".into(),
                            ..Default::default()
                        },
                        ScopeSpans::default(),
                    ],
                    ..Default::default()
                },
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span("d")],
                        ..Default::default()
                    }],
                    schema_url: "y".into(),
                    ..Default::default()
                },
            ],
        };
        let bytes = request.encode_to_vec();
        assert_eq!(count_spans(&bytes), Ok(4));
        assert_eq!(count_spans(&[]), Ok(0));
        assert!(count_spans(&bytes[..bytes.len() - 1]).is_err());
    }
}
