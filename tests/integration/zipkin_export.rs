//! `exporter = "zipkin"` against a Zipkin-like receiver in the test: every JSON span is
//! checked against Zipkin's v2 span model (zipkin2-api.yaml: required fields, types, formats
//! and documented constraints), the mapping is checked field by field, 64-bit ids are sent as
//! 16 hex digits, and retryable answers are retried while others are counted as failed.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use http::Request;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::{Map, Value};

const T64: &str = "463ac35c9f6413ad";
const T128: &str = "80f198ee56343ba864fe8b2a57d3eff7";
const SPAN: &str = "e457b5a2e4d86bd1";

#[derive(Default)]
struct Collected {
    spans: Mutex<Vec<Value>>,
    /// Answers to give before accepting, in order (e.g. 503 then 400).
    failures: Mutex<Vec<u16>>,
    requests: AtomicUsize,
}

/// A Zipkin collector: `POST /api/v2/spans` with a JSON array, validated; 202 when accepted.
async fn zipkin_receiver() -> (TestServer, Arc<Collected>) {
    let collected = Arc::new(Collected::default());
    let c = collected.clone();
    let server = serve(move |req: Request<Incoming>| {
        let c = c.clone();
        async move {
            c.requests.fetch_add(1, Ordering::SeqCst);
            assert_eq!(req.method(), "POST");
            assert_eq!(req.uri().path(), "/api/v2/spans");
            assert_eq!(req.headers()["content-type"], "application/json");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let failure = {
                let mut failures = c.failures.lock().unwrap();
                (!failures.is_empty()).then(|| failures.remove(0))
            };
            if let Some(status) = failure {
                return text(status, "try again");
            }
            let spans: Value = serde_json::from_slice(&body).expect("the body is JSON");
            let spans = spans.as_array().expect("a JSON array of spans").clone();
            for span in &spans {
                if let Err(e) = check_v2_span(span) {
                    panic!("not a Zipkin v2 span ({e}): {span:#}");
                }
            }
            c.spans.lock().unwrap().extend(spans);
            text(202, "")
        }
    })
    .await;
    (server, collected)
}

fn lower_hex(s: &str, lengths: &[usize]) -> bool {
    lengths.contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// zipkin2-api.yaml, `Span`, `Endpoint` and `Annotation`. Unknown fields are refused too.
fn check_v2_span(span: &Value) -> Result<(), String> {
    let span = span.as_object().ok_or("not an object")?;
    let str_field = |k: &str| {
        span.get(k)
            .map(|v| v.as_str().ok_or(format!("{k} is not a string")))
    };
    match str_field("traceId") {
        Some(Ok(id)) if lower_hex(id, &[16, 32]) => {}
        _ => return Err("traceId must be 16 or 32 lowercase hex".into()),
    }
    match str_field("id") {
        Some(Ok(id)) if lower_hex(id, &[16]) => {}
        _ => return Err("id must be 16 lowercase hex".into()),
    }
    if let Some(parent) = str_field("parentId") {
        if !lower_hex(parent?, &[16]) {
            return Err("parentId must be 16 lowercase hex".into());
        }
    }
    if let Some(kind) = str_field("kind") {
        if !["CLIENT", "SERVER", "PRODUCER", "CONSUMER"].contains(&kind?) {
            return Err("kind is not one of the enum".into());
        }
    }
    if let Some(name) = str_field("name") {
        name?;
    }
    for key in ["timestamp", "duration"] {
        if let Some(v) = span.get(key) {
            let n = v
                .as_u64()
                .ok_or(format!("{key} is not a non-negative integer"))?;
            if n > i64::MAX as u64 {
                return Err(format!("{key} does not fit int64"));
            }
        }
    }
    // "duration ... minimum: 1" (microseconds).
    if span.get("duration").and_then(Value::as_u64) == Some(0) {
        return Err("duration must be at least 1".into());
    }
    for key in ["debug", "shared"] {
        if span.get(key).is_some_and(|v| !v.is_boolean()) {
            return Err(format!("{key} is not a boolean"));
        }
    }
    for key in ["localEndpoint", "remoteEndpoint"] {
        if let Some(e) = span.get(key) {
            check_endpoint(e).map_err(|e| format!("{key}: {e}"))?;
        }
    }
    if let Some(annotations) = span.get("annotations") {
        for a in annotations
            .as_array()
            .ok_or("annotations is not an array")?
        {
            let a = a.as_object().ok_or("annotation is not an object")?;
            a.get("timestamp")
                .and_then(Value::as_u64)
                .ok_or("annotation timestamp")?;
            a.get("value")
                .and_then(Value::as_str)
                .ok_or("annotation value")?;
            if a.len() != 2 {
                return Err("annotation has unknown fields".into());
            }
        }
    }
    if let Some(tags) = span.get("tags") {
        let tags = tags.as_object().ok_or("tags is not an object")?;
        if let Some((k, _)) = tags.iter().find(|(_, v)| !v.is_string()) {
            return Err(format!("tag {k} is not a string"));
        }
    }
    let known = [
        "traceId",
        "id",
        "parentId",
        "kind",
        "name",
        "timestamp",
        "duration",
        "debug",
        "shared",
        "localEndpoint",
        "remoteEndpoint",
        "annotations",
        "tags",
    ];
    if let Some(k) = span.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("unknown field {k}"));
    }
    Ok(())
}

