//! Requests and responses cross the proxy intact: every listener role, HTTP/1.1 and HTTP/2
//! clients, HTTP/1.1 and h2c upstreams; hop-by-hop headers removed, X-Forwarded-* added.

use crate::common;

use common::*;
use http::Request;

#[tokio::test]
async fn every_role_and_protocol_passes_requests_intact() {
    let upstream = echo_server("app").await;
    for role in ["inbound", "outbound", "gateway"] {
        for upstream_protocol in ["http1", "http2"] {
            let proxy = start_proxy(&simple_config(role, upstream.addr, upstream_protocol)).await;
            let addr = proxy.listener_addr("main").unwrap();
            for (client_name, client) in [("h1", http1_client()), ("h2", http2_client())] {
                let case = format!("{role}/{client_name} client/{upstream_protocol} upstream");
                let request = Request::post(format!("http://{addr}/orders/42?x=1&y=%20"))
                    .header("x-custom", "one")
                    .header("x-custom", "two")
                    .header("content-type", "text/plain")
                    .body(full("payload bytes"))
                    .unwrap();
                let response = client.request(request).await.unwrap();
                assert_eq!(response.status(), 200, "{case}");
                assert_eq!(response.headers()["x-upstream"], "app", "{case}");
                assert_eq!(
                    response.headers()["content-type"],
                    "application/json",
                    "{case}"
                );
                let echo = body_json(response).await;
                assert_eq!(echo["method"], "POST", "{case}");
                let uri = echo["uri"].as_str().unwrap();
                assert!(uri.ends_with("/orders/42?x=1&y=%20"), "{case}: {uri}");
                let expected_version = if upstream_protocol == "http2" {
                    "HTTP/2.0"
                } else {
                    "HTTP/1.1"
                };
                assert_eq!(echo["version"], expected_version, "{case}");
                assert_eq!(echo["body"], "payload bytes", "{case}");
                let headers = &echo["headers"];
                assert_eq!(
                    headers["x-custom"],
                    serde_json::json!(["one", "two"]),
                    "{case}"
                );
                assert_eq!(
                    headers["content-type"],
                    serde_json::json!(["text/plain"]),
                    "{case}"
                );
                assert_eq!(
                    headers["x-forwarded-for"],
                    serde_json::json!(["127.0.0.1"]),
                    "{case}"
                );
                assert_eq!(
                    headers["x-forwarded-proto"],
                    serde_json::json!(["http"]),
                    "{case}"
                );
                assert_eq!(
                    headers["x-forwarded-host"],
                    serde_json::json!([addr.to_string()]),
                    "{case}"
                );
                if upstream_protocol == "http1" {
                    // The app sees the host the client asked for, not the endpoint address.
                    assert_eq!(
                        headers["host"],
                        serde_json::json!([addr.to_string()]),
                        "{case}"
                    );
                }
            }
            proxy.shutdown().await;
        }
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let upstream = serve(|_req| async {
        http::Response::builder()
            .header("connection", "x-internal-hop")
            .header("x-internal-hop", "secret")
            .header("keep-alive", "timeout=5")
            .header("x-end-to-end", "kept")
            .body(full("ok"))
            .unwrap()
    })
    .await;
    let echo = echo_server("echo").await;
    let proxy = start_proxy(&simple_config("inbound", echo.addr, "http1")).await;
    let addr = proxy.listener_addr("main").unwrap();
    let client = http1_client();

    // Request direction, raw over TCP so the client sends exactly these headers.
    let raw = "GET /x HTTP/1.1\r\nHost: svc.local\r\nConnection: keep-alive, x-hop-a\r\n\
         X-Hop-A: 1\r\nKeep-Alive: timeout=9\r\nProxy-Connection: keep-alive\r\n\
         Proxy-Authorization: Basic c2VjcmV0\r\nTE: trailers\r\nX-Forwarded-For: 203.0.113.9\r\n\
         X-Forwarded-Proto: https\r\nX-Keep: 1\r\n\r\n";
    let response = raw_http(addr, raw.as_bytes()).await;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let echo_json: serde_json::Value = serde_json::from_str(body).unwrap();
    let headers = echo_json["headers"].as_object().unwrap();
    for gone in [
        "connection",
        "x-hop-a",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
    ] {
        assert!(
            !headers.contains_key(gone),
            "{gone} was forwarded: {headers:?}"
        );
    }
    assert_eq!(headers["te"], serde_json::json!(["trailers"]));
    assert_eq!(headers["x-keep"], serde_json::json!(["1"]));
    assert_eq!(headers["host"], serde_json::json!(["svc.local"]));
    assert_eq!(
        headers["x-forwarded-for"],
        serde_json::json!(["203.0.113.9, 127.0.0.1"])
    );
    assert_eq!(headers["x-forwarded-proto"], serde_json::json!(["https"]));
    assert_eq!(
        headers["x-forwarded-host"],
        serde_json::json!(["svc.local"])
    );
    proxy.shutdown().await;

    // Response direction.
    let proxy = start_proxy(&simple_config("inbound", upstream.addr, "http1")).await;
    let addr = proxy.listener_addr("main").unwrap();
    let response = get(&client, format!("http://{addr}/")).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-internal-hop").is_none());
    assert!(response.headers().get("keep-alive").is_none());
    assert_eq!(response.headers()["x-end-to-end"], "kept");
    assert_eq!(body_string(response).await, "ok");
    proxy.shutdown().await;
}

/// An upstream that records, for each request, the address of the connection it came on.
async fn peer_recording_upstream() -> (std::net::SocketAddr, Peers, tokio::task::JoinHandle<()>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peers = Peers::default();
    let recorded = peers.clone();
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    recorded.lock().unwrap().push(peer);
                    async { Ok::<_, std::convert::Infallible>(text(200, "ok")) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, peers, task)
}

type Peers = std::sync::Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>>;

#[tokio::test]
async fn upstream_connections_are_pooled_and_reused() {
    for (protocol, pool) in [("http1", ""), ("http2", ""), ("http1", "no pool")] {
        let case = format!("{protocol} upstream {pool}");
        let (upstream, peers, task) = peer_recording_upstream().await;
        let mut config = simple_config("inbound", upstream, protocol);
        if pool == "no pool" {
            config.push_str("max_idle_per_endpoint = 0\n");
        }
        let proxy = start_proxy(&config).await;
        let addr = proxy.listener_addr("main").unwrap();
        // One after another, each from a new client connection: only the proxy's pool can
        // carry them on one upstream connection.
        for _ in 0..5 {
            let response = get(&http1_client(), format!("http://{addr}/")).await;
            assert_eq!(response.status(), 200, "{case}");
            assert_eq!(body_string(response).await, "ok", "{case}");
        }
        let peers = peers.lock().unwrap().clone();
        assert_eq!(peers.len(), 5, "{case}");
        let distinct: std::collections::BTreeSet<_> = peers.iter().collect();
        if pool == "no pool" {
            // The control: without pooling every request opens its own connection, so the
            // check above can tell the difference.
            assert_eq!(distinct.len(), 5, "{case}: {peers:?}");
        } else {
            assert_eq!(distinct.len(), 1, "{case}: {peers:?}");
        }
        proxy.shutdown().await;
        task.abort();
    }
}
