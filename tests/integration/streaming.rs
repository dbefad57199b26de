//! Bodies stream through the proxy in both directions: nothing is buffered whole. Each test
//! makes one side wait for the other to see the first chunk before it sends the last, so a
//! proxy that buffered would deadlock (and the test fail at its deadline) instead of passing.
//! A slow body also shows when spans end: after the last chunk, not at the response headers.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::{mpsc, oneshot};

const DEADLINE: Duration = Duration::from_secs(10);

fn channel_body() -> (mpsc::Sender<Result<Frame<Bytes>, BoxError>>, TestBody) {
    let (tx, rx) = mpsc::channel(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (tx, StreamBody::new(stream).boxed())
}

#[tokio::test]
async fn response_chunks_reach_the_client_before_the_upstream_sends_the_last() {
    for (client_protocol, upstream_protocol) in [("h1", "http1"), ("h2", "http2"), ("h1", "http2")]
    {
        let release = Gate::default();
        let gate = release.clone();
        let upstream = serve(move |_req| {
            let gate = gate.clone();
            async move {
                let (tx, body) = channel_body();
                tokio::spawn(async move {
                    tx.send(Ok(Frame::data(Bytes::from_static(b"first chunk"))))
                        .await
                        .unwrap();
                    // The last chunk only after the client has seen the first.
                    gate.notified().await;
                    tx.send(Ok(Frame::data(Bytes::from_static(b"last chunk"))))
                        .await
                        .unwrap();
                });
                Response::new(body)
            }
        })
        .await;
        let proxy = start_proxy(&simple_config("inbound", upstream.addr, upstream_protocol)).await;
        let addr = proxy.listener_addr("main").unwrap();
        let client = if client_protocol == "h2" {
            http2_client()
        } else {
            http1_client()
        };
        let response =
            tokio::time::timeout(DEADLINE, get(&client, format!("http://{addr}/stream")))
                .await
                .expect("response headers not streamed through");
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let first = tokio::time::timeout(DEADLINE, body.frame())
            .await
            .expect("first chunk not streamed through")
            .unwrap()
            .unwrap();
        assert_eq!(first.into_data().unwrap(), "first chunk");
        release.notify_one();
        let rest = tokio::time::timeout(DEADLINE, body.collect())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest.to_bytes(), "last chunk");
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn request_chunks_reach_the_upstream_before_the_client_sends_the_last() {
    for (client_protocol, upstream_protocol) in [("h1", "http1"), ("h2", "http2")] {
        let (seen_tx, seen_rx) = oneshot::channel::<Bytes>();
        let seen_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(seen_tx)));
        let upstream = serve(move |req: Request<hyper::body::Incoming>| {
            let seen_tx = seen_tx.clone();
            async move {
                let mut body = req.into_body();
                let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
                let sender = seen_tx.lock().unwrap().take().unwrap();
                sender.send(first.clone()).unwrap();
                let rest = body.collect().await.unwrap().to_bytes();
                Response::new(full(format!("{} + {}", first.len(), rest.len())))
            }
        })
        .await;
        let proxy = start_proxy(&simple_config("outbound", upstream.addr, upstream_protocol)).await;
        let addr = proxy.listener_addr("main").unwrap();
        let client = if client_protocol == "h2" {
            http2_client()
        } else {
            http1_client()
        };
        let (tx, body) = channel_body();
        let request = Request::post(format!("http://{addr}/upload"))
            .body(body)
            .unwrap();
        let pending = tokio::spawn(async move { client.request(request).await });
        tx.send(Ok(Frame::data(Bytes::from(vec![b'x'; 1000]))))
            .await
            .unwrap();
        let first = tokio::time::timeout(DEADLINE, seen_rx)
            .await
            .expect("first request chunk not streamed through")
            .unwrap();
        assert_eq!(first.len(), 1000);
        tx.send(Ok(Frame::data(Bytes::from(vec![b'y'; 500]))))
            .await
            .unwrap();
        drop(tx);
        let response = tokio::time::timeout(DEADLINE, pending)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(body_string(response).await, "1000 + 500");
        proxy.shutdown().await;
    }
}

