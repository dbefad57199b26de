//! Certificates made in the test (rcgen): a CA, server and client certificates it signs, the
//! PEM files the proxy reads, and rustls configs for test clients and TLS upstreams.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SerialNumber,
};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

/// A certificate and its key, PEM, and the certificate's DER (what a peer sees).
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A server certificate for `names` (DNS names or IPs) with this serial number.
    pub fn server(&self, names: &[&str], serial: u64) -> Leaf {
        self.leaf(names, serial, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with common name `name`.
    pub fn client(&self, name: &str) -> Leaf {
        self.leaf(&[name], 1, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, names: &[&str], serial: u64, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![usage];
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// A temporary directory for the PEM files a config names.
pub struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    pub fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes `contents` to `name` (replacing it atomically: written aside, then renamed, as
    /// certificate tooling does) and returns the path as a string for a config.
    pub fn write(&self, name: &str, contents: &str) -> String {
        let path = self.dir.path().join(name);
        let aside = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&aside, contents).unwrap();
        std::fs::rename(&aside, &path).unwrap();
        path.to_str().unwrap().to_string()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn roots(ca_pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(ca_pem) {
        roots.add(cert).unwrap();
    }
    roots
}

/// A test client's TLS config: trusts `ca_pem`, offers `alpn`, presents `identity` if given.
pub fn client_config(ca_pem: &str, alpn: &[&str], identity: Option<&Leaf>) -> rustls::ClientConfig {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca_pem));
    let mut config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(
                certs(&leaf.cert_pem),
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config
}

/// The names a TLS test upstream saw in its clients' SNI (`None`: no SNI sent).
pub type SeenNames = Arc<Mutex<Vec<Option<String>>>>;

/// Serves `leaf` and records each ClientHello's SNI.
#[derive(Debug)]
struct RecordingResolver {
    key: Arc<rustls::sign::CertifiedKey>,
    seen: SeenNames,
}

impl rustls::server::ResolvesServerCert for RecordingResolver {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let name = hello.server_name().map(str::to_owned);
        self.seen.lock().unwrap().push(name);
        Some(self.key.clone())
    }
}

/// A TLS test upstream's acceptor: serves `leaf`, offers ALPN h2 and http/1.1, records SNI,
/// and requires a client certificate signed by `client_ca_pem` if given.
pub fn upstream_acceptor(
    leaf: &Leaf,
    client_ca_pem: Option<&str>,
) -> (tokio_rustls::TlsAcceptor, SeenNames) {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots(ca).into(),
                provider(),
            )
            .build()
            .unwrap(),
        ),
    };
    let key = rustls::sign::CertifiedKey::from_der(
        certs(&leaf.cert_pem),
        PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
        &provider(),
    )
    .unwrap();
    let seen = SeenNames::default();
    let resolver = RecordingResolver {
        key: Arc::new(key),
        seen: seen.clone(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), seen)
}
