//! OTLP/gRPC export of requests `super::wire` encoded: one unary call to
//! `TraceService/Export` over a tonic channel (HTTP/2, TLS with rustls/ring for `https`),
//! the configured headers as metadata, gzip when configured.
//!
//! Retries follow the OTLP specification and opentelemetry-otlp 0.33's `RetryPolicy`
//! default, which this path used before it encoded spans itself: up to 3 retries, 100 ms
//! doubling to at most 1.6 s plus up to 100 ms of jitter, all within `timeout` (which is
//! also each attempt's own deadline). Retryable: UNAVAILABLE, CANCELLED,
//! DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, DATA_LOSS; RESOURCE_EXHAUSTED only with a
//! `RetryInfo`. A `RetryInfo` delay (on UNAVAILABLE or RESOURCE_EXHAUSTED) is honoured, up
//! to 30 s. See `tests/integration/export_retry.rs`.

use std::time::{Duration, Instant};

use bytes::{BufMut as _, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;
use tracing::debug;

use super::ExporterError;
use crate::config::{Compression, OtlpConfig};

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

const MAX_RETRIES: u32 = 3;
const INITIAL_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_millis(1600);
const MAX_JITTER_MS: u64 = 100;
/// The longest a collector's `RetryInfo` is waited for.
const MAX_THROTTLE: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct GrpcExporter {
    grpc: tonic::client::Grpc<Channel>,
    metadata: MetadataMap,
    timeout: Duration,
}

impl GrpcExporter {
    /// The channel connects lazily: a collector that is down at start-up is not an error,
    /// its first export fails and is retried.
    pub fn build(config: &OtlpConfig) -> Result<GrpcExporter, ExporterError> {
        let mut headers = http::HeaderMap::new();
        for (name, value) in &config.headers {
            let header = http::HeaderName::try_from(name.as_str())
                .ok()
                .zip(http::HeaderValue::try_from(value.0.as_str()).ok());
            let Some((name, value)) = header else {
                return Err(ExporterError::Header { name: name.clone() });
            };
            headers.append(name, value);
        }
        let mut endpoint = Endpoint::from(config.endpoint.clone()).timeout(config.timeout);
        if config.endpoint.scheme_str() == Some("https") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(path) = &config.ca_file {
                let pem = std::fs::read(path).map_err(|source| ExporterError::CaFile {
                    path: path.clone(),
                    source,
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let Some((cert, key)) = super::otlp::client_identity(config)? {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| ExporterError::Tls(source_chain(&e)))?;
        }
        let mut grpc = tonic::client::Grpc::new(endpoint.connect_lazy());
        if config.compression == Compression::Gzip {
            grpc = grpc
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        Ok(GrpcExporter {
            grpc,
            metadata: MetadataMap::from_headers(headers),
            timeout: config.timeout,
        })
    }

    /// Sends one encoded `ExportTraceServiceRequest`, retrying as the module says. A partial
    /// success is logged and counted, not retried (OTLP specification).
    pub async fn export(&self, request: Bytes) -> Result<(), String> {
        let start = Instant::now();
        let mut attempt = 0;
        let mut delay = INITIAL_DELAY;
        let mut delay_cap = MAX_DELAY;
        loop {
            let status = match self.call(request.clone()).await {
                Ok(response) => {
                    if let Some(partial) = response.partial_success {
                        super::partial::record(partial.rejected_spans, &partial.error_message);
                    }
                    return Ok(());
                }
                Err(status) => status,
            };
            if start.elapsed() >= self.timeout || attempt >= MAX_RETRIES {
                return Err(describe(&status, attempt));
            }
            let retry_info = status
                .get_details_retry_info()
                .and_then(|info| info.retry_delay);
            let throttle = match (status.code(), retry_info) {
                (Code::ResourceExhausted, Some(wait)) => wait,
                (Code::Unavailable, Some(wait)) => wait,
                (
                    Code::Unavailable
                    | Code::Cancelled
                    | Code::DeadlineExceeded
                    | Code::Aborted
                    | Code::OutOfRange
                    | Code::DataLoss,
                    _,
                ) => Duration::ZERO,
                _ => return Err(describe(&status, attempt)),
            };
            attempt += 1;
            let throttle = throttle.min(MAX_THROTTLE);
            if throttle > delay_cap {
                delay_cap = MAX_THROTTLE;
            }
            delay = delay.max(throttle);
            let jitter = Duration::from_millis(fastrand::u64(0..=MAX_JITTER_MS));
            let sleep = (delay + jitter).min(delay_cap);
            if sleep >= self.timeout.saturating_sub(start.elapsed()) {
                return Err(format!(
                    "{}; the next retry would pass the {:?} deadline",
                    describe(&status, attempt - 1),
                    self.timeout
                ));
            }
            debug!(attempt, ?sleep, code = ?status.code(), "OTLP export failed; retrying");
            tokio::time::sleep(sleep).await;
            delay = (delay * 2).min(delay_cap);
        }
    }

    async fn call(&self, request: Bytes) -> Result<ExportTraceServiceResponse, Status> {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
        let request =
            tonic::Request::from_parts(self.metadata.clone(), http::Extensions::new(), request);
        let path = http::uri::PathAndQuery::from_static(EXPORT);
        Ok(grpc.unary(request, path, ExportCodec).await?.into_inner())
    }
}

/// The failure as logged: the gRPC code and, for a failure of our own transport (connect,
/// TLS, timeout), its cause. The collector's message is left out: it may echo credentials.
fn describe(status: &Status, retries: u32) -> String {
    let mut message = format!("OTLP/gRPC export failed with code {:?}", status.code());
    if let Some(source) = std::error::Error::source(status) {
        message.push_str(": ");
        message.push_str(&source_chain(source));
    }
    if retries > 0 {
        message.push_str(&format!(" (after {retries} retries)"));
    }
    message
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

/// The request goes out as the bytes `wire` wrote; the response is decoded with the
/// official definitions.
struct ExportCodec;

impl Codec for ExportCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = ExportCodec;
    type Decoder = ExportCodec;

    fn encoder(&mut self) -> ExportCodec {
        ExportCodec
    }

    fn decoder(&mut self) -> ExportCodec {
        ExportCodec
    }
}

impl Encoder for ExportCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ExportCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("undecodable ExportTraceServiceResponse: {e}")))
    }
}
