//! Builds opentelemetry-otlp's exporter from `[tracing.otlp]`: gRPC (tonic) or
//! HTTP/protobuf (hyper, not a blocking client), headers, gzip, timeout, TLS for gRPC.
//! The exporter retries retryable failures itself (gRPC UNAVAILABLE and friends, HTTP
//! 429/502/503/504 honouring Retry-After) with capped exponential back-off until `timeout`.

use std::collections::HashMap;

use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanExporter as _;

use crate::config::{Compression, OtlpConfig, OtlpProtocol};

#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error("tracing.otlp.headers: {name:?} is not a valid header")]
    Header { name: String },
    #[error("tracing.otlp.ca_file {path}: {source}")]
    CaFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "tracing.otlp.endpoint {endpoint}: https is supported with protocol = \"grpc\"; \
         the http/protobuf exporter speaks plain http only"
    )]
    HttpsOverHttp { endpoint: String },
    #[error("tracing.otlp: cannot build the OTLP exporter: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
}

pub fn build(
    config: &OtlpConfig,
    resource: &Resource,
) -> Result<opentelemetry_otlp::SpanExporter, ExporterError> {
    let endpoint = config.endpoint.to_string();
    let https = config.endpoint.scheme_str() == Some("https");
    let mut exporter = match config.protocol {
        OtlpProtocol::Grpc => {
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
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(config.timeout)
                .with_metadata(MetadataMap::from_headers(headers));
            if config.compression == Compression::Gzip {
                builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            if https {
                let mut tls = ClientTlsConfig::new().with_native_roots();
                if let Some(path) = &config.ca_file {
                    let pem = std::fs::read(path).map_err(|source| ExporterError::CaFile {
                        path: path.clone(),
                        source,
                    })?;
                    tls = tls.ca_certificate(Certificate::from_pem(pem));
                }
                builder = builder.with_tls_config(tls);
            }
            builder.build()?
        }
        OtlpProtocol::HttpProtobuf => {
            if https {
                return Err(ExporterError::HttpsOverHttp { endpoint });
            }
            let headers: HashMap<String, String> = config
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.0.clone()))
                .collect();
            let client = super::partial::CheckingClient {
                inner: opentelemetry_http::hyper::HyperClient::with_default_connector(
                    config.timeout,
                    None,
                ),
            };
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_endpoint(endpoint)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_timeout(config.timeout)
                .with_headers(headers);
            if config.compression == Compression::Gzip {
                builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            builder.build()?
        }
    };
    exporter.set_resource(resource);
    Ok(exporter)
}
