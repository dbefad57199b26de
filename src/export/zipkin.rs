//! `exporter = "zipkin"`: spans as Zipkin v2 JSON (<https://zipkin.io/zipkin-api/#/default/post_spans>),
//! POSTed to `[tracing.zipkin] endpoint` with the hyper client. Retryable failures (connection
//! errors, 429, 502, 503, 504) are retried with capped exponential back-off until `timeout`.
//!
//! Mapping (the OpenTelemetry "Zipkin exporter" spec where it speaks): `traceId` 16 hex digits
//! when its high 64 bits are zero (a 64-bit id from B3/Jaeger, as Zipkin itself normalizes),
//! else 32; `kind` SERVER/CLIENT; `timestamp`/`duration` in microseconds (duration at least 1);
//! `localEndpoint` this service and the listener's address; `remoteEndpoint` the caller
//! (SERVER) or the upstream endpoint (CLIENT); every attribute as a string tag (arrays as JSON
//! arrays), `otel.status_code`/`error` for errors, `otel.scope.*`; span events as annotations.
//! `debug` is set when the caller asked for debug sampling (B3 `d`, Jaeger flag 0x02).
//! `shared` is never set: hoptrace gives every span its own id. Links have no Zipkin
//! equivalent and are not sent.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::Value as OtelValue;
use opentelemetry::trace::Status;
use opentelemetry_sdk::trace::SpanData;
use serde_json::{Map, Value, json};

use super::ExporterError;
use crate::config::ZipkinConfig;
use crate::trace::span::{SpanKind, SpanRecord};

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The Zipkin HTTP exporter.
#[derive(Debug)]
pub struct Exporter {
    client: HttpsClient,
    endpoint: http::Uri,
    timeout: Duration,
}

pub fn build(config: &ZipkinConfig) -> Result<Exporter, ExporterError> {
    let connector = super::otlp::tls_connector(None, None)?;
    Ok(Exporter {
        client: Client::builder(TokioExecutor::new()).build(connector),
        endpoint: config.endpoint.clone(),
        timeout: config.timeout,
    })
}

/// Why an export failed (after retries).
#[derive(Debug, thiserror::Error)]
pub enum ZipkinError {
    #[error("zipkin {endpoint}: HTTP {status}: {body}")]
    Status {
        endpoint: http::Uri,
        status: StatusCode,
        body: String,
    },
    #[error("zipkin {endpoint}: {message}")]
    Transport {
        endpoint: http::Uri,
        message: String,
    },
    #[error("zipkin {endpoint}: no success within the {timeout:?} timeout: {last}")]
    Timeout {
        endpoint: http::Uri,
        timeout: Duration,
        last: String,
    },
}

