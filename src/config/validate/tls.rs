//! TLS tables: `[listeners.tls]`, `[upstreams.NAME.tls]` and the collector's client
//! certificate in `[tracing.otlp]`. The PEM files are read and checked here (readable, PEM,
//! a key that matches its certificate), so `hoptrace check` reports a bad file under its key.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{Check, value};
use crate::config::pem;
use crate::config::raw::{self, Table};
use crate::config::{ClientAuth, ClientIdentity, ListenerTls, PemFile, UpstreamTls};

const CLIENT_AUTH: &[(&str, ClientAuth)] = &[
    ("none", ClientAuth::None),
    ("optional", ClientAuth::Optional),
    ("required", ClientAuth::Required),
];

impl Check<'_> {
    /// `listeners[i].tls`. `None` after reporting an error.
    pub(super) fn listener_tls(
        &mut self,
        path: &str,
        t: &Table<raw::ListenerTls>,
    ) -> Option<ListenerTls> {
        let path = &format!("{path}.tls");
        let f = &t.fields;
        let cert = self.required(t, path, "cert", &f.cert, path_value);
        let key = self.required(t, path, "key", &f.key, path_value);
        let client_ca = self.optional(path, "client_ca", &f.client_ca, path_value);
        let default_auth = match client_ca {
            Some(Some(_)) => ClientAuth::Required,
            _ => ClientAuth::None,
        };
        let client_auth = self.or_default(path, "client_auth", &f.client_auth, default_auth, |s| {
            value::one_of(s, CLIENT_AUTH)
        });
        let pair = match (&cert, &key, &f.cert, &f.key) {
            (Some(cert), Some(key), Some(cert_at), Some(key_at)) => self
                .pem_pair(path, ("cert", cert_at, cert), ("key", key_at, key))
                .is_some(),
            _ => false,
        };
        let (client_ca, client_auth) = (client_ca?, client_auth?);
        let client_ok = match (&client_ca, client_auth, &f.client_ca, &f.client_auth) {
            (Some(ca), ClientAuth::Optional | ClientAuth::Required, Some(at), _) => self
                .pem_file(path, "client_ca", at, ca)
                .is_some_and(|loaded| match pem::roots(ca, &loaded.contents) {
                    Ok(_) => true,
                    Err(message) => {
                        self.error(format!("{path}.client_ca"), &at.span(), message);
                        false
                    }
                }),
            (None, ClientAuth::Optional | ClientAuth::Required, _, Some(at)) => {
                let message = "needs client_ca: the CA that client certificates must chain to";
                self.error(format!("{path}.client_auth"), &at.span(), message);
                false
            }
            (Some(_), ClientAuth::None, Some(at), _) => {
                let message = "client_auth = \"none\" would ignore it; remove one of them";
                self.error(format!("{path}.client_ca"), &at.span(), message);
                false
            }
            _ => true,
        };
        if !(pair && client_ok) {
            return None;
        }
        Some(ListenerTls {
            cert: cert?,
            key: key?,
            client_ca,
            client_auth,
        })
    }

    /// `upstreams.NAME.tls`; `Ok(None)` when `enabled = false`. `Err` after reporting.
    pub(super) fn upstream_tls(
        &mut self,
        path: &str,
        t: &Table<raw::UpstreamTls>,
    ) -> Result<Option<UpstreamTls>, ()> {
        let path = &format!("{path}.tls");
        let f = &t.fields;
        let enabled = f.enabled.as_ref().is_none_or(|b| *b.get_ref());
        let ca = match &f.ca {
            None => Some(None),
            Some(at) => self
                .parse(format!("{path}.ca"), at, path_value)
                .and_then(|file| self.pem_file(path, "ca", at, &file))
                .and_then(|loaded| match pem::roots(&loaded.path, &loaded.contents) {
                    Ok(_) => Some(Some(loaded)),
                    Err(message) => {
                        self.error(format!("{path}.ca"), &at.span(), message);
                        None
                    }
                }),
        };
        let server_name = self.optional(path, "server_name", &f.server_name, |s| {
            rustls::pki_types::ServerName::try_from(s)
                .map(|_| s.to_owned())
                .map_err(|_| format!("invalid server name {s:?} (expected a DNS name or IP)"))
        });
        let identity = self.identity(path, &f.client_cert, &f.client_key);
        let (Some(ca), Some(server_name), Some(identity)) = (ca, server_name, identity) else {
            return Err(());
        };
        Ok(enabled.then_some(UpstreamTls {
            ca,
            server_name,
            client_identity: identity.map(|(cert, key)| ClientIdentity { cert, key }),
        }))
    }

    /// `client_cert` and `client_key` under `path`: both or neither, readable, a matching
    /// pair. `None` after reporting; `Some(None)` when neither is set.
    pub(super) fn identity(
        &mut self,
        path: &str,
        cert: &Option<Spanned<String>>,
        key: &Option<Spanned<String>>,
    ) -> Option<Option<(PemFile, PemFile)>> {
        let (cert_at, key_at) = match (cert, key) {
            (None, None) => return Some(None),
            (Some(c), Some(k)) => (c, k),
            (Some(c), None) => {
                self.error(
                    format!("{path}.client_key"),
                    &c.span(),
                    "missing: client_cert needs its key",
                );
                return None;
            }
            (None, Some(k)) => {
                let message = "missing: client_key needs its certificate";
                self.error(format!("{path}.client_cert"), &k.span(), message);
                return None;
            }
        };
        let cert_path = self.parse(format!("{path}.client_cert"), cert_at, path_value);
        let key_path = self.parse(format!("{path}.client_key"), key_at, path_value);
        let (cert_path, key_path) = (cert_path?, key_path?);
        let (cert, key) = self.pem_pair(
            path,
            ("client_cert", cert_at, &cert_path),
            ("client_key", key_at, &key_path),
        )?;
        Some(Some((cert, key)))
    }

    /// Reads a certificate chain file and its key file and checks that they belong together;
    /// each error is reported under the key that names the bad file.
    fn pem_pair(
        &mut self,
        path: &str,
        (cert_key, cert_at, cert_file): (&str, &Spanned<String>, &Path),
        (key_key, key_at, key_file): (&str, &Spanned<String>, &Path),
    ) -> Option<(PemFile, PemFile)> {
        let cert = self.pem_file(path, cert_key, cert_at, cert_file);
        let key = self.pem_file(path, key_key, key_at, key_file);
        // Each file is checked on its own first, so that both can be reported at once.
        let cert = cert.filter(|cert| match pem::certs(cert_file, &cert.contents) {
            Ok(_) => true,
            Err(message) => {
                self.error(format!("{path}.{cert_key}"), &cert_at.span(), message);
                false
            }
        });
        let key = key.filter(|key| match pem::key(key_file, &key.contents) {
            Ok(_) => true,
            Err(message) => {
                self.error(format!("{path}.{key_key}"), &key_at.span(), message);
                false
            }
        });
        let (cert, key) = (cert?, key?);
        if let Err(message) =
            pem::certified_key((cert_file, &cert.contents), (key_file, &key.contents))
        {
            self.error(format!("{path}.{key_key}"), &key_at.span(), message);
            return None;
        }
        Some((cert, key))
    }

    /// Reads the file `file` named by `path.key`; an error names the key and the file.
    fn pem_file(
        &mut self,
        path: &str,
        key: &str,
        at: &Spanned<String>,
        file: &Path,
    ) -> Option<PemFile> {
        match pem::read(file) {
            Ok(contents) => Some(PemFile {
                path: file.to_owned(),
                contents: contents.into(),
            }),
            Err(message) => {
                self.error(format!("{path}.{key}"), &at.span(), message);
                None
            }
        }
    }
}

fn path_value(s: &str) -> Result<PathBuf, String> {
    value::non_empty(s).map(PathBuf::from)
}
