//! Configuration: the TOML schema (`raw`), its validation into the typed `Config` below
//! (`validate`), and errors that name the bad key and its line (`error`).
//!
//! Loading has no side effects: nothing is bound or spawned here, so `hoptrace check`, the
//! startup path and (later) reload all go through the same `Config::from_toml_str`.

mod error;
mod raw;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use self::error::{ConfigError, ConfigErrors, LoadError};

/// A validated configuration. Every field is typed and every default is filled in: code that
/// uses a `Config` never re-checks it.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub service: ServiceConfig,
    pub admin: AdminConfig,
    pub shutdown: ShutdownConfig,
    pub listeners: Vec<ListenerConfig>,
    /// Routes in file order; `RouteConfig::listener` names an entry of `listeners`.
    pub routes: Vec<RouteConfig>,
    /// Upstreams by name; every route's `upstream` names one of them.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    pub name: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AdminConfig {
    pub bind: SocketAddr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ShutdownConfig {
    /// How long in-flight requests may run after SIGTERM/SIGINT before the process exits.
    pub grace: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// In front of the local app: a SERVER span per request.
    Inbound,
    /// The app's egress: a CLIENT span per upstream attempt.
    Outbound,
    /// An edge with no local app: both.
    Gateway,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub role: Role,
    /// A client must send its whole request header section within this time (slowloris guard).
    pub header_read_timeout: Duration,
    /// Largest request header section accepted; larger gets 431.
    pub max_header_bytes: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com`: that host only (stored lowercase, no port).
    Exact(String),
    /// `*.example.com`: any host ending in `.example.com` (stored lowercase as `.example.com`).
    Suffix(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfig {
    /// Optional name; later used as the span's route template in place of `path_prefix`.
    pub name: Option<String>,
    pub listener: String,
    pub host: Option<HostMatch>,
    /// Always starts with `/`; `/` when not set.
    pub path_prefix: String,
    /// Empty means any method.
    pub methods: Vec<http::Method>,
    /// Each header must be present with exactly this value. Names are lowercase.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub upstream: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge, cleartext (h2c).
    Http2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Balance {
    RoundRobin,
    /// Power of two choices on outstanding requests weighted by latency EWMA.
    P2c,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamConfig {
    pub endpoints: Vec<Endpoint>,
    pub protocol: Protocol,
    pub balance: Balance,
    pub connect_timeout: Duration,
    /// From sending the request until the response headers arrive; the body may take longer.
    pub request_timeout: Duration,
    /// Pooled idle connections are closed after this long.
    pub idle_timeout: Duration,
    pub max_idle_per_endpoint: usize,
    /// An endpoint that refused a connection is skipped for this long.
    pub failure_backoff: Duration,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text).map_err(|errors| LoadError::Invalid {
            path: path.to_owned(),
            errors,
        })
    }

    /// Parses and validates TOML text, reporting every error found, not just the first.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigErrors> {
        validate::validate(text)
    }
}
