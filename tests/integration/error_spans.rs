//! The `error.type` values that need an unusual failure to appear, each on the wire with
//! its status: `connect_timeout` (an upstream whose accept queue is full, so the kernel
//! drops the SYN), `bad_request` (a 400 hoptrace makes for a malformed chunked body),
//! `request_body_too_large` (413) and `no_healthy_upstream` (a retry after a refused
//! connection, with every endpoint in back-off). The others are in `tracing_context.rs`,
//! `faults.rs` and `tls.rs`.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::otlp::{ReceivedSpan, Receiver};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn config(
    receiver: &Receiver,
    role: &str,
    upstream: SocketAddr,
    upstream_extra: &str,
    route_extra: &str,
) -> String {
    format!(
        r#"
[service]
name = "error-spans"
[admin]
bind = "127.0.0.1:0"
[tracing]
batch_delay = "10ms"
[tracing.otlp]
endpoint = "{}"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "{role}"
[[routes]]
listener = "main"
upstream = "app"
{route_extra}
[upstreams.app]
endpoints = ["{upstream}"]
{upstream_extra}
"#,
        receiver.grpc_url()
    )
}

/// Sends raw bytes and reads until the proxy closes the connection.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the proxy never closed the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn of_kind(spans: &[ReceivedSpan], kind: i32) -> Vec<&ReceivedSpan> {
    spans.iter().filter(|s| s.kind == kind).collect()
}

/// A listener nobody accepts on, with its accept queue (backlog 0) filled by connections
/// the test holds: Linux then drops every further SYN, so a connect hangs until the
/// connector's timeout. The probe that finds the queue full gives up after 200 ms.
async fn unanswered_listener() -> (SocketAddr, TcpListener, Vec<TcpStream>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => queued.push(stream),
            Ok(Err(e)) => panic!("connect to the filling listener failed: {e}"),
            Err(_) => break,
        }
        assert!(queued.len() < 64, "the accept queue never filled");
    }
    (addr, listener, queued)
}

