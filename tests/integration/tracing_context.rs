//! Trace context at one hop: continue, restart, sampling, failure spans, response headers,
//! header capture; checked on what the upstream received and what the receiver decoded.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::otlp::{ReceivedSpan, Receiver};
use common::*;
use http::Request;
use hyper::body::Incoming;

/// An upstream that remembers the headers of every request it got.
async fn recording_upstream() -> (TestServer, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let seen: Arc<Mutex<Vec<http::HeaderMap>>> = Arc::default();
    let s = seen.clone();
    let server = serve(move |req: Request<Incoming>| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(req.headers().clone());
            http::Response::builder()
                .header("x-app-version", "7")
                .body(full("ok"))
                .unwrap()
        }
    })
    .await;
    (server, seen)
}

fn config(
    receiver: &Receiver,
    role: &str,
    upstream: SocketAddr,
    tracing: &str,
    route: &str,
) -> String {
    format!(
        r#"
[service]
name = "ctx-test"
[admin]
bind = "127.0.0.1:0"
[tracing]
batch_delay = "20ms"
{tracing}
[tracing.otlp]
endpoint = "{grpc}"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "{role}"
[[routes]]
listener = "main"
path_prefix = "/"
upstream = "app"
{route}
[[routes]]
listener = "main"
path_prefix = "/healthz"
tracing = false
upstream = "app"
[upstreams.app]
endpoints = ["{upstream}"]
request_timeout = "300ms"
"#,
        grpc = receiver.grpc_url()
    )
}

async fn send(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> http::Response<Incoming> {
    let mut request = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    http1_client()
        .request(request.body(full("")).unwrap())
        .await
        .unwrap()
}

fn only<'a>(spans: &'a [ReceivedSpan], trace_id: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    assert_eq!(found.len(), 1, "{trace_id}: {spans:#?}");
    found[0]
}

