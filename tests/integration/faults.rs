//! Faults around the proxy: a collector that is down or black-holed (requests unaffected,
//! losses counted, export resumes when it returns) and upstreams that refuse, reset, never
//! answer, or stall mid-body (right status or aborted stream, right `error.type`, no hang).

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::otlp::Receiver;
use common::*;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn config(upstream: SocketAddr, role: &str, collector: &str, upstream_extra: &str) -> String {
    format!(
        r#"
[service]
name = "faults"
[admin]
bind = "127.0.0.1:0"
[tracing]
queue_size = 64
batch_size = 16
batch_delay = "20ms"
[tracing.otlp]
protocol = "grpc"
endpoint = "{collector}"
timeout = "300ms"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "{role}"
[[routes]]
listener = "main"
upstream = "app"
[upstreams.app]
endpoints = ["{upstream}"]
request_timeout = "300ms"
body_timeout = "300ms"
{upstream_extra}
"#
    )
}

/// A collector address that accepts connections and never reads or answers: the accepted
/// sockets are kept open until the returned task is aborted.
async fn black_hole() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

/// Sends `n` requests one after the other; every one must succeed.
async fn all_succeed(addr: SocketAddr, n: usize) {
    let client = http1_client();
    for i in 0..n {
        let response = get(&client, format!("http://{addr}/r{i}")).await;
        assert_eq!(response.status(), 200, "request {i}");
        body_string(response).await;
    }
}

/// The collector is refused, then black-holed: requests keep succeeding, the queue stays
/// within its size, lost spans are counted; then a real collector comes up on the address
/// and spans arrive again.
/// How the collector is down in `outage`.
enum Down {
    /// Nothing listens: connections are refused.
    Refusing(RefusingPort),
    /// A task accepts connections and never answers.
    Hole(SocketAddr, tokio::task::JoinHandle<()>),
}

