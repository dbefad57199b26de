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
    #[error("tracing.otlp.ca_file {path}: no PEM certificate in it")]
    NoCertificate { path: std::path::PathBuf },
    #[error("tracing.otlp: cannot set up TLS: {0}")]
    Tls(String),
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
            let headers: HashMap<String, String> = config
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.0.clone()))
                .collect();
            let client = super::partial::CheckingClient {
                inner: opentelemetry_http::hyper::HyperClient::new(
                    https_connector(config.ca_file.as_deref())?,
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

/// A connector for `http` and `https` collector URLs: rustls with the ring provider,
/// trusting `ca_file` when given, else the system's roots.
pub(super) fn https_connector(
    ca_file: Option<&std::path::Path>,
) -> Result<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    ExporterError,
> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ExporterError::Tls(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| ExporterError::CaFile {
                path: path.to_owned(),
                source,
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                roots
                    .add(cert)
                    .map_err(|e| ExporterError::Tls(format!("{}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(ExporterError::NoCertificate {
                    path: path.to_owned(),
                });
            }
        }
        None => {
            // Unreadable system certificates are skipped, like every TLS client does.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let tls = builder.with_root_certificates(roots).with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build())
}
