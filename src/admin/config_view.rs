//! `GET /config`: the effective config (file, defaults and `OTEL_*` variables applied) as JSON
//! in the TOML file's shape and key names, with every secret masked.
//!
//! A view built here rather than `Serialize` on the config types: how the admin endpoint
//! presents a config (masking, durations as "250ms") is not the config module's concern.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::config::{
    Balance, ClientAuth, Compression, Config, ExporterKind, HostMatch, ListenerConfig, ListenerTls,
    OtlpConfig, OtlpProtocol, PemFile, Propagator, Protocol, Role, RouteConfig, StitchingConfig,
    TraceIncoming, TracingConfig, UpstreamConfig, UpstreamTls,
};
use crate::reload::ReloadStatus;

/// What replaces a secret (OTLP header values, the reload token): the key stays, so an operator can see that one
/// is set.
pub const MASK: &str = "****";

/// The `/config` body: `{"generation", "config", "reload"}`; `reload` is null when the process
/// was not started from a file.
pub fn body(generation: u64, config: &Config, reload: Option<ReloadStatus>) -> Value {
    json!({
        "generation": generation,
        "config": view(config),
        "reload": reload,
    })
}

/// `config` in the TOML's shape. Keys the file cannot set but the environment can
/// (`service.resource_attributes`, `tracing.parent_based`) are shown too: this is what serves.
pub fn view(config: &Config) -> Value {
    let upstreams: Map<String, Value> = config
        .upstreams
        .iter()
        .map(|(name, u)| (name.clone(), upstream(u)))
        .collect();
    json!({
        "service": {
            "name": config.service.name,
            "resource_attributes": config.service.resource_attributes
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect::<Map<_, _>>(),
        },
        "admin": {
            "bind": config.admin.bind.to_string(),
            "reload_token": config.admin.reload_token.as_ref().map(|_| MASK),
        },
        "shutdown": { "grace": duration(config.shutdown.grace) },
        "listeners": config.listeners.iter().map(listener).collect::<Vec<_>>(),
        "routes": config.routes.iter().map(route).collect::<Vec<_>>(),
        "upstreams": upstreams,
        "tracing": tracing(&config.tracing),
        "stitching": stitching(&config.stitching),
    })
}

fn stitching(s: &StitchingConfig) -> Value {
    json!({
        "enabled": s.enabled,
        "min_confidence": s.min_confidence,
        "max_candidates": s.max_candidates,
        "max_inflight": s.max_inflight,
        "max_models": s.max_models,
        "linger": duration(s.linger),
        "content_headers": names(&s.content_headers),
        "report_interval": duration(s.report_interval),
    })
}

fn listener(l: &ListenerConfig) -> Value {
    let role = match l.role {
        Role::Inbound => "inbound",
        Role::Outbound => "outbound",
        Role::Gateway => "gateway",
    };
    json!({
        "name": l.name,
        "bind": l.bind.to_string(),
        "role": role,
        "header_read_timeout": duration(l.header_read_timeout),
        "max_header_bytes": l.max_header_bytes,
        "tls": l.tls.as_ref().map(listener_tls),
        "trace": {
            "incoming": match l.trace_incoming {
                TraceIncoming::Continue => "continue",
                TraceIncoming::Restart => "restart",
            },
        },
        "max_headers": l.max_headers,
        "max_connections": l.max_connections,
    })
}

/// Paths only: the key file's contents are never read for display.
fn listener_tls(t: &ListenerTls) -> Value {
    let client_auth = match t.client_auth {
        ClientAuth::None => "none",
        ClientAuth::Optional => "optional",
        ClientAuth::Required => "required",
    };
    json!({
        "cert": t.cert.display().to_string(),
        "key": t.key.display().to_string(),
        "client_ca": t.client_ca.as_ref().map(|p| p.display().to_string()),
        "client_auth": client_auth,
    })
}

fn upstream_tls(t: &UpstreamTls) -> Value {
    let path = |f: &PemFile| f.path.display().to_string();
    let identity = t.client_identity.as_ref();
    json!({
        "enabled": true,
        "ca": t.ca.as_ref().map(path),
        "server_name": t.server_name,
        "client_cert": identity.map(|i| path(&i.cert)),
        "client_key": identity.map(|i| path(&i.key)),
    })
}

