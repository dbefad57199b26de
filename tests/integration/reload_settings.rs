//! Each reloadable setting, changed by `POST /reload` while serving, observed on the wire:
//! balancing (round robin ↔ p2c), an upstream's `request_timeout`, a route's tracing
//! override, header capture, and the trace response headers.

use crate::common;
use crate::reload_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::otlp::Receiver;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use reload_common::*;

/// Replaces the file and reloads it by `POST /reload`, which must apply it.
async fn apply(running: &hoptrace::app::Running, path: &std::path::Path, text: &str) {
    write_atomic(path, text);
    let (status, body) = post_reload(running.admin_addr()).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
}

/// A listener `main` (inbound) with `routes` (TOML `[[routes]]` tables) and `rest`.
fn config_with(tracing: &str, routes: &str, rest: &str) -> String {
    format!(
        r#"
[service]
name = "reload-settings"
[admin]
bind = "127.0.0.1:0"
[tracing]
batch_delay = "10ms"
{tracing}
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "inbound"
{routes}
{rest}
"#
    )
}

/// An upstream that answers `GET /hold` with its head at once and its body only when
/// released (so the request stays outstanding on its endpoint), and anything else at once.
/// Both carry `x-upstream: NAME`.
struct Holding {
    server: TestServer,
    release: tokio::sync::watch::Sender<bool>,
}

async fn holding(name: &'static str) -> Holding {
    let (release, _) = tokio::sync::watch::channel(false);
    let released = release.clone();
    let server = serve(move |req: Request<Incoming>| {
        let mut released = released.subscribe();
        async move {
            let body = if req.uri().path() == "/hold" {
                let end = futures_util::stream::once(async move {
                    let _ = released.wait_for(|r| *r).await;
                    Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"released")))
                });
                StreamBody::new(end).boxed()
            } else {
                full(name)
            };
            Response::builder()
                .header("x-upstream", name)
                .body(body)
                .unwrap()
        }
    })
    .await;
    Holding { server, release }
}

fn upstream_of(response: &Response<Incoming>) -> String {
    response.headers()["x-upstream"]
        .to_str()
        .unwrap()
        .to_string()
}

/// Holds 60 requests open across the upstream's endpoints, releases those of the endpoint
/// that got fewer, then sends 10 requests one after another: which endpoint answered each.
/// Round robin keeps alternating; p2c avoids the endpoint that is still busy.
async fn sequence_with_one_endpoint_busy(
    addr: SocketAddr,
    a: &Holding,
    b: &Holding,
) -> (String, Vec<String>) {
    let client = http1_client();
    a.release.send_replace(false);
    b.release.send_replace(false);
    let mut held = Vec::new();
    for _ in 0..60 {
        let response = get(&client, format!("http://{addr}/hold")).await;
        assert_eq!(response.status(), 200);
        held.push(response);
    }
    let on_a = held.iter().filter(|r| upstream_of(r) == "a").count();
    let (busy, free) = if on_a >= 30 { ("a", b) } else { ("b", a) };
    free.release.send_replace(true);
    let (busy_held, free_held): (Vec<_>, Vec<_>) =
        held.into_iter().partition(|r| upstream_of(r) == busy);
    for response in free_held {
        assert_eq!(body_string(response).await, "released");
    }
    let mut answered = Vec::new();
    for _ in 0..10 {
        let response = get(&client, format!("http://{addr}/")).await;
        answered.push(upstream_of(&response));
        body_string(response).await;
    }
    a.release.send_replace(true);
    b.release.send_replace(true);
    for response in busy_held {
        assert_eq!(body_string(response).await, "released");
    }
    (busy.to_string(), answered)
}

