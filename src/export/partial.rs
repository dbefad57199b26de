//! OTLP partial success (the collector accepted the request but rejected some spans):
//! logged and counted. The gRPC exporter (`super::grpc`) decodes the response itself; the
//! HTTP/protobuf exporter (opentelemetry-otlp's) does not look at the response body, so
//! `CheckingClient` wraps its HTTP client and decodes `ExportTraceServiceResponse`.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use tracing::warn;

static REJECTED_SPANS: AtomicU64 = AtomicU64::new(0);

/// Spans collectors reported as rejected in partial-success responses, process-wide.
pub fn rejected_spans() -> u64 {
    REJECTED_SPANS.load(Ordering::Relaxed)
}

/// The HTTP exporter's client, checking each successful response for partial success.
#[derive(Debug)]
pub struct CheckingClient<C> {
    pub inner: C,
}

#[async_trait]
impl<C: HttpClient> HttpClient for CheckingClient<C> {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let response = self.inner.send_bytes(request).await?;
        if response.status().is_success() {
            if let Ok(decoded) = ExportTraceServiceResponse::decode(response.body().clone()) {
                if let Some(partial) = decoded.partial_success {
                    record(partial.rejected_spans, &partial.error_message);
                }
            }
        }
        Ok(response)
    }
}

pub(super) fn record(rejected: i64, message: &str) {
    if rejected > 0 || !message.is_empty() {
        REJECTED_SPANS.fetch_add(rejected.max(0) as u64, Ordering::Relaxed);
        warn!(
            rejected_spans = rejected,
            message, "OTLP partial success: the collector rejected spans"
        );
    }
}