impl Exporter {
    /// Sends one batch (a JSON array of spans).
    pub async fn export(&self, spans: &[Value]) -> Result<(), ZipkinError> {
        let body = Bytes::from(serde_json::to_vec(spans).unwrap_or_default());
        let deadline = Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(100);
        loop {
            let last = match self.send(body.clone(), deadline).await {
                Ok(()) => return Ok(()),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Retryable(why)) => why,
            };
            let now = Instant::now();
            if now + backoff >= deadline {
                return Err(ZipkinError::Timeout {
                    endpoint: self.endpoint.clone(),
                    timeout: self.timeout,
                    last,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn send(&self, body: Bytes, deadline: Instant) -> Result<(), Attempt> {
        let request = Request::post(self.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| {
                Attempt::Final(ZipkinError::Transport {
                    endpoint: self.endpoint.clone(),
                    message: e.to_string(),
                })
            })?;
        let left = deadline.saturating_duration_since(Instant::now());
        let response = match tokio::time::timeout(left, self.client.request(request)).await {
            Err(_) => return Err(Attempt::Retryable("request timed out".to_owned())),
            Ok(Err(e)) => return Err(Attempt::Retryable(format!("{e}"))),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = match tokio::time::timeout(left, response.into_body().collect()).await {
            Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes())
                .chars()
                .take(200)
                .collect(),
            _ => String::new(),
        };
        // The OTLP exporter spec's retryable statuses, applied to Zipkin as well.
        let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504);
        if retryable {
            Err(Attempt::Retryable(format!("HTTP {status}: {body}")))
        } else {
            Err(Attempt::Final(ZipkinError::Status {
                endpoint: self.endpoint.clone(),
                status,
                body,
            }))
        }
    }
}

enum Attempt {
    Retryable(String),
    Final(ZipkinError),
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// One span in Zipkin's v2 model. `data` is `record` converted for OpenTelemetry (its name,
/// attributes, status and events are reused, so both exporters say the same).
pub fn to_json(record: &SpanRecord, data: &SpanData, service: &str) -> Value {
    let trace_id = record.trace_id.to_hex();
    // Zipkin normalizes a 128-bit id whose high half is zero to 64 bits; do so here.
    let trace_id = match trace_id.split_at(16) {
        (high, low) if high.iter().all(|&b| b == b'0') => low,
        _ => &trace_id[..],
    };
    let mut span = Map::new();
    span.insert(
        "traceId".into(),
        String::from_utf8_lossy(trace_id).into_owned().into(),
    );
    span.insert("id".into(), record.span_id.to_string().into());
    if let Some(parent) = record.parent_span_id {
        span.insert("parentId".into(), parent.to_string().into());
    }
    let kind = match record.kind {
        SpanKind::Server => "SERVER",
        SpanKind::Client => "CLIENT",
    };
    span.insert("kind".into(), kind.into());
    span.insert("name".into(), data.name.to_string().into());
    span.insert("timestamp".into(), micros(record.start).into());
    let duration = u64::try_from(record.duration.as_micros()).unwrap_or(u64::MAX);
    span.insert("duration".into(), duration.max(1).into());
    if record.debug {
        // B3 / Jaeger debug: "store this span even if it overrides sampling policy".
        span.insert("debug".into(), true.into());
    }
    let (local, remote) = match record.kind {
        SpanKind::Server => (
            endpoint(
                Some(service),
                Some(record.local_addr.ip()),
                Some(record.local_addr.port()),
            ),
            Some(socket(record.client_addr)),
        ),
        // The listener's port is not this connection's source port: only the address.
        SpanKind::Client => (
            endpoint(Some(service), Some(record.local_addr.ip()), None),
            record.peer.as_ref().map(|peer| {
                match peer.host().trim_matches(['[', ']']).parse::<IpAddr>() {
                    Ok(ip) => endpoint(None, Some(ip), peer.port_u16()),
                    Err(_) => endpoint(Some(peer.host()), None, peer.port_u16()),
                }
            }),
        ),
    };
    span.insert("localEndpoint".into(), local);
    if let Some(remote) = remote {
        span.insert("remoteEndpoint".into(), remote);
    }
    let annotations: Vec<Value> = data
        .events
        .iter()
        .map(|e| {
            let value = if e.attributes.is_empty() {
                e.name.to_string()
            } else {
                let attrs: Map<String, Value> = e
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.to_string(), tag_value(&kv.value).into()))
                    .collect();
                // `"name":{...}`, the name quoted as a JSON string.
                format!("{}:{}", Value::from(e.name.as_ref()), Value::Object(attrs))
            };
            json!({ "timestamp": micros(e.timestamp), "value": value })
        })
        .collect();
    if !annotations.is_empty() {
        span.insert("annotations".into(), annotations.into());
    }
    span.insert("tags".into(), Value::Object(tags(data)));
    Value::Object(span)
}

fn socket(addr: SocketAddr) -> Value {
    endpoint(None, Some(addr.ip()), Some(addr.port()))
}

/// A Zipkin endpoint: `serviceName` lowercase (Zipkin's convention), `ipv4` or `ipv6`, `port`.
fn endpoint(service: Option<&str>, ip: Option<IpAddr>, port: Option<u16>) -> Value {
    let mut e = Map::new();
    if let Some(service) = service {
        e.insert("serviceName".into(), service.to_lowercase().into());
    }
    match ip.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => {
            e.insert("ipv4".into(), v4.to_string().into());
        }
        Some(IpAddr::V6(v6)) => {
            e.insert("ipv6".into(), v6.to_string().into());
        }
        None => {}
    }
    if let Some(port) = port.filter(|&p| p != 0) {
        e.insert("port".into(), port.into());
    }
    Value::Object(e)
}

/// Every attribute as a string; status and scope as the OpenTelemetry Zipkin mapping says.
fn tags(data: &SpanData) -> Map<String, Value> {
    let mut tags: Map<String, Value> = data
        .attributes
        .iter()
        .map(|kv| (kv.key.to_string(), tag_value(&kv.value).into()))
        .collect();
    if let Status::Error { description } = &data.status {
        tags.insert("otel.status_code".into(), "ERROR".into());
        let message = if description.is_empty() {
            tags.get("http.response.status_code")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_owned()
        } else {
            description.to_string()
        };
        tags.insert("error".into(), message.into());
    }
    tags.insert(
        "otel.scope.name".into(),
        data.instrumentation_scope.name().to_string().into(),
    );
    if let Some(version) = data.instrumentation_scope.version() {
        tags.insert("otel.scope.version".into(), version.to_string().into());
    }
    tags
}

/// OpenTelemetry Zipkin spec: scalars as their string form, arrays as a JSON array.
fn tag_value(value: &OtelValue) -> String {
    match value {
        OtelValue::Array(opentelemetry::Array::String(items)) => {
            Value::from(items.iter().map(|s| s.as_str()).collect::<Vec<_>>()).to_string()
        }
        OtelValue::Array(opentelemetry::Array::I64(items)) => {
            Value::from(items.clone()).to_string()
        }
        OtelValue::Array(opentelemetry::Array::F64(items)) => {
            Value::from(items.clone()).to_string()
        }
        OtelValue::Array(opentelemetry::Array::Bool(items)) => {
            Value::from(items.clone()).to_string()
        }
        other => other.as_str().into_owned(),
    }
}