#[tokio::test]
async fn balancing_reloads_between_round_robin_and_p2c() {
    let (a, b) = (holding("a").await, holding("b").await);
    let dir = tempfile::tempdir().unwrap();
    let with_balance = |balance: &str| {
        config_with(
            "exporter = \"none\"",
            "[[routes]]\nlistener = \"main\"\nupstream = \"pool\"",
            &format!(
                "[upstreams.pool]\nendpoints = [\"{}\", \"{}\"]\nbalance = \"{balance}\"\n",
                a.server.addr, b.server.addr
            ),
        )
    };
    let (running, path) = start(dir.path(), &with_balance("round_robin"), false).await;
    let addr = running.listener_addr("main").unwrap();
    let alternates = |answered: &[String]| {
        answered.windows(2).all(|w| w[0] != w[1])
            && answered.iter().filter(|u| *u == "a").count() == 5
    };

    let (busy, answered) = sequence_with_one_endpoint_busy(addr, &a, &b).await;
    assert!(alternates(&answered), "round robin: {answered:?}");
    assert!(answered.contains(&busy));

    apply(&running, &path, &with_balance("p2c")).await;
    let (busy, answered) = sequence_with_one_endpoint_busy(addr, &a, &b).await;
    assert!(
        answered.iter().all(|u| *u != busy),
        "p2c sent requests to the busy endpoint {busy}: {answered:?}"
    );

    apply(&running, &path, &with_balance("round_robin")).await;
    let (_, answered) = sequence_with_one_endpoint_busy(addr, &a, &b).await;
    assert!(alternates(&answered), "round robin again: {answered:?}");
    running.shutdown().await;
}

