//! The admin `/traces` view: a gateway hop's SERVER and CLIENT spans, read back as JSON and as
//! the HTML waterfall, with an attacker-controlled captured header coming out escaped.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use http::{Request, StatusCode};
use serde_json::Value;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const REMOTE_PARENT: &str = "b7ad6b7169203331";
const HOSTILE: &str = "<script>alert(1)</script>";

fn config(upstream: SocketAddr) -> String {
    format!(
        r#"
[service]
name = "traces-test"
[admin]
bind = "127.0.0.1:0"
[tracing]
exporter = "none"
batch_delay = "10ms"
capture_request_headers = ["x-request-id"]
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "gateway"
[[routes]]
listener = "main"
path_prefix = "/checkout"
upstream = "app"
[upstreams.app]
endpoints = ["{upstream}"]
"#
    )
}

async fn send(addr: SocketAddr, headers: &[(&str, &str)]) {
    let mut request = Request::get(format!("http://{addr}/checkout?cart=7"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = http1_client()
        .request(request.body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    body_string(response).await;
}

async fn admin_get(admin: SocketAddr, query: &str) -> http::Response<hyper::body::Incoming> {
    get(&http1_client(), format!("http://{admin}/traces{query}")).await
}

/// Polls `/traces` until `trace_id` is kept with `spans` spans (a hop's spans may arrive in
/// different batches), then returns it.
async fn wait_for_trace(admin: SocketAddr, trace_id: &str, spans: u64) -> Value {
    let kept = || async {
        let body = body_json(admin_get(admin, "").await).await;
        body["traces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["trace_id"] == trace_id)
            .cloned()
    };
    wait_until("the trace in /traces", Duration::from_secs(5), || async {
        kept().await.is_some_and(|t| t["span_count"] == spans)
    })
    .await;
    kept().await.unwrap()
}

#[tokio::test]
async fn admin_traces_show_the_hop_as_json_and_html() {
    let upstream = echo_server("app").await;
    let proxy = start_proxy(&config(upstream.addr)).await;
    let addr = proxy.listener_addr("main").unwrap();
    let admin = proxy.admin_addr();

    let traceparent = format!("00-{TRACE_ID}-{REMOTE_PARENT}-01");
    send(
        addr,
        &[("traceparent", &traceparent), ("x-request-id", HOSTILE)],
    )
    .await;
    let trace = wait_for_trace(admin, TRACE_ID, 2).await;

    // JSON: the SERVER span continues the remote parent, the CLIENT span is its child.
    let spans = trace["spans"].as_array().unwrap();
    let server = &spans[0];
    let client = &spans[1];
    assert_eq!(server["kind"], "server", "{trace:#}");
    assert_eq!(client["kind"], "client", "{trace:#}");
    assert_eq!(server["parent_span_id"], REMOTE_PARENT);
    assert_eq!(client["parent_span_id"], server["span_id"]);
    assert_eq!(server["name"], "GET /checkout");
    assert_eq!(client["name"], "GET /checkout");
    assert_eq!(trace["root"], "GET /checkout");
    assert_eq!(server["attributes"]["http.response.status_code"], 200);
    assert_eq!(client["attributes"]["http.response.status_code"], 200);
    assert_eq!(server["attributes"]["url.path"], "/checkout");
    assert_eq!(
        server["attributes"]["http.request.header.x-request-id"],
        serde_json::json!([HOSTILE])
    );
    assert_eq!(server["status"], "unset");
    assert_eq!(trace["error"], false);
    let duration = |s: &Value| s["duration_ns"].as_u64().unwrap();
    assert!(duration(client) <= duration(server));
    assert_eq!(
        duration(server),
        server["end_unix_nano"].as_u64().unwrap() - server["start_unix_nano"].as_u64().unwrap()
    );
    assert!(trace["duration_ns"].as_u64().unwrap() >= duration(server));

    // A second trace, after the first is fully kept: newest first, and the filter.
    send(addr, &[]).await;
    let body = body_json(admin_get(admin, "").await).await;
    assert_eq!(body["service"], "traces-test");
    wait_until("a second trace", Duration::from_secs(5), || async {
        let body = body_json(admin_get(admin, "?limit=1").await).await;
        let traces = body["traces"].as_array().unwrap();
        traces.len() == 1 && traces[0]["trace_id"] != TRACE_ID && traces[0]["span_count"] == 2
    })
    .await;
    let response = admin_get(admin, &format!("?trace_id={TRACE_ID}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = body_json(response).await;
    let traces = body["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0]["trace_id"], TRACE_ID);

    let response = admin_get(admin, "?trace_id=ffffffffffffffffffffffffffffffff").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = body_json(response).await;
    assert!(
        body["error"].as_str().unwrap().contains("not kept"),
        "{body}"
    );
    let response = admin_get(admin, "?trace_id=nothex").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // HTML: one section for the trace, the two rows with their depth and parent.
    let response = admin_get(admin, &format!("?format=html&trace_id={TRACE_ID}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let page = body_string(response).await;
    assert_eq!(page.matches("<section class=\"trace\"").count(), 1);
    assert!(page.contains(&format!(
        "<section class=\"trace\" data-trace-id=\"{TRACE_ID}\">"
    )));
    let server_id = server["span_id"].as_str().unwrap();
    let client_id = client["span_id"].as_str().unwrap();
    assert_eq!(page.matches("<tr class=\"span").count(), 2, "{page}");
    let server_row = page
        .find(&format!(
            "<tr class=\"span\" data-span-id=\"{server_id}\" data-parent-id=\"{REMOTE_PARENT}\" data-depth=\"0\">"
        ))
        .expect("server row");
    let client_row = page
        .find(&format!(
            "<tr class=\"span\" data-span-id=\"{client_id}\" data-parent-id=\"{server_id}\" data-depth=\"1\">"
        ))
        .expect("client row");
    assert!(server_row < client_row, "parent before child");
    let durations = page.matches("<td class=\"duration\">").count();
    assert_eq!(durations, 2);
    assert!(
        [" ns</td>", " µs</td>", " ms</td>"]
            .iter()
            .any(|unit| page.contains(unit))
    );
    assert!(page.contains("<div class=\"bar\" style=\"left:0.00%;width:100.00%\">"));
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script"), "{page}");
    assert!(page.contains(&format!(
        "href=\"/traces?limit=100&amp;trace_id={TRACE_ID}\""
    )));

    proxy.shutdown().await;
}

#[tokio::test]
async fn admin_traces_empty_state() {
    let upstream = echo_server("app").await;
    let proxy = start_proxy(&config(upstream.addr)).await;
    let admin = proxy.admin_addr();
    let body = body_json(admin_get(admin, "").await).await;
    assert_eq!(
        body,
        serde_json::json!({"service": "traces-test", "traces": []})
    );
    let page = body_string(admin_get(admin, "?format=html").await).await;
    assert!(page.contains("No traces recorded yet"));
    let response = http1_client()
        .request(
            Request::post(format!("http://{admin}/traces"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    proxy.shutdown().await;
}
