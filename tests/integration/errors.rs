//! Failures become the right status codes, with a plain-text body and `x-hoptrace-error`;
//! balancing spreads load and skips a dead endpoint.

use crate::common;

use std::time::{Duration, Instant};

use common::*;

/// An address on loopback where nothing listens: connecting is refused.
async fn dead_addr() -> std::net::SocketAddr {
    refusing_addr()
}

fn config_with(endpoints: &[std::net::SocketAddr], extra: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
[service]
name = "errors"
[admin]
bind = "127.0.0.1:0"
[tracing]
exporter = "none"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "inbound"
max_header_bytes = 8192
[[routes]]
listener = "main"
upstream = "app"
[upstreams.app]
endpoints = [{}]
{extra}
"#,
        list.join(", ")
    )
}

#[tokio::test]
async fn refused_endpoint_is_a_502() {
    let proxy = start_proxy(&config_with(&[dead_addr().await], "")).await;
    let addr = proxy.listener_addr("main").unwrap();
    for client in [http1_client(), http2_client()] {
        let response = get(&client, format!("http://{addr}/")).await;
        assert_eq!(response.status(), 502);
        assert_eq!(response.headers()["x-hoptrace-error"], "connect_error");
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            body_string(response).await,
            "hoptrace: upstream connection failed\n"
        );
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn slow_upstream_is_a_504_after_request_timeout() {
    // The upstream answers after 30 s; request_timeout is 300 ms. The 504 must come well
    // before the answer would (the 10 s bound only catches a request_timeout that is ignored,
    // whatever the machine's speed), and not before the timeout.
    let upstream = serve(|_req| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        text(200, "too late")
    })
    .await;
    let timeout = Duration::from_millis(300);
    let proxy = start_proxy(&config_with(
        &[upstream.addr],
        "request_timeout = \"300ms\"",
    ))
    .await;
    let addr = proxy.listener_addr("main").unwrap();
    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        get(&http1_client(), format!("http://{addr}/slow")),
    )
    .await
    .expect("no response within 10 s: request_timeout was not applied");
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() >= timeout);
    assert_eq!(response.headers()["x-hoptrace-error"], "timeout");
    assert_eq!(
        body_string(response).await,
        "hoptrace: upstream timed out\n"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_get_400_and_oversized_headers_431() {
    let upstream = echo_server("app").await;
    let proxy = start_proxy(&config_with(&[upstream.addr], "")).await;
    let addr = proxy.listener_addr("main").unwrap();

    let response = raw_http(addr, b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");

    let response = raw_http(addr, b"GET /\x01bad HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");

    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let response = raw_http(addr, big.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");

    // Just under the limit passes.
    let fits = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(6_000)
    );
    let response = raw_http(addr, fits.as_bytes()).await;
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "{}",
        &response[..60.min(response.len())]
    );

    let response = raw_http(addr, b"CONNECT pay:443 HTTP/1.1\r\nHost: pay:443\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn round_robin_spreads_requests_and_skips_a_dead_endpoint() {
    let (a, b) = (echo_server("a").await, echo_server("b").await);
    let proxy = start_proxy(&config_with(&[a.addr, b.addr], "")).await;
    let addr = proxy.listener_addr("main").unwrap();
    let client = http1_client();
    let mut served = Vec::new();
    for _ in 0..10 {
        let response = get(&client, format!("http://{addr}/")).await;
        served.push(
            response.headers()["x-upstream"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(served, ["a", "b", "a", "b", "a", "b", "a", "b", "a", "b"]);
    proxy.shutdown().await;

    // A dead endpoint between two live ones: the one request that meets it gets a 502 and
    // puts it in back-off; every later request goes to a live endpoint.
    let dead = dead_addr().await;
    let proxy = start_proxy(&config_with(
        &[a.addr, dead, b.addr],
        "failure_backoff = \"1h\"",
    ))
    .await;
    let addr = proxy.listener_addr("main").unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..12 {
        let response = get(&client, format!("http://{addr}/")).await;
        outcomes.push(match response.headers().get("x-upstream") {
            Some(name) => name.to_str().unwrap().to_string(),
            None => format!("{}", response.status().as_u16()),
        });
    }
    assert_eq!(
        outcomes.iter().filter(|o| *o == "502").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], "502", "{outcomes:?}");
    let after: Vec<&String> = outcomes[2..].iter().collect();
    assert!(after.iter().all(|o| *o == "a" || *o == "b"), "{outcomes:?}");
    assert!(
        after.iter().any(|o| *o == "a") && after.iter().any(|o| *o == "b"),
        "{outcomes:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn p2c_balances_and_skips_a_dead_endpoint() {
    let (a, b) = (echo_server("a").await, echo_server("b").await);
    let dead = dead_addr().await;
    let proxy = start_proxy(&config_with(
        &[a.addr, dead, b.addr],
        "balance = \"p2c\"\nfailure_backoff = \"1h\"",
    ))
    .await;
    let addr = proxy.listener_addr("main").unwrap();
    let client = http1_client();
    let mut failures = 0;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..60 {
        let response = get(&client, format!("http://{addr}/")).await;
        match response.headers().get("x-upstream") {
            Some(name) => {
                seen.insert(name.to_str().unwrap().to_string());
            }
            None => {
                assert_eq!(response.status(), 502);
                failures += 1;
            }
        }
    }
    // The dead endpoint costs at most one request before its back-off.
    assert!(failures <= 1, "{failures} failures");
    assert_eq!(seen.len(), 2, "{seen:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_endpoint_is_used_again_after_its_failure_backoff() {
    let a = echo_server("a").await;
    let port = RefusingPort::new();
    let dead = port.addr();
    let backoff = Duration::from_secs(2);
    let proxy = start_proxy(&config_with(&[a.addr, dead], "failure_backoff = \"2s\"")).await;
    let addr = proxy.listener_addr("main").unwrap();
    let client = http1_client();

    // Round robin: the live endpoint, then the dead one, which refuses: 502 and back-off.
    let response = get(&client, format!("http://{addr}/")).await;
    assert_eq!(response.headers()["x-upstream"], "a");
    let failed_at = Instant::now();
    let response = get(&client, format!("http://{addr}/")).await;
    assert_eq!(response.status(), 502);

    // The endpoint comes back at once, at the same address. Requests that ended within the
    // back-off (counted from before the failure, so surely within it) went to "a"; once it
    // expires, round robin sends one to the revived endpoint.
    let listener = port.listen();
    let _revived = serve_on(
        listener,
        |_req| async {
            http::Response::builder()
                .header("x-upstream", "revived")
                .body(full("back"))
                .unwrap()
        },
        None,
    );
    let mut outcomes = Vec::new();
    loop {
        let response = get(&client, format!("http://{addr}/")).await;
        let who = match response.headers().get("x-upstream") {
            Some(name) => name.to_str().unwrap().to_string(),
            None => response.status().as_str().to_string(),
        };
        if failed_at.elapsed() < backoff {
            assert_eq!(who, "a", "used during its back-off: {outcomes:?}");
        }
        outcomes.push(who);
        if outcomes.last().is_some_and(|w| w == "revived") {
            break;
        }
        assert!(
            failed_at.elapsed() < Duration::from_secs(20),
            "never used again after its back-off: {outcomes:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(failed_at.elapsed() >= backoff, "{outcomes:?}");
    proxy.shutdown().await;
}