const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test]
async fn a_valid_parent_is_continued_with_its_tracestate() {
    let receiver = Receiver::start().await;
    let (upstream, seen) = recording_upstream().await;
    let proxy = start_proxy(&config(&receiver, "inbound", upstream.addr, "", "")).await;
    let addr = proxy.listener_addr("main").unwrap();

    let response = send(
        addr,
        "/a",
        &[
            ("traceparent", PARENT),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("tracestate", "rojo=00f067aa0ba902b7"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let spans = receiver.wait_for_spans(1).await;
    let span = only(&spans, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(span.parent_span_id, "b7ad6b7169203331");
    assert_eq!(span.kind, 2);
    let forwarded = seen.lock().unwrap()[0].clone();
    assert_eq!(
        forwarded["traceparent"],
        format!("00-0af7651916cd43dd8448eb211c80319c-{}-01", span.span_id).as_str()
    );
    // Several tracestate lines are combined in order and passed on unchanged.
    assert_eq!(
        forwarded["tracestate"],
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    );
    assert_eq!(forwarded.get_all("traceparent").iter().count(), 1);
    assert_eq!(
        response.headers()["traceresponse"],
        format!("00-0af7651916cd43dd8448eb211c80319c-{}-01", span.span_id).as_str()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn missing_or_invalid_context_starts_a_new_trace_without_tracestate() {
    let receiver = Receiver::start().await;
    let (upstream, seen) = recording_upstream().await;
    let proxy = start_proxy(&config(
        &receiver,
        "inbound",
        upstream.addr,
        "trace_id_header = \"x-trace-id\"",
        "",
    ))
    .await;
    let addr = proxy.listener_addr("main").unwrap();

    let invalid = [
        vec![(
            "traceparent",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        )],
        vec![(
            "traceparent",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        )],
        vec![(
            "traceparent",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )],
        vec![("traceparent", PARENT), ("traceparent", PARENT)],
        vec![],
    ];
    let mut trace_ids = Vec::new();
    for headers in &invalid {
        let mut with_state = headers.clone();
        with_state.push(("tracestate", "congo=t61rcWkgMzE"));
        let response = send(addr, "/b", &with_state).await;
        trace_ids.push(
            response.headers()["x-trace-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    let spans = receiver.wait_for_spans(invalid.len()).await;
    let forwarded = seen.lock().unwrap().clone();
    for (i, trace_id) in trace_ids.iter().enumerate() {
        assert_ne!(trace_id, "0af7651916cd43dd8448eb211c80319c", "case {i}");
        let span = only(&spans, trace_id);
        assert_eq!(span.parent_span_id, "", "case {i}: a new root");
        assert!(
            forwarded[i]["traceparent"]
                .to_str()
                .unwrap()
                .starts_with(&format!("00-{trace_id}-")),
            "case {i}"
        );
        assert!(
            forwarded[i].get("tracestate").is_none(),
            "case {i}: tracestate dropped"
        );
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_unsampled_parent_exports_nothing_and_forwards_flag_00() {
    let receiver = Receiver::start().await;
    let (upstream, seen) = recording_upstream().await;
    let proxy = start_proxy(&config(&receiver, "gateway", upstream.addr, "", "")).await;
    let addr = proxy.listener_addr("main").unwrap();

    let unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
    let response = send(addr, "/u", &[("traceparent", unsampled)]).await;
    assert_eq!(response.status(), 200);
    let sent = seen.lock().unwrap()[0]["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        sent.starts_with("00-11111111111111111111111111111111-"),
        "{sent}"
    );
    assert!(sent.ends_with("-00"), "{sent}");
    assert!(
        !sent.contains("2222222222222222"),
        "parent-id is this hop's span: {sent}"
    );
    assert!(
        response.headers()["traceresponse"]
            .to_str()
            .unwrap()
            .ends_with("-00")
    );

    // A sampled request after it: once its spans (SERVER + CLIENT) arrive, the unsampled
    // request's would have too (one queue, in order).
    send(addr, "/s", &[("traceparent", PARENT)]).await;
    let spans = receiver.wait_for_spans(2).await;
    assert!(
        spans
            .iter()
            .all(|s| s.trace_id == "0af7651916cd43dd8448eb211c80319c"),
        "{spans:#?}"
    );
    // Gateway: SERVER span with the CLIENT span as its child.
    let server = spans.iter().find(|s| s.kind == 2).unwrap();
    let client = spans.iter().find(|s| s.kind == 3).unwrap();
    assert_eq!(server.parent_span_id, "b7ad6b7169203331");
    assert_eq!(client.parent_span_id, server.span_id);
    let sent = seen.lock().unwrap()[1]["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        sent,
        format!("00-0af7651916cd43dd8448eb211c80319c-{}-01", client.span_id)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn sampling_ratio_zero_and_untraced_routes() {
    let receiver = Receiver::start().await;
    let (upstream, seen) = recording_upstream().await;
    let proxy = start_proxy(&config(
        &receiver,
        "inbound",
        upstream.addr,
        "sampling_ratio = 0.0",
        "",
    ))
    .await;
    let addr = proxy.listener_addr("main").unwrap();
    let response = send(addr, "/new-root", &[]).await;
    // Not sampled: still a context for the upstream, flagged 00.
    assert!(
        response.headers()["traceresponse"]
            .to_str()
            .unwrap()
            .ends_with("-00")
    );
    assert!(
        seen.lock().unwrap()[0]["traceparent"]
            .to_str()
            .unwrap()
            .ends_with("-00")
    );
    // A sampled parent is still followed (parent-based).
    send(addr, "/child", &[("traceparent", PARENT)]).await;
    // The health-check route has tracing off: headers pass untouched, no span, no traceresponse.
    let response = send(addr, "/healthz", &[("traceparent", PARENT)]).await;
    assert!(response.headers().get("traceresponse").is_none());
    assert_eq!(seen.lock().unwrap()[2]["traceparent"], PARENT);
    let spans = receiver.wait_for_spans(1).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].attr_str("url.path"), Some("/child"));
    proxy.shutdown().await;

    // A route may override the ratio.
    let receiver = Receiver::start().await;
    let proxy = start_proxy(&config(
        &receiver,
        "inbound",
        upstream.addr,
        "sampling_ratio = 1.0",
        "sampling_ratio = 0.0",
    ))
    .await;
    let addr = proxy.listener_addr("main").unwrap();
    let response = send(addr, "/x", &[]).await;
    assert!(
        response.headers()["traceresponse"]
            .to_str()
            .unwrap()
            .ends_with("-00")
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn failures_record_spans_with_error_type() {
    let receiver = Receiver::start().await;
    let dead = refusing_addr();
    let gate = Gate::default();
    let g = gate.clone();
    let slow = serve(move |_req| {
        let g = g.clone();
        async move {
            g.notified().await;
            text(200, "late")
        }
    })
    .await;

    // Refused: 502, connect_error, on an outbound (CLIENT) and an inbound (SERVER) hop.
    for role in ["outbound", "inbound"] {
        let proxy = start_proxy(&config(&receiver, role, dead, "", "")).await;
        let addr = proxy.listener_addr("main").unwrap();
        let response = send(addr, "/pay", &[]).await;
        assert_eq!(response.status(), 502);
        // hoptrace's own error responses carry the trace too.
        assert!(response.headers().contains_key("traceresponse"));
        proxy.shutdown().await;
    }
    // Timeout: 504, timeout.
    let proxy = start_proxy(&config(&receiver, "inbound", slow.addr, "", "")).await;
    let addr = proxy.listener_addr("main").unwrap();
    assert_eq!(send(addr, "/slow", &[]).await.status(), 504);
    // No route (the only routes are on other hosts): 404, no_route.
    proxy.shutdown().await;
    let proxy = start_proxy(&config(
        &receiver,
        "inbound",
        slow.addr,
        "",
        "host = \"elsewhere\"",
    ))
    .await;
    let addr = proxy.listener_addr("main").unwrap();
    let response = send(addr, "/nowhere", &[]).await;
    assert_eq!(response.status(), 404);
    assert!(response.headers().contains_key("traceresponse"));
    proxy.shutdown().await;
    gate.notify_waiters();

    let spans = receiver.wait_for_spans(4).await;
    let find = |path: &str, kind: i32| -> ReceivedSpan {
        spans
            .iter()
            .find(|s| {
                s.kind == kind
                    && (s.attr_str("url.path") == Some(path)
                        || s.attr_str("url.full").is_some_and(|u| u.ends_with(path)))
            })
            .unwrap_or_else(|| panic!("{path}: {spans:#?}"))
            .clone()
    };
    let refused_client = find("/pay", 3);
    assert_eq!(refused_client.attr_str("error.type"), Some("connect_error"));
    assert_eq!(refused_client.status_code, 2);
    let refused_server = find("/pay", 2);
    assert_eq!(refused_server.attr_str("error.type"), Some("connect_error"));
    assert_eq!(
        refused_server.attr_i64("http.response.status_code"),
        Some(502)
    );
    assert_eq!(refused_server.status_code, 2);
    let timeout = find("/slow", 2);
    assert_eq!(timeout.attr_str("error.type"), Some("timeout"));
    assert_eq!(timeout.attr_i64("http.response.status_code"), Some(504));
    let no_route = find("/nowhere", 2);
    assert_eq!(no_route.attr_str("error.type"), Some("no_route"));
    assert_eq!(no_route.name, "GET");
    assert!(no_route.attr_str("http.route").is_none());
}

#[tokio::test]
async fn header_capture_4xx_status_and_connection_reuse() {
    let receiver = Receiver::start().await;
    let upstream = serve(|req: Request<Incoming>| async move {
        let status = if req.uri().path() == "/missing" {
            404
        } else {
            200
        };
        http::Response::builder()
            .status(status)
            .header("x-app-version", "7")
            .body(full("ok"))
            .unwrap()
    })
    .await;
    let capture = "capture_request_headers = [\"x-request-id\"]\ncapture_response_headers = [\"x-app-version\"]";
    let proxy = start_proxy(&config(&receiver, "gateway", upstream.addr, capture, "")).await;
    let addr = proxy.listener_addr("main").unwrap();
    send(
        addr,
        "/found",
        &[("x-request-id", "r-1"), ("authorization", "Bearer secret")],
    )
    .await;
    send(addr, "/missing", &[]).await;
    let spans = receiver.wait_for_spans(4).await;
    let span = |path: &str, kind: i32| {
        spans
            .iter()
            .find(|s| {
                s.kind == kind
                    && s.attributes
                        .values()
                        .any(|v| v.as_str().is_some_and(|u| u.ends_with(path)))
            })
            .unwrap_or_else(|| panic!("{path}"))
            .clone()
    };
    let server = span("/found", 2);
    assert_eq!(
        server.attributes["http.request.header.x-request-id"],
        serde_json::json!(["r-1"])
    );
    assert_eq!(
        server.attributes["http.response.header.x-app-version"],
        serde_json::json!(["7"])
    );
    assert!(
        !server
            .attributes
            .keys()
            .any(|k| k.contains("authorization"))
    );
    // 4xx: an error on the CLIENT span, unset on the SERVER span.
    assert_eq!(span("/missing", 3).status_code, 2);
    assert_eq!(span("/missing", 2).status_code, 0);
    // The second request reused the first one's pooled connection.
    let reuse = span("/missing", 3);
    assert_eq!(
        reuse.events[0].2.get("hoptrace.connection"),
        Some(&serde_json::json!("reused"))
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn collector_down_or_black_holed_never_slows_requests() {
    let upstream = echo_server("app").await;
    // Down: nothing listens. Black-holed: accepts TCP, never answers.
    let down = refusing_addr();
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let _hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            held.push(socket);
        }
    });
    for (what, endpoint) in [("down", down), ("black hole", hole_addr)] {
        let toml = format!(
            r#"
[service]
name = "no-collector"
[admin]
bind = "127.0.0.1:0"
[shutdown]
grace = "0s"
[tracing]
queue_size = 8
batch_size = 4
batch_delay = "10ms"
[tracing.otlp]
endpoint = "http://{endpoint}"
timeout = "200ms"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "inbound"
[[routes]]
listener = "main"
upstream = "app"
[upstreams.app]
endpoints = ["{}"]
"#,
            upstream.addr
        );
        let proxy = start_proxy(&toml).await;
        let addr = proxy.listener_addr("main").unwrap();
        let client = http1_client();
        for _ in 0..200 {
            let response = get(&client, format!("http://{addr}/")).await;
            assert_eq!(response.status(), 200, "{what}");
        }
        let stats = proxy.span_sink().stats().clone();
        // Every span is accounted for: failed (export gave up) or dropped (queue full);
        // the queue never holds more than its 8 slots.
        wait_until(what, Duration::from_secs(20), || {
            let stats = stats.clone();
            async move {
                let [started, exported, dropped, failed] = stats.snapshot();
                started == 200
                    && exported == 0
                    && dropped > 0
                    && failed > 0
                    && dropped + failed == started
            }
        })
        .await;
        assert!(proxy.span_sink().queue_depth() <= 8);
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn mid_response_failures_end_the_span_with_their_cause() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;

    let receiver = Receiver::start().await;
    let release = Gate::default();
    let gate = release.clone();
    // /reset: one chunk; once the client has it, the body fails (hyper aborts the connection).
    // /stall: one chunk, then waits; the client leaves meanwhile.
    let upstream = serve(move |req: Request<Incoming>| {
        let gate = gate.clone();
        async move {
            let reset = req.uri().path() == "/reset";
            let stream = futures_util::stream::unfold(0u8, move |step| {
                let gate = gate.clone();
                async move {
                    match step {
                        0 => Some((
                            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"first"))),
                            1,
                        )),
                        1 if reset => {
                            gate.notified().await;
                            Some((Err::<Frame<Bytes>, BoxError>("upstream died".into()), 2))
                        }
                        1 => {
                            gate.notified().await;
                            None
                        }
                        _ => None,
                    }
                }
            });
            http::Response::new(StreamBody::new(stream).boxed())
        }
    })
    .await;
    let proxy = start_proxy(&config(&receiver, "inbound", upstream.addr, "", "")).await;
    let addr = proxy.listener_addr("main").unwrap();

    let response = send(addr, "/reset", &[]).await;
    assert_eq!(response.status(), 200, "headers were already sent");
    let mut body = response.into_body();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "first"
    );
    release.notify_one();
    assert!(
        body.collect().await.is_err(),
        "the stream is aborted, not completed"
    );

    let response = send(addr, "/stall", &[]).await;
    let mut body = response.into_body();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "first"
    );
    drop(body); // the client goes away mid-response

    let spans = receiver.wait_for_spans(2).await;
    let by_path = |path: &str| {
        spans
            .iter()
            .find(|s| s.attr_str("url.path") == Some(path))
            .unwrap()
            .clone()
    };
    let reset = by_path("/reset");
    assert_eq!(reset.attr_str("error.type"), Some("upstream_reset"));
    assert_eq!(reset.status_code, 2);
    let gone = by_path("/stall");
    assert_eq!(gone.attr_str("error.type"), Some("client_closed"));
    assert_eq!(gone.status_code, 2);
    release.notify_waiters();
    proxy.shutdown().await;
}

/// Semantic conventions: a method outside the known set is exported as `_OTHER` with
/// `http.request.method_original`, and names the span `HTTP {route}`; the request itself goes
/// upstream with its method unchanged.
#[tokio::test]
async fn an_unknown_method_is_other_on_the_span_and_unchanged_upstream() {
    let receiver = Receiver::start().await;
    let upstream = echo_server("app").await;
    let proxy = start_proxy(&config(&receiver, "gateway", upstream.addr, "", "")).await;
    let addr = proxy.listener_addr("main").unwrap();
    let request = Request::builder()
        .method("PURGE")
        .uri(format!("http://{addr}/cache/7"))
        .body(full(""))
        .unwrap();
    let response = http1_client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(body_json(response).await["method"], "PURGE");
    let spans = receiver.wait_for_spans(2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    for span in &spans {
        assert_eq!(span.name, "HTTP /", "{span:#?}");
        assert_eq!(span.attr_str("http.request.method"), Some("_OTHER"));
        assert_eq!(span.attr_str("http.request.method_original"), Some("PURGE"));
    }
    proxy.shutdown().await;
}

/// An HTTP/1.1 upstream's response fields go to the client as they came (hoptrace writes
/// them from the upstream's head without a header map, or, for an HTTP/2 client, through
/// one): every end-to-end field with its values in order, hop-by-hop fields gone, and the
/// fields the proxy sets (`traceresponse`) replacing the upstream's of the same name.
#[tokio::test]
async fn upstream_response_fields_pass_through_and_the_proxys_own_replace_the_upstreams() {
    let upstream = serve(|_req: Request<Incoming>| async move {
        http::Response::builder()
            // What an inner hop's sidecar would have added.
            .header(
                "traceresponse",
                "00-11111111111111111111111111111111-2222222222222222-01",
            )
            .header("x-multi", "one")
            .header("x-multi", "two")
            .header("x-single", "three")
            .header("connection", "x-hop")
            .header("x-hop", "private")
            .header("date", "Tue, 01 Dec 2026 00:00:00 GMT")
            .body(full("payload"))
            .unwrap()
    })
    .await;
    let receiver = Receiver::start().await;
    let http1 = config(&receiver, "inbound", upstream.addr, "", "");
    // The same upstream over h2c (hyper's client): its fields come in a header map.
    let http2 = http1.replace(
        "request_timeout = \"300ms\"",
        "request_timeout = \"300ms\"\nprotocol = \"http2\"",
    );
    assert_ne!(http1, http2);
    let mut answered = Vec::new();
    for (protocol, toml) in [("http1", http1), ("http2", http2)] {
        let proxy = start_proxy(&toml).await;
        let addr = proxy.listener_addr("main").unwrap();
        answered.extend(answers(addr, protocol).await);
    }
    // Each names this hop's SERVER span, not the upstream's.
    let mut spans: Vec<String> = receiver
        .wait_for_spans(4)
        .await
        .iter()
        .map(|s| format!("00-{}-{}-01", s.trace_id, s.span_id))
        .collect();
    spans.sort();
    answered.sort();
    assert_eq!(answered, spans);
    assert!(
        spans
            .iter()
            .all(|s| s.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")),
        "{spans:?}"
    );
}

/// The `traceresponse` values an HTTP/1.1 and an HTTP/2 client got, the other fields
/// checked on the way.
async fn answers(addr: SocketAddr, upstream_protocol: &str) -> Vec<String> {
    let mut answered = Vec::new();
    for client in [http1_client(), http2_client()] {
        let request = Request::get(format!("http://{addr}/fields"))
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(full(""))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        let values = |name: &str| -> Vec<&str> {
            headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(values("x-multi"), ["one", "two"], "{headers:?}");
        assert_eq!(values("x-single"), ["three"], "{headers:?}");
        assert_eq!(
            values("date"),
            ["Tue, 01 Dec 2026 00:00:00 GMT"],
            "{headers:?}"
        );
        if upstream_protocol == "http1" {
            // (HTTP/2 has no `Connection`: hyper's server drops it, so `x-hop` goes on.)
            assert!(
                values("x-hop").is_empty(),
                "named in Connection: {headers:?}"
            );
        }
        assert!(values("connection").is_empty(), "{headers:?}");
        let traceresponse = values("traceresponse");
        assert_eq!(traceresponse.len(), 1, "{headers:?}");
        answered.push(traceresponse[0].to_string());
        assert_eq!(body_string(response).await, "payload");
    }
    answered
}
