//! OTLP partial success (the collector accepted the request but rejected some spans):
//! logged and counted. The HTTP/protobuf exporter does not look at the response body, so
//! `CheckingClient` wraps its HTTP client and decodes `ExportTraceServiceResponse` itself;
//! the gRPC exporter logs a `TonicTracesClient.PartialSuccess` event, which
//! `PartialSuccessLayer` counts.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber, warn};
use tracing_subscriber::layer::{Context, Layer};

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

fn record(rejected: i64, message: &str) {
    if rejected > 0 || !message.is_empty() {
        REJECTED_SPANS.fetch_add(rejected.max(0) as u64, Ordering::Relaxed);
        warn!(
            rejected_spans = rejected,
            message, "OTLP partial success: the collector rejected spans"
        );
    }
}

/// Counts the gRPC exporter's partial-success log events (install it in the subscriber).
#[derive(Debug, Default)]
pub struct PartialSuccessLayer;

impl<S: Subscriber> Layer<S> for PartialSuccessLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().name() == "TonicTracesClient.PartialSuccess" {
            let mut rejected = RejectedField(0);
            event.record(&mut rejected);
            REJECTED_SPANS.fetch_add(rejected.0.max(0) as u64, Ordering::Relaxed);
        }
    }
}

struct RejectedField(i64);

impl Visit for RejectedField {
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "rejected_spans" {
            self.0 = value;
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "rejected_spans" {
            self.0 = i64::try_from(value).unwrap_or(i64::MAX);
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}
