//! Builds opentelemetry-otlp's exporter for `protocol = "http/protobuf"` from
//! `[tracing.otlp]`: hyper (not a blocking client), headers, gzip, timeout, TLS (rustls with
//! ring). The exporter retries retryable failures itself (opentelemetry-otlp's
//! `RetryPolicy` default: 3 retries, 100 ms doubling to 1.6 s, jitter), within `timeout`:
//! HTTP 429/502/503/504 and connection failures, honouring `Retry-After` on 429/503; see
//! `tests/integration/export_retry.rs`. The TLS and client-certificate helpers here serve the gRPC
//! exporter (`super::grpc`) and Zipkin too.

use std::collections::HashMap;

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanExporter as _;

use crate::config::{Compression, OtlpConfig};

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
    #[error("tracing.otlp.client_cert / client_key: {0}")]
    ClientIdentity(String),
    #[error("tracing.otlp: cannot set up TLS: {0}")]
    Tls(String),
    #[error("tracing.otlp: cannot build the OTLP exporter: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The OTLP/HTTP exporter (opentelemetry-otlp's, over hyper). OTLP/gRPC is
/// `super::grpc`, fed by `super::wire`.
pub fn build_http(
    config: &OtlpConfig,
    resource: &Resource,
) -> Result<opentelemetry_otlp::SpanExporter, ExporterError> {
    let headers: HashMap<String, String> = config
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), value.0.clone()))
        .collect();
    let client = super::partial::CheckingClient {
        inner: opentelemetry_http::hyper::HyperClient::new(
            https_connector(config)?,
            config.timeout,
            None,
        ),
    };
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(config.endpoint.to_string())
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_timeout(config.timeout)
        .with_headers(headers);
    if config.compression == Compression::Gzip {
        builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
    }
    let mut exporter = builder.build()?;
    exporter.set_resource(resource);
    Ok(exporter)
}

/// A certificate chain and its key, PEM.
type PemPair = (Vec<u8>, Vec<u8>);

/// The collector client certificate and key (PEM), read and checked to form a pair. Both or
/// neither are set (validation; an `OTEL_EXPORTER_OTLP_CLIENT_*` variable may set one).
pub(super) fn client_identity(config: &OtlpConfig) -> Result<Option<PemPair>, ExporterError> {
    let (cert, key) = match (&config.client_cert, &config.client_key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            let message = "both are needed, or neither".to_owned();
            return Err(ExporterError::ClientIdentity(message));
        }
    };
    let cert_pem = crate::config::pem::read(cert).map_err(ExporterError::ClientIdentity)?;
    let key_pem = crate::config::pem::read(key).map_err(ExporterError::ClientIdentity)?;
    crate::config::pem::certified_key((cert, &cert_pem), (key, &key_pem))
        .map_err(ExporterError::ClientIdentity)?;
    Ok(Some((cert_pem, key_pem)))
}

/// A connector for `http` and `https` collector URLs: rustls with the ring provider,
/// trusting `ca_file` when given, else the system's roots, presenting the client
/// certificate when one is configured.
fn https_connector(
    config: &OtlpConfig,
) -> Result<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    ExporterError,
> {
    let identity = match client_identity(config)? {
        Some((cert, key)) => {
            let path = config
                .client_cert
                .as_deref()
                .unwrap_or(std::path::Path::new(""));
            let chain =
                crate::config::pem::certs(path, &cert).map_err(ExporterError::ClientIdentity)?;
            let path = config
                .client_key
                .as_deref()
                .unwrap_or(std::path::Path::new(""));
            let key = crate::config::pem::key(path, &key).map_err(ExporterError::ClientIdentity)?;
            Some((chain, key))
        }
        None => None,
    };
    tls_connector(config.ca_file.as_deref(), identity)
}

/// A client certificate chain and its key, parsed.
type ParsedIdentity = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// An `http` and `https` connector: rustls with the ring provider, trusting `ca_file` when
/// given, else the system's roots, presenting `identity` when given. Also the Zipkin
/// exporter's.
pub(super) fn tls_connector(
    ca_file: Option<&std::path::Path>,
    identity: Option<ParsedIdentity>,
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
    let builder = builder.with_root_certificates(roots);
    let tls = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| ExporterError::ClientIdentity(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build())
}