async fn outage(down: Down) {
    let collector = match &down {
        Down::Refusing(port) => port.addr(),
        Down::Hole(addr, _) => *addr,
    };
    let upstream = echo_server("app").await;
    let toml = config(upstream.addr, "inbound", &format!("http://{collector}"), "");
    let proxy = start_proxy(&toml).await;
    let addr = proxy.listener_addr("main").unwrap();

    all_succeed(addr, 300).await;
    let stats = proxy.span_sink().stats().clone();
    wait_until("lost spans are counted", Duration::from_secs(10), || {
        let [_, _, dropped, failed] = stats.snapshot();
        async move { dropped + failed > 0 }
    })
    .await;
    assert!(proxy.span_sink().queue_depth() <= 64);
    let [started, exported, ..] = stats.snapshot();
    assert_eq!(started, 300);
    assert_eq!(exported, 0);
    let metrics = body_string(
        get(
            &http1_client(),
            format!("http://{}/metrics", proxy.admin_addr()),
        )
        .await,
    )
    .await;
    assert!(
        metrics.contains("hoptrace_spans_failed_total")
            && metrics.contains("hoptrace_spans_dropped_total")
    );

    // The collector comes back on the same address.
    let receiver = match down {
        Down::Refusing(port) => Receiver::start_on(port.listen()).await,
        Down::Hole(_, hole) => {
            hole.abort();
            let _ = hole.await;
            Receiver::start_at(collector).await
        }
    };
    let client = http1_client();
    wait_until("export resumes", Duration::from_secs(20), || {
        let (client, receiver) = (client.clone(), &receiver);
        async move {
            let response = get(&client, format!("http://{addr}/after")).await;
            assert_eq!(response.status(), 200);
            receiver
                .spans()
                .iter()
                .any(|s| s.attr_str("url.path") == Some("/after"))
        }
    })
    .await;
    assert!(stats.snapshot()[1] > 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_refusing_collector_costs_requests_nothing_and_export_resumes() {
    outage(Down::Refusing(RefusingPort::new())).await;
}

#[tokio::test]
async fn a_black_holed_collector_costs_requests_nothing_and_export_resumes() {
    let (collector, hole) = black_hole().await;
    outage(Down::Hole(collector, hole)).await;
}

/// A slow collector: a TCP relay to `to` that holds every chunk of the collector's answers
/// for `delay` before passing it on.
async fn slow_relay(to: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(to).await else {
                continue;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            tokio::spawn(async move {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = server_read.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_slow_collector_costs_requests_nothing() {
    let receiver = Receiver::start().await;
    let grpc: SocketAddr = receiver
        .grpc_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    // Every answer takes at least 200 ms, close to the 300 ms export timeout.
    let collector = slow_relay(grpc, Duration::from_millis(200)).await;
    let upstream = echo_server("app").await;
    let toml = config(upstream.addr, "inbound", &format!("http://{collector}"), "");
    let proxy = start_proxy(&toml).await;
    let addr = proxy.listener_addr("main").unwrap();
    all_succeed(addr, 300).await;
    assert!(proxy.span_sink().queue_depth() <= 64);
    // Export keeps making progress through the slow collector; what did not fit meanwhile
    // is counted, and every span is accounted for once the queue has drained.
    let stats = proxy.span_sink().stats().clone();
    wait_until(
        "every span is exported or counted",
        Duration::from_secs(20),
        || {
            let stats = stats.clone();
            let depth = proxy.span_sink().queue_depth();
            async move {
                let [started, exported, dropped, failed] = stats.snapshot();
                depth == 0 && exported > 0 && exported + dropped + failed == started
            }
        },
    )
    .await;
    assert!(!receiver.spans().is_empty());
    proxy.shutdown().await;
}

/// An upstream that reads a request head, then does `then` with the socket.
async fn raw_upstream<F, Fut>(then: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            tokio::spawn(then(stream));
        }
    });
    addr
}

/// Closes with a TCP reset (SO_LINGER 0) rather than a clean FIN. A zero linger never
/// blocks on drop, which is what the deprecation warns about.
#[allow(deprecated)]
fn reset(stream: TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Reads until the peer closes the connection, then counts it.
async fn wait_for_close(mut stream: TcpStream, closed: Arc<AtomicUsize>) {
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink).await;
    closed.fetch_add(1, Ordering::SeqCst);
}

const PARTIAL_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789";

#[tokio::test]
async fn broken_upstreams_end_in_the_right_status_and_span() {
    let refused = refusing_addr();
    let reset_before_headers = raw_upstream(|s| async move { reset(s) }).await;
    // The two upstreams that keep their side open count when the proxy closes it: a request
    // given up on must not leave its upstream connection behind.
    let closed = Arc::new(AtomicUsize::new(0));
    let c = closed.clone();
    let silent = raw_upstream(move |s| wait_for_close(s, c.clone())).await;
    // Resets once the client has the response head (so the reset lands mid-body).
    let head_received = Gate::default();
    let gate = head_received.clone();
    let reset_mid_body = raw_upstream(move |mut s| {
        let gate = gate.clone();
        async move {
            s.write_all(PARTIAL_HEAD).await.unwrap();
            s.flush().await.unwrap();
            gate.notified().await;
            reset(s);
        }
    })
    .await;
    let c = closed.clone();
    let stalled_body = raw_upstream(move |mut s| {
        let closed = c.clone();
        async move {
            s.write_all(PARTIAL_HEAD).await.unwrap();
            wait_for_close(s, closed).await;
        }
    })
    .await;

    // (upstream, status the client gets or None for an aborted body, span error.type)
    let cases = [
        ("refused", refused, Some(502), "connect_error"),
        (
            "reset before headers",
            reset_before_headers,
            Some(502),
            "upstream_reset",
        ),
        ("headers never sent", silent, Some(504), "timeout"),
        ("reset mid-body", reset_mid_body, None, "upstream_reset"),
        ("body stalls", stalled_body, None, "timeout"),
    ];
    for (what, upstream, status, error_type) in cases {
        let receiver = Receiver::start().await;
        let toml = config(upstream, "outbound", &receiver.grpc_url(), "");
        let proxy = start_proxy(&toml).await;
        let addr = proxy.listener_addr("main").unwrap();
        let client = http1_client();
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            client.request(
                http::Request::get(format!("http://{addr}/"))
                    .body(full(""))
                    .unwrap(),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: hung"))
        .unwrap();
        match status {
            Some(status) => {
                assert_eq!(response.status(), status, "{what}");
                assert_eq!(response.headers()["x-hoptrace-error"], error_type, "{what}");
            }
            None => {
                // Headers were already sent: the body is cut off, never completed silently.
                assert_eq!(response.status(), 200, "{what}");
                head_received.notify_one();
                let body =
                    tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
                        .await
                        .unwrap_or_else(|_| panic!("{what}: body hung"));
                assert!(body.is_err(), "{what}: the body ended as if complete");
            }
        }
        let spans = receiver.wait_for_spans(1).await;
        assert_eq!(spans.len(), 1, "{what}: {spans:#?}");
        assert_eq!(spans[0].kind, 3, "{what}");
        assert_eq!(spans[0].attr_str("error.type"), Some(error_type), "{what}");
        assert_eq!(spans[0].status_code, 2, "{what}");
        // Nothing left behind: the upstreams that kept their side open saw the proxy close
        // it, and at most the client's one kept-alive connection is open on the listener.
        if matches!(what, "headers never sent" | "body stalls") {
            let expected = if what == "body stalls" { 2 } else { 1 };
            wait_until(
                "the proxy closed its upstream connection",
                Duration::from_secs(10),
                || {
                    let closed = closed.clone();
                    async move { closed.load(Ordering::SeqCst) >= expected }
                },
            )
            .await;
        }
        let admin = proxy.admin_addr();
        wait_until(
            "the client connections are accounted",
            Duration::from_secs(10),
            || {
                let client = client.clone();
                async move {
                    let metrics =
                        body_string(get(&client, format!("http://{admin}/metrics")).await).await;
                    metrics
                        .lines()
                        .find(|l| {
                            l.starts_with("hoptrace_downstream_connections_open{listener=\"main\"}")
                        })
                        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                        .is_some_and(|open| open <= 1)
                }
            },
        )
        .await;
        proxy.shutdown().await;
    }
}