#[tokio::test]
async fn a_connect_that_hangs_is_504_connect_timeout() {
    let receiver = Receiver::start().await;
    let (upstream, _listener, _queued) = unanswered_listener().await;
    let toml = config(
        &receiver,
        "gateway",
        upstream,
        "connect_timeout = \"300ms\"",
        "",
    );
    let proxy = start_proxy(&toml).await;
    let addr = proxy.listener_addr("main").unwrap();

    let started = Instant::now();
    let response = get(&http1_client(), format!("http://{addr}/hang")).await;
    assert_eq!(response.status(), 504);
    assert_eq!(response.headers()["x-hoptrace-error"], "connect_timeout");
    // It waited for the connect timeout (a lower bound: the SYN really went unanswered).
    assert!(started.elapsed() >= Duration::from_millis(300));

    let spans = receiver.wait_for_spans(2).await;
    for kind in [SERVER, CLIENT] {
        let [span] = of_kind(&spans, kind)[..] else {
            panic!("one span of kind {kind}: {spans:#?}");
        };
        assert_eq!(
            span.attr_str("error.type"),
            Some("connect_timeout"),
            "{kind}"
        );
        assert_eq!(span.status_code, 2, "{kind}: Error");
    }
    let server = of_kind(&spans, SERVER)[0];
    assert_eq!(server.attr_i64("http.response.status_code"), Some(504));
    let client = of_kind(&spans, CLIENT)[0];
    assert_eq!(
        client.attr_i64("network.peer.port"),
        Some(i64::from(upstream.port()))
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_malformed_chunked_body_is_400_bad_request_with_its_span() {
    let receiver = Receiver::start().await;
    let upstream = echo_server("app").await;
    let proxy = start_proxy(&config(&receiver, "gateway", upstream.addr, "", "")).await;
    let addr = proxy.listener_addr("main").unwrap();

    let response = raw(
        addr,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.contains("x-hoptrace-error: bad_request"),
        "{response}"
    );

    let spans = receiver.wait_for_spans(1).await;
    let server = of_kind(&spans, SERVER);
    let [server] = server[..] else {
        panic!("one SERVER span: {spans:#?}");
    };
    assert_eq!(server.attr_str("error.type"), Some("bad_request"));
    assert_eq!(server.attr_i64("http.response.status_code"), Some(400));
    assert_eq!(server.attr_str("url.path"), Some("/upload"));
    // A 4xx alone leaves a SERVER span Unset; the transport failure makes it Error.
    assert_eq!(server.status_code, 2);
    for client in of_kind(&receiver.spans(), CLIENT) {
        assert_eq!(client.attr_str("error.type"), Some("bad_request"));
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_request_body_too_large_with_its_span() {
    let receiver = Receiver::start().await;
    let upstream = echo_server("app").await;
    let toml = config(
        &receiver,
        "inbound",
        upstream.addr,
        "",
        "max_request_body = \"10\"",
    );
    let proxy = start_proxy(&toml).await;
    let addr = proxy.listener_addr("main").unwrap();
    let body = "x".repeat(100);
    let request = format!(
        "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{body}"
    );
    let response = raw(addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");

    let spans = receiver.wait_for_spans(1).await;
    assert_eq!(
        spans[0].attr_str("error.type"),
        Some("request_body_too_large")
    );
    assert_eq!(spans[0].attr_i64("http.response.status_code"), Some(413));
    proxy.shutdown().await;
}

/// A refused connection puts the only endpoint in back-off; the retry it earned has nowhere
/// else to go, so it is not sent: 503 `no_healthy_upstream`.
#[tokio::test]
async fn a_retry_with_every_endpoint_in_back_off_is_503_no_healthy_upstream() {
    let dead = refusing_addr();
    for role in ["gateway", "outbound"] {
        let receiver = Receiver::start().await;
        let toml = config(&receiver, role, dead, "retries = 2", "");
        let proxy = start_proxy(&toml).await;
        let addr = proxy.listener_addr("main").unwrap();
        let response = get(&http1_client(), format!("http://{addr}/pay")).await;
        assert_eq!(response.status(), 503, "{role}");
        assert_eq!(
            response.headers()["x-hoptrace-error"],
            "no_healthy_upstream",
            "{role}"
        );

        let mut spans = receiver.wait_for_spans(2).await;
        spans.sort_by_key(|s| (s.kind, s.start_unix_nano));
        assert_eq!(spans.len(), 2, "{role}: {spans:#?}");
        assert!(spans.iter().all(|s| s.trace_id == spans[0].trace_id));
        let clients = of_kind(&spans, CLIENT);
        // The attempt that was sent, refused.
        let attempt = clients[0];
        assert_eq!(
            attempt.attr_str("error.type"),
            Some("connect_error"),
            "{role}"
        );
        assert_eq!(
            attempt.attr_i64("network.peer.port"),
            Some(i64::from(dead.port()))
        );
        assert_eq!(attempt.attr_i64("http.request.resend_count"), None);
        match role {
            "gateway" => {
                let [server] = of_kind(&spans, SERVER)[..] else {
                    panic!("one SERVER span: {spans:#?}");
                };
                assert_eq!(server.attr_str("error.type"), Some("no_healthy_upstream"));
                assert_eq!(server.attr_i64("http.response.status_code"), Some(503));
                assert_eq!(attempt.parent_span_id, server.span_id);
            }
            _ => {
                // Outbound: the retry that was not sent is a CLIENT span of its own.
                let [_, retry] = clients[..] else {
                    panic!("two CLIENT spans: {spans:#?}");
                };
                assert_eq!(retry.attr_str("error.type"), Some("no_healthy_upstream"));
                assert_eq!(retry.attr_i64("http.request.resend_count"), Some(1));
                // No upstream answered it: no response status on a CLIENT span.
                assert_eq!(retry.attr_i64("http.response.status_code"), None);
                assert_eq!(retry.attr_str("network.peer.address"), None, "never sent");
                assert_ne!(retry.span_id, attempt.span_id);
                assert_eq!(retry.parent_span_id, attempt.parent_span_id);
            }
        }
        proxy.shutdown().await;
    }
}
