//! Routing through the real proxy: host (exact and wildcard), path prefix, method and header
//! matchers, no-route 404, and absolute-form targets on an outbound listener (HTTP_PROXY).

use crate::common;

use common::*;
use http::Request;

fn routing_config(
    a: std::net::SocketAddr,
    b: std::net::SocketAddr,
    c: std::net::SocketAddr,
) -> String {
    format!(
        r#"
[service]
name = "routing"
[admin]
bind = "127.0.0.1:0"
[tracing]
exporter = "none"
[[listeners]]
name = "out"
bind = "127.0.0.1:0"
role = "outbound"

[[routes]]
listener = "out"
host = "payments"
upstream = "a"

[[routes]]
listener = "out"
host = "*.shop.internal"
upstream = "b"

[[routes]]
listener = "out"
host = "api.shop.internal"
path_prefix = "/v2"
upstream = "c"

[[routes]]
listener = "out"
host = "writes"
methods = ["POST", "PUT"]
upstream = "a"

[[routes]]
listener = "out"
host = "writes"
headers = {{ "x-canary" = "yes" }}
upstream = "c"

[upstreams.a]
endpoints = ["{a}"]
[upstreams.b]
endpoints = ["{b}"]
[upstreams.c]
endpoints = ["{c}"]
"#
    )
}

async fn served_by(client: &TestClient, request: Request<TestBody>) -> (u16, String) {
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let server = response
        .headers()
        .get("x-upstream")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_else(|| {
            assert_eq!(
                response
                    .headers()
                    .get("x-hoptrace-error")
                    .map(|v| v.to_str().unwrap()),
                Some("no_route")
            );
            "-".to_string()
        });
    (status, server)
}

fn req(method: &str, url: String, host: &str) -> Request<TestBody> {
    Request::builder()
        .method(method)
        .uri(url)
        .header("host", host)
        .body(full(""))
        .unwrap()
}

#[tokio::test]
async fn routes_by_host_wildcard_path_method_and_header() {
    let (a, b, c) = (
        echo_server("a").await,
        echo_server("b").await,
        echo_server("c").await,
    );
    let proxy = start_proxy(&routing_config(a.addr, b.addr, c.addr)).await;
    let addr = proxy.listener_addr("out").unwrap();
    let client = http1_client();
    let url = |path: &str| format!("http://{addr}{path}");

    let cases: Vec<(Request<TestBody>, (u16, &str))> = vec![
        (req("GET", url("/x"), "payments"), (200, "a")),
        (req("GET", url("/x"), "payments:8080"), (200, "a")),
        (req("GET", url("/x"), "PAYMENTS"), (200, "a")),
        (req("GET", url("/x"), "www.shop.internal"), (200, "b")),
        (req("GET", url("/x"), "a.b.shop.internal"), (200, "b")),
        // Exact host beats the wildcard, but only where its path prefix matches.
        (
            req("GET", url("/v2/items"), "api.shop.internal"),
            (200, "c"),
        ),
        (
            req("GET", url("/v1/items"), "api.shop.internal"),
            (200, "b"),
        ),
        // The wildcard needs a label before the suffix.
        (req("GET", url("/x"), "shop.internal"), (404, "-")),
        (req("GET", url("/x"), "unknown.example"), (404, "-")),
        (req("POST", url("/x"), "writes"), (200, "a")),
        (req("GET", url("/x"), "writes"), (404, "-")),
    ];
    for (request, expected) in cases {
        let what = format!("{} {:?}", request.method(), request.headers()["host"]);
        let (status, server) = served_by(&client, request).await;
        assert_eq!((status, server.as_str()), expected, "{what}");
    }
    let mut canary = req("GET", url("/x"), "writes");
    canary
        .headers_mut()
        .insert("x-canary", "yes".parse().unwrap());
    assert_eq!(served_by(&client, canary).await, (200, "c".to_string()));
    proxy.shutdown().await;
}

#[tokio::test]
async fn no_route_is_a_404_from_hoptrace_and_nothing_is_forwarded() {
    let a = echo_server("a").await;
    let proxy = start_proxy(&routing_config(a.addr, a.addr, a.addr)).await;
    let addr = proxy.listener_addr("out").unwrap();
    // Absolute-form naming the upstream's real address: still no route, never an open proxy.
    let raw = format!(
        "GET http://{}/secret HTTP/1.1\r\nHost: {}\r\n\r\n",
        a.addr, a.addr
    );
    let response = raw_http(addr, raw.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(
        response.contains("x-hoptrace-error: no_route"),
        "{response}"
    );
    assert!(response.contains("hoptrace: no route"), "{response}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn outbound_accepts_absolute_form_targets_like_an_http_proxy() {
    let (a, b, c) = (
        echo_server("a").await,
        echo_server("b").await,
        echo_server("c").await,
    );
    let proxy = start_proxy(&routing_config(a.addr, b.addr, c.addr)).await;
    let addr = proxy.listener_addr("out").unwrap();

    // What an app using HTTP_PROXY sends: the full URL as the request target. The target's
    // host wins over a conflicting Host header (RFC 9112 §3.2.2).
    let raw = "GET http://api.shop.internal/v2/cart?id=7 HTTP/1.1\r\nHost: payments\r\n\r\n";
    let response = raw_http(addr, raw.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split_once("\r\n\r\n").unwrap().1;
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(echo["server"], "c");
    assert_eq!(echo["uri"], "/v2/cart?id=7");
    assert_eq!(
        echo["headers"]["host"],
        serde_json::json!(["api.shop.internal"])
    );

    // And through a real, unmodified client told about the proxy only by HTTP_PROXY:
    // Python's urllib reads the variable and sends absolute-form requests.
    let script = "import urllib.request;\
        r = urllib.request.urlopen('http://payments:9000/charge', data=b'hello', timeout=10);\
        print(r.status); print(r.read().decode())";
    let output = tokio::process::Command::new("python3")
        .args(["-c", script])
        .env("HTTP_PROXY", format!("http://{addr}"))
        .env("http_proxy", format!("http://{addr}"))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .await
        .expect("python3 is needed for this test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (status, body) = stdout.split_once('\n').unwrap();
    assert_eq!(status, "200");
    let echo: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(echo["server"], "a");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body"], "hello");
    assert_eq!(echo["uri"], "/charge");
    proxy.shutdown().await;
}