fn route(r: &RouteConfig) -> Value {
    let host = r.host.as_ref().map(|h| match h {
        HostMatch::Exact(host) => host.clone(),
        // Stored as ".example.com"; written as "*.example.com".
        HostMatch::Suffix(suffix) => format!("*{suffix}"),
    });
    let headers: Map<String, Value> = r
        .headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes());
            (name.as_str().to_owned(), Value::from(value.as_ref()))
        })
        .collect();
    // The file leaves `methods` out for "any method" (`[]` is an error there): null here.
    let methods = (!r.methods.is_empty()).then(|| {
        r.methods
            .iter()
            .map(http::Method::as_str)
            .collect::<Vec<_>>()
    });
    json!({
        "name": r.name,
        "listener": r.listener,
        "host": host,
        "path_prefix": r.path_prefix,
        "methods": methods,
        "headers": headers,
        "upstream": r.upstream,
        "tracing": r.tracing,
        "sampling_ratio": r.sampling_ratio,
        "max_request_body": r.max_request_body,
    })
}

fn upstream(u: &UpstreamConfig) -> Value {
    let protocol = match u.protocol {
        Protocol::Http1 => "http1",
        Protocol::Http2 => "http2",
    };
    let balance = match u.balance {
        Balance::RoundRobin => "round_robin",
        Balance::P2c => "p2c",
    };
    json!({
        "endpoints": u.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "protocol": protocol,
        "balance": balance,
        "connect_timeout": duration(u.connect_timeout),
        "request_timeout": duration(u.request_timeout),
        "body_timeout": duration(u.body_timeout),
        "idle_timeout": duration(u.idle_timeout),
        "max_idle_per_endpoint": u.max_idle_per_endpoint,
        "failure_backoff": duration(u.failure_backoff),
        "tls": u.tls.as_ref().map(upstream_tls),
        "retries": u.retry.retries,
        "retry_on": u.retry.retry_on,
        "retry_budget": u.retry.budget_ratio.0,
        "retry_budget_min_per_second": u.retry.budget_min_per_second,
    })
}

fn tracing(t: &TracingConfig) -> Value {
    let exporter = match t.exporter {
        ExporterKind::Otlp => "otlp",
        ExporterKind::Zipkin => "zipkin",
        ExporterKind::Stdout => "stdout",
        ExporterKind::None => "none",
    };
    json!({
        "exporter": exporter,
        "sampling_ratio": t.sampling_ratio,
        "parent_based": t.parent_based,
        "traceresponse": t.traceresponse,
        "trace_id_header": t.trace_id_header.as_ref().map(http::HeaderName::as_str),
        "capture_request_headers": names(&t.capture_request_headers),
        "capture_response_headers": names(&t.capture_response_headers),
        "redact_query_keys": t.redact_query_keys,
        "queue_size": t.queue_size,
        "batch_size": t.batch_size,
        "batch_delay": duration(t.batch_delay),
        "propagators": t.propagators.iter().map(|p| match p {
            Propagator::TraceContext => "tracecontext",
            Propagator::B3 => "b3",
            Propagator::B3Multi => "b3multi",
            Propagator::Jaeger => "jaeger",
            Propagator::XRay => "xray",
        }).collect::<Vec<_>>(),
        "keep_errors": t.keep_errors,
        "keep_slower_than": t.keep_slower_than.map(duration),
        "otlp": otlp(&t.otlp),
        "zipkin": {
            "endpoint": t.zipkin.endpoint.to_string(),
            "timeout": duration(t.zipkin.timeout),
        },
    })
}

fn otlp(o: &OtlpConfig) -> Value {
    let protocol = match o.protocol {
        OtlpProtocol::Grpc => "grpc",
        OtlpProtocol::HttpProtobuf => "http/protobuf",
    };
    let compression = match o.compression {
        Compression::None => "none",
        Compression::Gzip => "gzip",
    };
    // Header values are API keys: only the names are shown.
    let headers: Map<String, Value> = o
        .headers
        .iter()
        .map(|(name, _secret)| (name.clone(), Value::from(MASK)))
        .collect();
    json!({
        "protocol": protocol,
        "endpoint": o.endpoint.to_string(),
        "headers": headers,
        "compression": compression,
        "timeout": duration(o.timeout),
        "ca_file": o.ca_file.as_ref().map(|p| p.display().to_string()),
        "client_cert": o.client_cert.as_ref().map(|p| p.display().to_string()),
        "client_key": o.client_key.as_ref().map(|p| p.display().to_string()),
    })
}

fn names(list: &[http::HeaderName]) -> Vec<&str> {
    list.iter().map(http::HeaderName::as_str).collect()
}

/// As the file writes it: "1s", "250ms", "1m 30s".
fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests;
