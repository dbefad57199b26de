//! Configuration: the TOML schema (`raw`), its validation into the typed `Config` below
//! (`validate`), and errors that name the bad key and its line (`error`).
//!
//! Loading has no side effects: nothing is bound or spawned here, so `hoptrace check`, the
//! startup path and (later) reload all go through the same `Config::from_toml_str`.
//! `Config::load` then applies the OpenTelemetry `OTEL_*` environment variables (`env`);
//! `from_toml_str` never reads the environment.

mod env;
mod error;
pub mod pem;
mod raw;
mod validate;
pub mod watch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use self::error::{ConfigError, ConfigErrors, LoadError};

/// A validated configuration. Every field is typed and every default is filled in: code that
/// uses a `Config` never re-checks it.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub service: ServiceConfig,
    pub admin: AdminConfig,
    pub shutdown: ShutdownConfig,
    pub access_log: AccessLogConfig,
    pub listeners: Vec<ListenerConfig>,
    /// Routes in file order; `RouteConfig::listener` names an entry of `listeners`.
    pub routes: Vec<RouteConfig>,
    /// Upstreams by name; every route's `upstream` names one of them.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub tracing: TracingConfig,
    pub stitching: StitchingConfig,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    /// `service.name` of every span. `OTEL_SERVICE_NAME` overrides it.
    pub name: String,
    /// Extra resource attributes, from `OTEL_RESOURCE_ATTRIBUTES` (`k=v,k2=v2`, values
    /// percent-decoded), in the order given.
    pub resource_attributes: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AdminConfig {
    pub bind: SocketAddr,
    /// When set, `POST /reload` needs `Authorization: Bearer <token>` from every client;
    /// when not, it is allowed from loopback clients only.
    pub reload_token: Option<Secret>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ShutdownConfig {
    /// How long in-flight requests may run after SIGTERM/SIGINT before the process exits.
    pub grace: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AccessLogConfig {
    /// One log line per request (target `hoptrace::access`). Default true.
    pub enabled: bool,
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
    /// TLS termination (`[listeners.tls]`); plain HTTP when `None`.
    pub tls: Option<ListenerTls>,
    /// `[listeners.trace] incoming`: whether callers' trace contexts are continued.
    pub trace_incoming: TraceIncoming,
    /// Most header fields in one HTTP/1.1 request; more gets 431.
    pub max_headers: usize,
    /// Most client connections open at once; a connection beyond it is accepted and closed
    /// at once (and counted). `None`: no limit.
    pub max_connections: Option<usize>,
}

/// Whether a TLS listener asks clients for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientAuth {
    /// No client certificate is requested.
    None,
    /// Requested; a client without one is served, one with an untrusted one is refused.
    Optional,
    /// A certificate signed by `client_ca` is required for the handshake to succeed.
    Required,
}

/// `[listeners.tls]`. Only paths: the certificate and key are read when the listener starts
/// and again whenever the files change (rotation without restart), not kept in the config.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerTls {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert`.
    pub key: PathBuf,
    /// PEM CA certificates that client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// A PEM file read when the config is loaded. `Debug` shows the path only; equality compares
/// the contents too, so a reload notices a file that was replaced under the same name.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PemFile {
    pub path: PathBuf,
    pub contents: Arc<[u8]>,
}

impl std::fmt::Debug for PemFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PemFile({:?})", self.path)
    }
}

/// `[upstreams.NAME.tls]`: connections to the endpoints are TLS.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// CA certificates the endpoints' certificates must chain to; the system roots if `None`.
    pub ca: Option<PemFile>,
    /// SNI and the name the certificate must carry; the endpoint's host if `None`.
    pub server_name: Option<String>,
    /// Client certificate and key (mTLS), both or neither.
    pub client_identity: Option<ClientIdentity>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    pub cert: PemFile,
    pub key: PemFile,
}

/// What a listener does with a trace context a caller sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TraceIncoming {
    /// Continue the caller's trace (and honour its sampling decision). The default.
    Continue,
    /// Start a new trace for every request; the caller's context becomes a span link.
    Restart,
}