fn check_endpoint(e: &Value) -> Result<(), String> {
    let e: &Map<String, Value> = e.as_object().ok_or("not an object")?;
    if let Some(name) = e.get("serviceName") {
        let name = name.as_str().ok_or("serviceName is not a string")?;
        if name != name.to_lowercase() {
            return Err("serviceName is not lowercase".into());
        }
    }
    if let Some(ip) = e.get("ipv4") {
        ip.as_str()
            .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok())
            .ok_or("ipv4 is not an IPv4 address")?;
    }
    if let Some(ip) = e.get("ipv6") {
        ip.as_str()
            .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
            .ok_or("ipv6 is not an IPv6 address")?;
    }
    if let Some(port) = e.get("port") {
        port.as_u64()
            .filter(|p| (1..=65535).contains(p))
            .ok_or("port is not 1-65535")?;
    }
    if let Some(k) = e
        .keys()
        .find(|k| !["serviceName", "ipv4", "ipv6", "port"].contains(&k.as_str()))
    {
        return Err(format!("unknown field {k}"));
    }
    Ok(())
}

fn config(zipkin: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"
[service]
name = "Zipkin-Test"
[admin]
bind = "127.0.0.1:0"
[tracing]
exporter = "zipkin"
batch_delay = "10ms"
propagators = ["b3", "tracecontext"]
[tracing.zipkin]
endpoint = "http://{zipkin}/api/v2/spans"
timeout = "10s"
[[listeners]]
name = "edge"
bind = "127.0.0.1:0"
role = "gateway"
[[routes]]
name = "api"
listener = "edge"
upstream = "app"
[upstreams.app]
endpoints = ["{upstream}"]
"#
    )
}

async fn wait_spans(c: &Collected, n: usize) -> Vec<Value> {
    wait_until(
        &format!("{n} zipkin spans"),
        Duration::from_secs(20),
        || async { c.spans.lock().unwrap().len() >= n },
    )
    .await;
    c.spans.lock().unwrap().clone()
}