#[tokio::test]
async fn a_request_timeout_change_is_applied() {
    // Answers only when released; counts arrivals.
    let (release, _) = tokio::sync::watch::channel(false);
    let arrived = Arc::new(AtomicUsize::new(0));
    let (released, count) = (release.clone(), arrived.clone());
    let upstream = serve(move |_req| {
        let mut released = released.subscribe();
        count.fetch_add(1, Ordering::Relaxed);
        async move {
            let _ = released.wait_for(|r| *r).await;
            text(200, "answered")
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let with_timeout = |timeout: &str| {
        config_with(
            "exporter = \"none\"",
            "[[routes]]\nlistener = \"main\"\nupstream = \"app\"",
            &format!(
                "[upstreams.app]\nendpoints = [\"{}\"]\nrequest_timeout = \"{timeout}\"\n",
                upstream.addr
            ),
        )
    };
    let (running, path) = start(dir.path(), &with_timeout("30s"), false).await;
    let addr = running.listener_addr("main").unwrap();
    // Waits for the request to arrive upstream, releases it, and returns the status.
    let answered_after_release = || {
        let (release, arrived) = (release.clone(), arrived.clone());
        async move {
            release.send_replace(false);
            let before = arrived.load(Ordering::Relaxed);
            let request = tokio::spawn(async move {
                let response = get(&http1_client(), format!("http://{addr}/")).await;
                response.status().as_u16()
            });
            wait_until("the request upstream", DEADLINE, || {
                let arrived = arrived.clone();
                async move { arrived.load(Ordering::Relaxed) > before }
            })
            .await;
            release.send_replace(true);
            request.await.unwrap()
        }
    };
    assert_eq!(answered_after_release().await, 200);

    // 100 ms: the upstream, never released, times out.
    apply(&running, &path, &with_timeout("100ms")).await;
    release.send_replace(false);
    let response = get(&http1_client(), format!("http://{addr}/")).await;
    assert_eq!(response.status(), 504);

    apply(&running, &path, &with_timeout("30s")).await;
    assert_eq!(answered_after_release().await, 200);
    running.shutdown().await;
}

/// Sends GET `path` (with `x-tenant: acme`) and reads the whole answer.
async fn send(addr: SocketAddr, path: &str) -> Response<Incoming> {
    let request = Request::get(format!("http://{addr}{path}"))
        .header("x-tenant", "acme")
        .body(full(""))
        .unwrap();
    let response = http1_client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response
}

#[tokio::test]
async fn a_route_tracing_override_is_applied() {
    let receiver = Receiver::start().await;
    let app = echo_server("app").await;
    let dir = tempfile::tempdir().unwrap();
    let with = |ratio: &str, quiet_route: &str| {
        config_with(
            &format!(
                "sampling_ratio = {ratio}\n[tracing.otlp]\nendpoint = \"{}\"",
                receiver.grpc_url()
            ),
            &format!(
                "[[routes]]\nlistener = \"main\"\npath_prefix = \"/quiet\"\nupstream = \"app\"\n\
                 {quiet_route}\n[[routes]]\nlistener = \"main\"\nupstream = \"app\""
            ),
            &format!("[upstreams.app]\nendpoints = [\"{}\"]\n", app.addr),
        )
    };
    let (running, path) = start(dir.path(), &with("1.0", ""), false).await;
    let addr = running.listener_addr("main").unwrap();
    let exported = |n| {
        let receiver = &receiver;
        async move {
            let spans = receiver.wait_for_spans(n).await;
            spans
                .iter()
                .map(|s| s.attr_str("url.path").unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    send(addr, "/quiet/1").await;
    assert_eq!(exported(1).await, ["/quiet/1"]);

    // `tracing = false` on the route: its requests export nothing; the next request on the
    // other route is exported (one queue, in order: had /quiet/2 been, it would be first).
    apply(&running, &path, &with("1.0", "tracing = false")).await;
    send(addr, "/quiet/2").await;
    send(addr, "/loud/3").await;
    assert_eq!(exported(2).await, ["/quiet/1", "/loud/3"]);

    // The other way round: nothing sampled but the route, by its own ratio.
    apply(&running, &path, &with("0.0", "sampling_ratio = 1.0")).await;
    send(addr, "/loud/4").await;
    send(addr, "/quiet/5").await;
    assert_eq!(exported(3).await, ["/quiet/1", "/loud/3", "/quiet/5"]);
    running.shutdown().await;
}

#[tokio::test]
async fn header_capture_is_applied() {
    let receiver = Receiver::start().await;
    let app = echo_server("app").await;
    let dir = tempfile::tempdir().unwrap();
    let with = |capture: &str| {
        config_with(
            &format!(
                "{capture}\n[tracing.otlp]\nendpoint = \"{}\"",
                receiver.grpc_url()
            ),
            "[[routes]]\nlistener = \"main\"\nupstream = \"app\"",
            &format!("[upstreams.app]\nendpoints = [\"{}\"]\n", app.addr),
        )
    };
    let (running, path) = start(dir.path(), &with(""), false).await;
    let addr = running.listener_addr("main").unwrap();
    let request_header = "http.request.header.x-tenant";
    let response_header = "http.response.header.x-upstream";

    send(addr, "/before").await;
    let spans = receiver.wait_for_spans(1).await;
    assert!(!spans[0].attributes.contains_key(request_header));
    assert!(!spans[0].attributes.contains_key(response_header));

    apply(
        &running,
        &path,
        &with(
            "capture_request_headers = [\"x-tenant\"]\ncapture_response_headers = [\"x-upstream\"]",
        ),
    )
    .await;
    send(addr, "/after").await;
    let spans = receiver.wait_for_spans(2).await;
    assert_eq!(spans[1].attr_str("url.path"), Some("/after"));
    assert_eq!(
        spans[1].attributes[request_header],
        serde_json::json!(["acme"])
    );
    assert_eq!(
        spans[1].attributes[response_header],
        serde_json::json!(["app"])
    );

    apply(&running, &path, &with("")).await;
    send(addr, "/off-again").await;
    let spans = receiver.wait_for_spans(3).await;
    assert!(!spans[2].attributes.contains_key(request_header));
    running.shutdown().await;
}

#[tokio::test]
async fn trace_response_headers_are_applied() {
    let app = echo_server("app").await;
    let dir = tempfile::tempdir().unwrap();
    let with = |headers: &str| {
        config_with(
            &format!("exporter = \"none\"\n{headers}"),
            "[[routes]]\nlistener = \"main\"\nupstream = \"app\"",
            &format!("[upstreams.app]\nendpoints = [\"{}\"]\n", app.addr),
        )
    };
    let (running, path) = start(dir.path(), &with(""), false).await;
    let addr = running.listener_addr("main").unwrap();
    // (traceresponse, x-trace-id) on a response; both carry the same trace id when present.
    let headers = || async move {
        let response = send(addr, "/").await;
        let get = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        (get("traceresponse"), get("x-trace-id"))
    };

    let (traceresponse, trace_id) = headers().await;
    assert!(traceresponse.unwrap().starts_with("00-"), "on by default");
    assert_eq!(trace_id, None);

    apply(
        &running,
        &path,
        &with("traceresponse = false\ntrace_id_header = \"x-trace-id\""),
    )
    .await;
    let (traceresponse, trace_id) = headers().await;
    assert_eq!(traceresponse, None);
    let trace_id = trace_id.unwrap();
    assert_eq!(trace_id.len(), 32, "{trace_id}");
    assert!(trace_id.bytes().all(|c| c.is_ascii_hexdigit()));

    apply(&running, &path, &with("traceresponse = true")).await;
    let (traceresponse, trace_id) = headers().await;
    assert!(traceresponse.unwrap().starts_with("00-"));
    assert_eq!(trace_id, None);
    running.shutdown().await;
}
