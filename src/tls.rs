//! rustls server and client configs (ring provider).
//!
//! - Listener: `server_config` offers ALPN `h2` and `http/1.1` and takes its certificate from
//!   a `ServerCerts`, which holds the current pair in an `ArcSwap` and re-reads the files on
//!   `refresh` (file change, config reload, SIGHUP). A bad new pair is refused and counted;
//!   the old one keeps serving. New handshakes see a new pair; open connections keep theirs.
//! - Upstream: `client_config` verifies against the configured CA or the system roots,
//!   offers the ALPN of the upstream's protocol, and presents a client certificate if one is
//!   configured (mTLS between sidecars).

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

use crate::config::pem;
use crate::config::{ClientAuth, ListenerTls, Protocol, UpstreamTls};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: {message}")]
    Files { what: String, message: String },
    #[error("{what}: {source}")]
    Rustls { what: String, source: rustls::Error },
}

/// Counts certificate reloads of one listener by outcome.
#[derive(Clone, Debug, Default)]
pub struct CertReloadMetrics {
    /// A new certificate was loaded.
    pub applied: Counter,
    /// The files could not be read or did not form a valid pair; the old one stays.
    pub failed: Counter,
}

/// A listener's certificate and key, replaceable while serving.
#[derive(Debug)]
pub struct ServerCerts {
    listener: String,
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    metrics: CertReloadMetrics,
}

impl ServerCerts {
    /// Loads the pair named by `tls`; an error names the listener and the files.
    pub fn load(
        listener: &str,
        tls: &ListenerTls,
        metrics: CertReloadMetrics,
    ) -> Result<ServerCerts, TlsError> {
        let certified = read_pair(&tls.cert, &tls.key).map_err(|message| TlsError::Files {
            what: format!("listener {listener}: tls"),
            message,
        })?;
        Ok(ServerCerts {
            listener: listener.to_owned(),
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            current: ArcSwap::from_pointee(certified),
            metrics,
        })
    }

    /// Re-reads the files. A changed, valid pair replaces the current one (`Ok(true)`); an
    /// unchanged one does nothing (`Ok(false)`); an invalid one is logged and counted and the
    /// current pair keeps serving (`Err`).
    pub fn refresh(&self) -> Result<bool, String> {
        let loaded = read_pair(&self.cert, &self.key);
        let certified = match loaded {
            Ok(certified) => certified,
            Err(message) => {
                self.metrics.failed.inc();
                warn!(listener = %self.listener, error = %message,
                    "TLS certificate reload failed; the previous certificate keeps serving");
                return Err(message);
            }
        };
        let current = self.current.load();
        if certified.cert == current.cert {
            return Ok(false);
        }
        self.current.store(Arc::new(certified));
        self.metrics.applied.inc();
        info!(listener = %self.listener, cert = %self.cert.display(), "TLS certificate reloaded");
        Ok(true)
    }

    /// The files this pair is read from (to watch them).
    pub fn paths(&self) -> [&std::path::Path; 2] {
        [&self.cert, &self.key]
    }

    /// The leaf certificate serving now (DER).
    pub fn current_leaf(&self) -> Option<Vec<u8>> {
        self.current.load().cert.first().map(|c| c.to_vec())
    }
}