/// An HTTP/1.1 upstream may answer before the request body has ended (here 413 while the
/// client is still sending) and stop reading. The answer reaches the client at once, and the
/// upstream connection, with part of a body on it, is not used again: the next request
/// gets a new one (the raw upstream never answers a second request on a connection).
#[tokio::test]
async fn an_upstream_answering_before_the_request_body_ends() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let server = tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                let answer = b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\n\r\ntoo big!";
                socket.write_all(answer).await.unwrap();
                // Reads (and ignores) whatever else comes, until the proxy closes.
                while socket.read(&mut buf).await.unwrap_or(0) > 0 {}
            });
        }
    });
    let proxy = start_proxy(&simple_config("outbound", upstream, "http1")).await;
    let addr = proxy.listener_addr("main").unwrap();
    let client = http1_client();
    let (tx, body) = channel_body();
    let request = Request::post(format!("http://{addr}/upload"))
        .body(body)
        .unwrap();
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.request(request).await }
    });
    tx.send(Ok(Frame::data(Bytes::from(vec![b'x'; 1000]))))
        .await
        .unwrap();
    let response = tokio::time::timeout(DEADLINE, pending)
        .await
        .expect("the early answer did not reach the client while its body was open")
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(body_string(response).await, "too big!");
    drop(tx);

    let second = tokio::time::timeout(DEADLINE, get(&client, format!("http://{addr}/again")))
        .await
        .expect("the second request went out on the half-used connection");
    assert_eq!(second.status(), 413);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    proxy.shutdown().await;
    server.abort();
}

/// "A span ends when the response body has been fully sent": the upstream writes five
/// chunks 80 ms apart, noting the wall clock just before writing each. The gateway's SERVER
/// and CLIENT spans start before the first chunk and end no earlier than the moment the
/// upstream wrote the last, so they cover the whole body time.
#[tokio::test]
async fn spans_end_after_the_last_body_chunk() {
    let receiver = common::otlp::Receiver::start().await;
    let written: Arc<Mutex<Vec<SystemTime>>> = Arc::default();
    let times = written.clone();
    let upstream = serve(move |_req| {
        let times = times.clone();
        async move {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                for i in 0..5 {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(80)).await;
                    }
                    times.lock().unwrap().push(SystemTime::now());
                    let chunk = Bytes::from(format!("chunk{i};"));
                    tx.send(Ok(Frame::data(chunk))).await.unwrap();
                }
            });
            Response::new(body)
        }
    })
    .await;
    let config = format!(
        r#"
[service]
name = "slow-body"
[admin]
bind = "127.0.0.1:0"
[tracing]
batch_delay = "10ms"
[tracing.otlp]
protocol = "http/protobuf"
endpoint = "{}"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "gateway"
[[routes]]
listener = "main"
upstream = "app"
[upstreams.app]
endpoints = ["{}"]
"#,
        receiver.http_url(),
        upstream.addr
    );
    let proxy = start_proxy(&config).await;
    let addr = proxy.listener_addr("main").unwrap();
    let response = get(&http1_client(), format!("http://{addr}/slow")).await;
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(DEADLINE, body_string(response))
        .await
        .unwrap();
    assert_eq!(body, "chunk0;chunk1;chunk2;chunk3;chunk4;");

    let spans = receiver.wait_for_spans(2).await;
    let nanos = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let written = written.lock().unwrap().clone();
    let (first, last) = (nanos(written[0]), nanos(written[4]));
    let mut kinds: Vec<i32> = spans.iter().map(|s| s.kind).collect();
    kinds.sort();
    assert_eq!(kinds, [2, 3], "a SERVER and a CLIENT span: {spans:#?}");
    for span in &spans {
        assert!(
            span.start_unix_nano <= first,
            "{}: starts {} ns after the first chunk",
            span.kind,
            span.start_unix_nano - first
        );
        assert!(
            span.end_unix_nano >= last,
            "{}: ends {} ns before the upstream wrote its last chunk",
            span.kind,
            last - span.end_unix_nano
        );
        assert!(span.end_unix_nano - span.start_unix_nano >= last - first);
    }
    proxy.shutdown().await;
}
