//! Retries: opt-in per upstream, only for requests safe to repeat, on connection failures or
//! a `retry_on` status, each attempt its own CLIENT span with `http.request.resend_count`,
//! and a budget that caps them.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::otlp::Receiver;
use common::*;
use http::Request;
use hyper::body::Incoming;

/// An upstream answering 503 to its first `failures` requests, then 200; it records the
/// `traceparent` of each request.
async fn flaky_upstream(
    failures: usize,
) -> (TestServer, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
    let count = Arc::new(AtomicUsize::new(0));
    let parents = Arc::new(Mutex::new(Vec::new()));
    let (seen, recorded) = (count.clone(), parents.clone());
    let server = serve(move |req: Request<Incoming>| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        // Every attempt, the first and each retry, carries the client's address.
        let forwarded = req.headers().get("x-forwarded-for").map(|v| v.as_bytes())
            == Some(b"127.0.0.1".as_slice());
        if let Some(tp) = req.headers().get("traceparent") {
            recorded
                .lock()
                .unwrap()
                .push(tp.to_str().unwrap().to_string());
        }
        async move {
            if !forwarded {
                text(500, "no x-forwarded-for")
            } else if n < failures {
                text(503, "busy, try again")
            } else {
                text(200, "ok")
            }
        }
    })
    .await;
    (server, count, parents)
}

fn config(
    role: &str,
    endpoints: &[SocketAddr],
    upstream_extra: &str,
    receiver: &Receiver,
) -> String {
    let list: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
[service]
name = "retries"
[admin]
bind = "127.0.0.1:0"
[tracing]
batch_delay = "20ms"
[tracing.otlp]
protocol = "grpc"
endpoint = "{}"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "{role}"
[[routes]]
listener = "main"
upstream = "app"
[upstreams.app]
endpoints = [{}]
{upstream_extra}
"#,
        receiver.grpc_url(),
        list.join(", ")
    )
}

