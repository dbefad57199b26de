//! Hostile clients, on the wire: oversized and too many headers (431), a client that trickles
//! its headers or sends nothing (cut off), request smuggling forms (400, nothing forwarded ambiguously), the
//! per-route body limit (413) and the per-listener connection limit.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upstream that counts the requests it received whole (head and complete body), and
/// answers with the body's length.
async fn counting_upstream() -> (TestServer, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let server = serve(move |req: http::Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            match req.into_body().collect().await {
                Ok(body) => {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let len = body.to_bytes().len().to_string();
                    http::Response::new(full(len))
                }
                Err(_) => text(500, "aborted"),
            }
        }
    })
    .await;
    (server, count)
}

fn config(upstream: std::net::SocketAddr, listener_extra: &str, route_extra: &str) -> String {
    format!(
        r#"
[service]
name = "hostile"
[admin]
bind = "127.0.0.1:0"
[tracing]
exporter = "none"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "inbound"
{listener_extra}
[[routes]]
listener = "main"
upstream = "app"
{route_extra}
[upstreams.app]
endpoints = ["{upstream}"]
"#
    )
}

/// Reads until the server closes the connection (bounded: panics after 10 s).
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the proxy did not close the connection");
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn header_limits_answer_431() {
    let (upstream, count) = counting_upstream().await;
    let proxy = start_proxy(&config(upstream.addr, "max_header_bytes = 8192", "")).await;
    let addr = proxy.listener_addr("main").unwrap();

    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let response = raw_http(addr, big.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");

    // The default max_headers is 100 fields.
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    let response = raw_http(addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    assert_eq!(count.load(Ordering::SeqCst), 0);

    // hyper answered these itself: no request reached our code (no traceresponse).
    assert!(!response.contains("traceresponse"), "{response}");
    // Well under the limit passes (the upstream, also hyper, allows 100 fields, and the
    // proxy adds its forwarding headers).
    let fits: String = (0..80).map(|i| format!("X-H{i}: v\r\n")).collect();
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{fits}\r\n");
    let response = raw_http(addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn max_headers_is_configurable() {
    let (upstream, count) = counting_upstream().await;
    let proxy = start_proxy(&config(upstream.addr, "max_headers = 5", "")).await;
    let addr = proxy.listener_addr("main").unwrap();
    let request = "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n";
    let response = raw_http(addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    let request = "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    let response = raw_http(addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off() {
    let (upstream, count) = counting_upstream().await;
    let proxy = start_proxy(&config(
        upstream.addr,
        "header_read_timeout = \"300ms\"",
        "",
    ))
    .await;
    let addr = proxy.listener_addr("main").unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Slowloris: one more header byte every 50 ms, never the end of the section. The proxy
    // must close the connection although bytes keep arriving.
    let (mut read, mut write) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..400 {
            if write.write_all(b"X").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    });
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the slow client was not cut off");
    let response = String::from_utf8_lossy(&buf);
    // hyper closes without a response, or with 408.
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 408"),
        "{response}"
    );
    trickle.abort();
    assert_eq!(count.load(Ordering::SeqCst), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_cut_off() {
    let (upstream, count) = counting_upstream().await;
    let proxy = start_proxy(&config(
        upstream.addr,
        "header_read_timeout = \"300ms\"",
        "",
    ))
    .await;
    let addr = proxy.listener_addr("main").unwrap();
    // Connects and stays silent: before its first byte, hoptrace cannot know HTTP/1.1 from
    // h2c, and hyper's own header timer has not started yet.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the silent client was not cut off");
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    // A client that speaks at once is served as before.
    let response = raw_http(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn smuggling_forms_are_rejected() {
    let (upstream, count) = counting_upstream().await;
    let proxy = start_proxy(&config(upstream.addr, "", "")).await;
    let addr = proxy.listener_addr("main").unwrap();

    // Each of these must get a 400 and forward nothing.
    let rejected: &[(&str, &[u8])] = &[
        (
            "two different Content-Length values",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "a Content-Length list",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!",
        ),
        (
            "a non-numeric Content-Length",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        ),
        (
            "a Transfer-Encoding that does not end in chunked",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "obsolete line folding",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
        ),
        (
            "a space before the colon",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        ),
    ];
    for (what, request) in rejected {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let response = read_to_close(&mut stream).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{what}: {response}");
    }
    assert_eq!(count.load(Ordering::SeqCst), 0, "something was forwarded");

    // An invalid chunk size: the head may already be on its way upstream, but the upstream
    // never gets a complete request, and the client gets a 400.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
        .await
        .unwrap();
    let response = read_to_close(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.contains("x-hoptrace-error: bad_request"),
        "{response}"
    );
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "a bad chunked body was forwarded"
    );

    // Content-Length and Transfer-Encoding together (RFC 9112 §6.1, §6.3), in either order,
    // on a fresh connection or after a request on a kept-alive one: 400, nothing forwarded,
    // the connection closed, so the bytes after it never become a second, smuggled request.
    let heads = [
        "Content-Length: 4\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 4",
        "transfer-encoding: chunked\r\ncontent-length: 4",
    ];
    for head in heads {
        for after_a_good_request in [false, true] {
            let before = count.load(Ordering::SeqCst);
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let first = if after_a_good_request {
                "GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
            } else {
                ""
            };
            let request = format!(
                "{first}POST / HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n\
                 5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let response = read_to_close(&mut stream).await;
            let what = format!("{head:?} (after a good request: {after_a_good_request})");
            let responses: Vec<&str> = response
                .split("HTTP/1.1 ")
                .filter(|r| !r.is_empty())
                .collect();
            let expected = if after_a_good_request { 2 } else { 1 };
            assert_eq!(responses.len(), expected, "{what}: {response}");
            if after_a_good_request {
                assert!(responses[0].starts_with("200"), "{what}: {response}");
            }
            let last = responses[expected - 1];
            assert!(last.starts_with("400"), "{what}: {response}");
            assert!(
                last.contains("x-hoptrace-error: bad_request"),
                "{what}: {response}"
            );
            assert!(
                last.ends_with(
                    "both Content-Length and Transfer-Encoding; request not forwarded\n"
                ),
                "{what}: {response}"
            );
            assert_eq!(
                count.load(Ordering::SeqCst) - before,
                usize::from(after_a_good_request),
                "{what}: only the good request may be forwarded"
            );
        }
    }

    // The same guard leaves ordinary chunked and length-framed requests, kept alive one after
    // another on one connection, alone.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let before = count.load(Ordering::SeqCst);
    stream
        .write_all(
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
              POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 66\r\n\r\n\
              GET /c HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n\
              GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let response = read_to_close(&mut stream).await;
    assert_eq!(response.matches("HTTP/1.1 200").count(), 3, "{response}");
    assert!(!response.contains("HTTP/1.1 400"), "{response}");
    assert_eq!(count.load(Ordering::SeqCst) - before, 3);
    proxy.shutdown().await;
}

#[tokio::test]
async fn request_bodies_over_the_route_limit_get_413() {
    let (upstream, count) = counting_upstream().await;
    let proxy = start_proxy(&config(upstream.addr, "", "max_request_body = \"1KiB\"")).await;
    let addr = proxy.listener_addr("main").unwrap();

    // A declared length over the limit: refused before anything is sent upstream.
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n{}",
        "a".repeat(1025)
    );
    let response = raw_http(addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("x-hoptrace-error: request_body_too_large"));

    // A chunked body that passes the limit mid-stream: the upstream sees an aborted request,
    // the client a 413.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let chunk = format!("200\r\n{}\r\n", "b".repeat(0x200));
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..3 {
        stream.write_all(chunk.as_bytes()).await.unwrap();
    }
    let response = read_to_close(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert_eq!(count.load(Ordering::SeqCst), 0);

    // Exactly the limit passes, declared or chunked.
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n{}",
        "a".repeat(1024)
    );
    let response = raw_http(addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("1024"), "{response}");
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunk}{chunk}0\r\n\r\n"
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = read_to_close(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn connections_over_max_connections_are_closed_and_counted() {
    let (upstream, _count) = counting_upstream().await;
    let proxy = start_proxy(&config(upstream.addr, "max_connections = 2", "")).await;
    let addr = proxy.listener_addr("main").unwrap();
    let admin = proxy.admin_addr();

    // Two connections held open, each having served a request (so both are counted open).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    // The third is accepted and closed at once, without a response.
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let response = read_to_close(&mut third).await;
    assert_eq!(response, "");
    let metrics = body_string(get(&http1_client(), format!("http://{admin}/metrics")).await).await;
    assert!(
        metrics.contains("hoptrace_downstream_connections_rejected_total{listener=\"main\"} 1"),
        "{metrics}"
    );

    // Once one closes, a new connection is served again.
    drop(held.pop());
    let client = http1_client();
    wait_until("a connection slot is free", Duration::from_secs(10), || {
        let client = client.clone();
        async move {
            let request = http::Request::get(format!("http://{addr}/"))
                .body(full(""))
                .unwrap();
            client
                .request(request)
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    proxy.shutdown().await;
}