/// A propagation format of `[tracing] propagators` (the `OTEL_PROPAGATORS` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Propagator {
    TraceContext,
    B3,
    B3Multi,
    Jaeger,
    XRay,
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
    /// `false` switches tracing off for this route (health checks): no span, no
    /// `traceparent` rewrite. Default `true`.
    pub tracing: bool,
    /// Overrides `[tracing] sampling_ratio` for new traces starting on this route.
    pub sampling_ratio: Option<f64>,
    /// Largest request body forwarded, in bytes; larger gets 413. `None`: no limit.
    pub max_request_body: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExporterKind {
    /// OTLP over gRPC or HTTP/protobuf (`[tracing.otlp]`).
    Otlp,
    /// Zipkin v2 JSON over HTTP (`[tracing.zipkin]`).
    Zipkin,
    /// One JSON line per span on stdout, for local debugging.
    Stdout,
    /// Spans are recorded for headers and logs but not exported.
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// A value that must not appear in logs or `Debug` output (API keys in OTLP headers).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"****\"")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TracingConfig {
    pub exporter: ExporterKind,
    /// Probability that a new trace (no sampled/unsampled parent) is sampled, 0.0-1.0.
    pub sampling_ratio: f64,
    /// When false, new traces are never sampled and parents are ignored for the decision
    /// (`OTEL_TRACES_SAMPLER=always_off`); `parent_based` false means the ratio decides
    /// even when a parent exists (`traceidratio`).
    pub parent_based: bool,
    /// Add the W3C level 2 `traceresponse` header to responses. Default true.
    pub traceresponse: bool,
    /// Also add the trace id alone in this response header (e.g. `x-trace-id`).
    pub trace_id_header: Option<http::HeaderName>,
    /// Request headers recorded as `http.request.header.<name>` (lowercase names).
    pub capture_request_headers: Vec<http::HeaderName>,
    /// Response headers recorded as `http.response.header.<name>`.
    pub capture_response_headers: Vec<http::HeaderName>,
    /// Query keys whose values are replaced by `REDACTED` in `url.query` / `url.full`
    /// (lowercase; compared case-insensitively).
    pub redact_query_keys: Vec<String>,
    /// Spans waiting for export; when full, new spans are dropped and counted.
    pub queue_size: usize,
    /// Most spans per export request.
    pub batch_size: usize,
    /// Longest a span waits in a partial batch.
    pub batch_delay: Duration,
    /// Formats read (first valid wins) and written (all), in order. Empty: none (every
    /// request starts a trace; no header is read or written).
    pub propagators: Vec<Propagator>,
    /// Export the span of an unsampled request anyway when it failed (5xx or transport error).
    pub keep_errors: bool,
    /// Export the span of an unsampled request anyway when it took longer than this.
    pub keep_slower_than: Option<Duration>,
    pub otlp: OtlpConfig,
    pub zipkin: ZipkinConfig,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ZipkinConfig {
    /// Where JSON v2 spans are POSTed, e.g. `http://localhost:9411/api/v2/spans`.
    pub endpoint: http::Uri,
    /// Deadline for one export, retries included.
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OtlpConfig {
    pub protocol: OtlpProtocol,
    /// Full URL spans are sent to: for gRPC e.g. `http://127.0.0.1:4317`, for HTTP e.g.
    /// `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: http::Uri,
    /// Extra request headers / gRPC metadata (API keys), lowercase names.
    pub headers: Vec<(String, Secret)>,
    pub compression: Compression,
    /// Deadline for one export, retries included.
    pub timeout: Duration,
    /// PEM file of CA certificates to trust for an `https` endpoint (else the system roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate and key presented to the collector (mTLS), both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl Default for TracingConfig {
    /// The defaults of the OpenTelemetry SDK environment specification where one exists.
    fn default() -> Self {
        TracingConfig {
            exporter: ExporterKind::Otlp,
            sampling_ratio: 1.0,
            parent_based: true,
            traceresponse: true,
            trace_id_header: None,
            capture_request_headers: Vec::new(),
            capture_response_headers: Vec::new(),
            redact_query_keys: DEFAULT_REDACT_QUERY_KEYS
                .iter()
                .map(|k| k.to_string())
                .collect(),
            queue_size: 2048,
            batch_size: 512,
            batch_delay: Duration::from_secs(5),
            propagators: vec![Propagator::TraceContext],
            keep_errors: false,
            keep_slower_than: None,
            zipkin: ZipkinConfig {
                endpoint: http::Uri::from_static("http://localhost:9411/api/v2/spans"),
                timeout: Duration::from_secs(10),
            },
            otlp: OtlpConfig {
                protocol: OtlpProtocol::Grpc,
                endpoint: http::Uri::from_static("http://localhost:4317"),
                headers: Vec::new(),
                compression: Compression::None,
                timeout: Duration::from_secs(10),
                ca_file: None,
                client_cert: None,
                client_key: None,
            },
        }
    }
}

/// Query keys redacted by default (OpenTelemetry semantic conventions list these for
/// `url.query` / `url.full`).
pub const DEFAULT_REDACT_QUERY_KEYS: &[&str] = &[
    "awsaccesskeyid",
    "signature",
    "sig",
    "x-goog-signature",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "password",
    "secret",
];

/// `[stitching]`: attributing outbound calls that carry no trace context to the inbound
/// request that caused them (see `crate::stitch`). Every key is reloadable.
#[derive(Clone, Debug, PartialEq)]
pub struct StitchingConfig {
    /// Default true: without it, an app that forwards no header gets one trace per hop.
    pub enabled: bool,
    /// A learned match at or above this confidence becomes the parent; below, span links.
    pub min_confidence: f64,
    /// Most candidates scored per outbound call (newest first), 1-64.
    pub max_candidates: usize,
    /// Most inbound requests tracked at once; beyond, new ones are not tracked (counted).
    pub max_inflight: usize,
    /// Most inbound routes with a learned model (least recently used evicted).
    pub max_models: usize,
    /// How long an answered inbound request stays a candidate for calls made after it
    /// responded.
    pub linger: Duration,
    /// Request headers whose values are content evidence (hashed), lowercase.
    pub content_headers: Vec<http::HeaderName>,
    /// How often the log line naming routes whose app forwards no context is written;
    /// zero: never.
    pub report_interval: Duration,
}

impl Default for StitchingConfig {
    fn default() -> Self {
        StitchingConfig {
            enabled: true,
            min_confidence: 0.9,
            max_candidates: 64,
            max_inflight: 4096,
            max_models: 1024,
            linger: Duration::from_millis(50),
            content_headers: Vec::new(),
            report_interval: Duration::from_secs(60),
        }
    }
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
    /// Longest wait for the next piece of a response body; then the response is aborted.
    pub body_timeout: Duration,
    /// Pooled idle connections are closed after this long.
    pub idle_timeout: Duration,
    pub max_idle_per_endpoint: usize,
    /// An endpoint that refused a connection is skipped for this long.
    pub failure_backoff: Duration,
    /// TLS to the endpoints (`[upstreams.NAME.tls]`); plain TCP when `None`.
    pub tls: Option<UpstreamTls>,
    pub retry: RetryConfig,
}

/// When a failed attempt is tried again (on another pick of the balancer). Only requests that
/// are safe to repeat are retried: an idempotent method and no request body.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RetryConfig {
    /// Attempts after the first; 0 (the default) switches retries off.
    pub retries: u32,
    /// Response statuses retried, besides connection failures (refused, connect timeout).
    pub retry_on: Vec<u16>,
    /// Retries allowed per request over the budget window, e.g. 0.2 = 20% extra load.
    pub budget_ratio: Fraction,
    /// Retries always allowed per second, whatever the ratio (so a quiet upstream can retry).
    pub budget_min_per_second: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            retries: 0,
            retry_on: Vec::new(),
            budget_ratio: Fraction(0.2),
            budget_min_per_second: 10,
        }
    }
}

/// A number in 0.0..=1.0, comparable and hashable (by its bits) so configs holding one are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fraction(pub f64);

impl Eq for Fraction {}

impl std::hash::Hash for Fraction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

impl Config {
    /// Reads and validates a config file, then applies the `OTEL_*` environment variables
    /// over it (see `apply_otel_env`).
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::from_toml_str(&text).map_err(|errors| LoadError::Invalid {
            path: path.to_owned(),
            errors,
        })?;
        config
            .apply_otel_env(|k| std::env::var(k).ok())
            .map_err(|errors| LoadError::Env { errors })?;
        Ok(config)
    }

    /// Parses and validates TOML text, reporting every error found, not just the first.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigErrors> {
        validate::validate(text)
    }
}