#[tokio::test]
async fn status_retries_are_one_client_span_per_attempt() {
    let receiver = Receiver::start().await;
    let (upstream, count, parents) = flaky_upstream(2).await;
    let proxy = start_proxy(&config(
        "gateway",
        &[upstream.addr],
        "retries = 2\nretry_on = [503]",
        &receiver,
    ))
    .await;
    let addr = proxy.listener_addr("main").unwrap();
    let response = get(&http1_client(), format!("http://{addr}/pay")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body_string(response).await, "ok");
    assert_eq!(count.load(Ordering::SeqCst), 3);

    let spans = receiver.wait_for_spans(4).await;
    let server: Vec<_> = spans.iter().filter(|s| s.kind == 2).collect();
    assert_eq!(server.len(), 1, "{spans:#?}");
    let server = server[0];
    assert_eq!(server.attr_i64("http.response.status_code"), Some(200));
    let mut clients: Vec<_> = spans.iter().filter(|s| s.kind == 3).collect();
    clients.sort_by_key(|s| s.start_unix_nano);
    assert_eq!(clients.len(), 3, "{spans:#?}");
    let statuses: Vec<_> = clients
        .iter()
        .map(|s| s.attr_i64("http.response.status_code"))
        .collect();
    assert_eq!(statuses, [Some(503), Some(503), Some(200)]);
    let resends: Vec<_> = clients
        .iter()
        .map(|s| s.attr_i64("http.request.resend_count"))
        .collect();
    assert_eq!(resends, [None, Some(1), Some(2)]);
    assert_eq!(clients[0].status_code, 2);
    assert_eq!(clients[2].status_code, 0);
    for client in &clients {
        assert_eq!(client.trace_id, server.trace_id);
        assert_eq!(client.parent_span_id, server.span_id);
    }
    // Each attempt carried its own CLIENT span as the upstream's parent.
    let expected: Vec<String> = clients
        .iter()
        .map(|s| format!("00-{}-{}-01", s.trace_id, s.span_id))
        .collect();
    assert_eq!(*parents.lock().unwrap(), expected);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_endpoint() {
    let receiver = Receiver::start().await;
    let dead = refusing_addr();
    let (live, count, _) = flaky_upstream(0).await;
    let proxy = start_proxy(&config(
        "outbound",
        &[dead, live.addr],
        "retries = 1",
        &receiver,
    ))
    .await;
    let addr = proxy.listener_addr("main").unwrap();
    let response = get(&http1_client(), format!("http://{addr}/")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(count.load(Ordering::SeqCst), 1);

    let mut spans = receiver.wait_for_spans(2).await;
    spans.sort_by_key(|s| s.start_unix_nano);
    assert!(spans.iter().all(|s| s.kind == 3), "{spans:#?}");
    assert_eq!(spans[0].attr_str("error.type"), Some("connect_error"));
    assert_eq!(spans[0].attr_str("network.peer.address"), Some("127.0.0.1"));
    assert_eq!(
        spans[0].attr_i64("network.peer.port"),
        Some(i64::from(dead.port()))
    );
    assert_eq!(spans[0].attr_i64("http.request.resend_count"), None);
    assert_eq!(
        spans[1].attr_i64("network.peer.port"),
        Some(i64::from(live.addr.port()))
    );
    assert_eq!(spans[1].attr_i64("http.request.resend_count"), Some(1));
    assert_eq!(spans[1].attr_i64("http.response.status_code"), Some(200));
    // Both attempts belong to the same trace, as siblings with the same (absent) parent.
    assert_eq!(spans[0].trace_id, spans[1].trace_id);
    assert_eq!(spans[0].parent_span_id, spans[1].parent_span_id);
    assert_ne!(spans[0].span_id, spans[1].span_id);
    proxy.shutdown().await;
}

#[tokio::test]
async fn requests_unsafe_to_repeat_are_not_retried() {
    let receiver = Receiver::start().await;
    let (upstream, count, _) = flaky_upstream(usize::MAX).await;
    let proxy = start_proxy(&config(
        "outbound",
        &[upstream.addr],
        "retries = 2\nretry_on = [503]",
        &receiver,
    ))
    .await;
    let addr = proxy.listener_addr("main").unwrap();
    let client = http1_client();
    // Not idempotent.
    let post = Request::post(format!("http://{addr}/"))
        .body(full(""))
        .unwrap();
    assert_eq!(client.request(post).await.unwrap().status(), 503);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // Idempotent, but with a body (which would have to be buffered to be sent again).
    let put = Request::put(format!("http://{addr}/"))
        .body(full("data"))
        .unwrap();
    assert_eq!(client.request(put).await.unwrap().status(), 503);
    assert_eq!(count.load(Ordering::SeqCst), 2);
    // Idempotent without a body: retried twice.
    let response = get(&client, format!("http://{addr}/")).await;
    assert_eq!(response.status(), 503);
    assert_eq!(body_string(response).await, "busy, try again");
    assert_eq!(count.load(Ordering::SeqCst), 5);
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_budget_caps_retries_and_counts_refusals() {
    let receiver = Receiver::start().await;
    let (upstream, count, _) = flaky_upstream(usize::MAX).await;
    // Retries may add at most half the requests, with no per-second minimum.
    let proxy = start_proxy(&config(
        "outbound",
        &[upstream.addr],
        "retries = 2\nretry_on = [503]\nretry_budget = 0.5\nretry_budget_min_per_second = 0",
        &receiver,
    ))
    .await;
    let addr = proxy.listener_addr("main").unwrap();
    let client = http1_client();
    for _ in 0..20 {
        let response = get(&client, format!("http://{addr}/")).await;
        assert_eq!(response.status(), 503);
        body_string(response).await;
    }
    // Each request earns half a retry: 10 retries in all, not 40.
    assert_eq!(count.load(Ordering::SeqCst), 30);
    let admin = proxy.admin_addr();
    let metrics = body_string(get(&client, format!("http://{admin}/metrics")).await).await;
    assert!(
        metrics.contains("hoptrace_upstream_retries_total{upstream=\"app\"} 10"),
        "{metrics}"
    );
    // Every request ended with one refused retry.
    assert!(
        metrics.contains("hoptrace_upstream_retry_budget_exhausted_total{upstream=\"app\"} 20"),
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_retried_response_body_left_unread_leaks_no_connection() {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    // An upstream that counts its open connections and answers 503 with a 1 MiB body
    // (far more than socket buffers hold), then 200 on the last attempt of each request.
    let open = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (o, s) = (open.clone(), served.clone());
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (open, served) = (o.clone(), s.clone());
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<Incoming>| {
                    let n = served.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let response = if n % 3 == 2 {
                            text(200, "ok")
                        } else {
                            http::Response::builder()
                                .status(503)
                                .body(full(vec![b'x'; 1 << 20]))
                                .unwrap()
                        };
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    let receiver = Receiver::start().await;
    let proxy = start_proxy(&config(
        "outbound",
        &[upstream],
        "retries = 2\nretry_on = [503]\nretry_budget = 1.0",
        &receiver,
    ))
    .await;
    let addr = proxy.listener_addr("main").unwrap();
    let client = http1_client();
    for _ in 0..5 {
        let response = get(&client, format!("http://{addr}/")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(body_string(response).await, "ok");
    }
    assert_eq!(served.load(Ordering::SeqCst), 15);
    // Each abandoned 503 took its connection with it; only the pooled connection of the last
    // 200 stays open.
    wait_until(
        "abandoned connections are closed",
        Duration::from_secs(10),
        || {
            let open = open.clone();
            async move { open.load(Ordering::SeqCst) <= 1 }
        },
    )
    .await;
    proxy.shutdown().await;
    server.abort();
}