#[tokio::test]
async fn spans_follow_the_zipkin_v2_model_and_retries_are_accounted() {
    let (zipkin, collected) = zipkin_receiver().await;
    let upstream = echo_server("app").await;
    let proxy = start_proxy(&config(zipkin.addr, upstream.addr)).await;
    let addr = proxy.listener_addr("edge").unwrap();
    let stats = proxy.span_sink().stats().clone();

    // One 503 first: retried, then delivered.
    collected.failures.lock().unwrap().push(503);
    let req = Request::get(format!("http://{addr}/orders?id=7"))
        .header("b3", format!("{T64}-{SPAN}-1"))
        .header("user-agent", "zipkin-test")
        .body(full(""))
        .unwrap();
    let response = http1_client().request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    body_string(response).await;
    let spans = wait_spans(&collected, 2).await;
    assert_eq!(collected.requests.load(Ordering::SeqCst), 2, "one retry");

    let server = spans.iter().find(|s| s["kind"] == "SERVER").unwrap();
    let client = spans.iter().find(|s| s["kind"] == "CLIENT").unwrap();
    // A 64-bit trace id is sent in its 16-digit form.
    assert_eq!(server["traceId"], T64);
    assert_eq!(client["traceId"], T64);
    assert_eq!(server["parentId"], SPAN);
    assert_eq!(client["parentId"], server["id"]);
    assert_eq!(server["name"], "GET api");
    assert_eq!(server["localEndpoint"]["serviceName"], "zipkin-test");
    assert_eq!(server["localEndpoint"]["ipv4"], "127.0.0.1");
    assert_eq!(server["localEndpoint"]["port"], addr.port());
    assert_eq!(server["remoteEndpoint"]["ipv4"], "127.0.0.1");
    assert_eq!(client["remoteEndpoint"]["ipv4"], "127.0.0.1");
    assert_eq!(client["remoteEndpoint"]["port"], upstream.addr.port());
    assert!(server.get("shared").is_none());
    assert!(server.get("debug").is_none());
    let tags = &server["tags"];
    assert_eq!(tags["http.request.method"], "GET");
    assert_eq!(tags["http.response.status_code"], "200");
    assert_eq!(tags["url.path"], "/orders");
    assert_eq!(tags["url.query"], "id=7");
    assert_eq!(tags["user_agent.original"], "zipkin-test");
    assert_eq!(tags["otel.scope.name"], "hoptrace");
    assert!(tags.get("error").is_none());
    let annotations: Vec<&str> = client["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["value"].as_str().unwrap())
        .collect();
    assert!(
        annotations.contains(&"response headers received"),
        "{annotations:?}"
    );
    assert!(
        annotations
            .iter()
            .any(|a| a.starts_with("\"connection acquired\":{")),
        "{annotations:?}"
    );
    let (start, duration) = (
        server["timestamp"].as_u64().unwrap(),
        server["duration"].as_u64().unwrap(),
    );
    let client_start = client["timestamp"].as_u64().unwrap();
    assert!(client_start >= start && client_start <= start + duration);
    wait_until("exported counted", Duration::from_secs(20), || {
        let stats = stats.clone();
        async move { stats.snapshot()[1] == 2 }
    })
    .await;

    // A 128-bit id keeps 32 digits; a non-retryable 400 loses the batch and counts it.
    collected.failures.lock().unwrap().push(400);
    let req = Request::get(format!("http://{addr}/lost"))
        .header("b3", format!("{T128}-{SPAN}-1"))
        .body(full(""))
        .unwrap();
    body_string(http1_client().request(req).await.unwrap()).await;
    wait_until("failed counted", Duration::from_secs(20), || {
        let stats = stats.clone();
        async move { stats.snapshot()[3] == 2 }
    })
    .await;
    let req = Request::get(format!("http://{addr}/kept"))
        .header("b3", format!("{T128}-{SPAN}-d"))
        .body(full(""))
        .unwrap();
    body_string(http1_client().request(req).await.unwrap()).await;
    let spans = wait_spans(&collected, 4).await;
    assert!(
        spans[2..].iter().all(|s| s["traceId"] == T128),
        "{spans:#?}"
    );
    let kept = spans[2..].iter().find(|s| s["kind"] == "SERVER").unwrap();
    assert_eq!(kept["tags"]["url.path"], "/kept");
    // B3 debug maps to Zipkin's debug flag.
    assert!(spans[2..].iter().all(|s| s["debug"] == true), "{spans:#?}");
    proxy.shutdown().await;
}