impl ResolvesServerCert for ServerCerts {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read_pair(cert: &std::path::Path, key: &std::path::Path) -> Result<CertifiedKey, String> {
    let cert_pem = pem::read(cert)?;
    let key_pem = pem::read(key)?;
    pem::certified_key((cert, &cert_pem), (key, &key_pem))
}

/// The rustls config of a TLS listener: ALPN `h2` then `http/1.1`, certificates from
/// `certs`, and client-certificate verification as `tls.client_auth` says.
pub fn server_config(
    listener: &str,
    tls: &ListenerTls,
    certs: Arc<ServerCerts>,
) -> Result<rustls::ServerConfig, TlsError> {
    let what = || format!("listener {listener}: tls");
    let provider = pem::provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: what(),
            source,
        })?;
    let builder = match (&tls.client_ca, tls.client_auth) {
        (Some(ca), ClientAuth::Optional | ClientAuth::Required) => {
            let roots = pem::read(ca)
                .and_then(|pem_bytes| pem::roots(ca, &pem_bytes))
                .map_err(|message| TlsError::Files {
                    what: format!("{}.client_ca", what()),
                    message,
                })?;
            let mut verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            if tls.client_auth == ClientAuth::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|e| TlsError::Files {
                what: format!("{}.client_ca", what()),
                message: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The rustls config for an upstream's endpoints: ALPN for `protocol` (`h2` or
/// `http/1.1`), the configured CA or the system roots, and the client identity if any.
pub fn client_config(
    upstream: &str,
    tls: &UpstreamTls,
    protocol: Protocol,
) -> Result<rustls::ClientConfig, TlsError> {
    let what = || format!("upstreams.{upstream}.tls");
    let files = |key: &str, message: String| TlsError::Files {
        what: format!("{}.{key}", what()),
        message,
    };
    let builder = rustls::ClientConfig::builder_with_provider(pem::provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: what(),
            source,
        })?;
    let roots = match &tls.ca {
        Some(ca) => pem::roots(&ca.path, &ca.contents).map_err(|m| files("ca", m))?,
        None => system_roots(),
    };
    let builder = builder.with_root_certificates(roots);
    let mut config = match &tls.client_identity {
        Some(identity) => {
            let chain = pem::certs(&identity.cert.path, &identity.cert.contents)
                .map_err(|m| files("client_cert", m))?;
            let key = pem::key(&identity.key.path, &identity.key.contents)
                .map_err(|m| files("client_key", m))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| TlsError::Rustls {
                    what: format!("{}.client_key", what()),
                    source,
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match protocol {
        Protocol::Http1 => vec![b"http/1.1".to_vec()],
        Protocol::Http2 => vec![b"h2".to_vec()],
    };
    Ok(config)
}

/// The system's trusted roots (rustls-native-certs). Unreadable ones are skipped, as every
/// TLS client does; none at all leaves an empty store, and every handshake then fails with
/// an "unknown issuer" error that names the cause.
pub fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    roots
}

/// A TLS listener's handshake: the acceptor, its time limit, and a failure counter.
#[derive(Clone)]
pub struct Acceptor {
    pub listener: Arc<str>,
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// A client must finish its handshake within this time (the listener's
    /// `header_read_timeout`), so a silent connection cannot hold a task forever.
    pub timeout: std::time::Duration,
    /// Handshakes that failed or timed out.
    pub failures: Counter,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// The handshake on a new connection; `None` (logged at debug, counted) when it fails.
    pub async fn handshake(
        &self,
        stream: tokio::net::TcpStream,
        remote: std::net::SocketAddr,
    ) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
        let error = match tokio::time::timeout(self.timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no handshake within {:?}", self.timeout),
        };
        self.failures.inc();
        tracing::debug!(listener = %self.listener, client = %remote, %error, "TLS handshake failed");
        None
    }
}

/// Re-reads every certificate pair (see `ServerCerts::refresh`; failures are logged there).
pub fn refresh_all(certs: &[Arc<ServerCerts>]) {
    for certs in certs {
        let _ = certs.refresh();
    }
}

/// Re-reads `certs` whenever one of their files changes (their directories are watched, as
/// for the config file, and other entries there ignored; debounced: writers replace a
/// certificate and its key in quick succession), until `stop`. The returned task holds the
/// watcher.
pub fn watch_files(
    certs: Vec<Arc<ServerCerts>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> notify::Result<tokio::task::JoinHandle<()>> {
    let changed = Arc::new(tokio::sync::Notify::new());
    let files: Vec<PathBuf> = certs
        .iter()
        .flat_map(|c| c.paths())
        .map(|p| p.to_path_buf())
        .collect();
    let watcher = crate::config::watch::watch(&files, changed.clone(), Default::default())?;
    Ok(tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            tokio::select! {
                _ = changed.notified() => {}
                _ = crate::stopped(&mut stop) => return,
            }
            loop {
                tokio::select! {
                    _ = changed.notified() => continue,
                    _ = tokio::time::sleep(FILE_DEBOUNCE) => break,
                }
            }
            let certs = certs.clone();
            let _ = tokio::task::spawn_blocking(move || refresh_all(&certs)).await;
        }
    }))
}

/// Quiet time after a change in a certificate directory before the files are re-read.
const FILE_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(100);
