//! `/metrics` after known traffic: exact counter values, and the exposition validated by a
//! real parser (Python `prometheus_client`'s strict OpenMetrics parser). Also `/ready`.

mod common;

use std::process::Stdio;

use common::*;
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

async fn parse_with_python(text: &str) -> Vec<Value> {
    let setup = tokio::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/setup.sh"
        ))
        .output()
        .await
        .unwrap();
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let mut parser =
        tokio::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/interop/parse_metrics.py"
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .await
        .unwrap();
    let output = parser.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "the exposition does not parse:\n{}\n---\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s["name"] == name
                && labels.iter().all(|(k, v)| s["labels"][k] == *v)
                && s["labels"].as_object().unwrap().len() == labels.len()
        })
        .map(|s| s["value"].as_f64().unwrap())
}

#[tokio::test]
async fn metrics_count_known_traffic_exactly_and_parse() {
    let app = echo_server("app").await;
    let dead = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let proxy = start_proxy(&format!(
        r#"
[service]
name = "metrics-test"
[admin]
bind = "127.0.0.1:0"
[tracing]
exporter = "none"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "inbound"
[[routes]]
name = "ok"
listener = "main"
host = "shop"
path_prefix = "/ok"
upstream = "app"
[[routes]]
listener = "main"
host = "shop"
path_prefix = "/dead"
upstream = "dead"
[upstreams.app]
endpoints = ["{}"]
[upstreams.dead]
endpoints = ["{dead}"]
"#,
        app.addr
    ))
    .await;
    let addr = proxy.listener_addr("main").unwrap();
    let client = http1_client();
    let send = |path: &'static str, host: &'static str| {
        let client = client.clone();
        async move {
            let request = http::Request::get(format!("http://{addr}{path}"))
                .header("host", host)
                .body(full(""))
                .unwrap();
            let response = client.request(request).await.unwrap();
            let status = response.status().as_u16();
            body_string(response).await;
            status
        }
    };
    for _ in 0..3 {
        assert_eq!(send("/ok/item", "shop").await, 200);
    }
    assert_eq!(send("/ok", "elsewhere").await, 404);
    assert_eq!(send("/nothing", "shop").await, 404);
    assert_eq!(send("/dead/x", "shop").await, 502);

    let admin = proxy.admin_addr();
    let response = get(&client, format!("http://{admin}/metrics")).await;
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = body_string(response).await;
    let samples = parse_with_python(&text).await;
    let requests = |route: &str, upstream: &str, class: &str| {
        value(
            &samples,
            "hoptrace_requests_total",
            &[
                ("listener", "main"),
                ("route", route),
                ("upstream", upstream),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(requests("ok", "app", "2xx"), Some(3.0), "{text}");
    assert_eq!(requests("ok", "app", "5xx"), Some(0.0));
    assert_eq!(
        requests("", "", "4xx"),
        Some(2.0),
        "no route: empty route and upstream labels"
    );
    assert_eq!(requests("/dead", "dead", "5xx"), Some(1.0));
    let duration_count = value(
        &samples,
        "hoptrace_request_duration_seconds_count",
        &[("listener", "main"), ("route", "ok")],
    );
    assert_eq!(duration_count, Some(3.0));
    let connect = |name: &str, upstream: &str| value(&samples, name, &[("upstream", upstream)]);
    assert_eq!(
        connect("hoptrace_upstream_connection_attempts_total", "dead"),
        Some(1.0)
    );
    assert_eq!(
        connect("hoptrace_upstream_connection_failures_total", "dead"),
        Some(1.0)
    );
    assert_eq!(
        connect("hoptrace_upstream_connection_timeouts_total", "dead"),
        Some(0.0)
    );
    assert!(connect("hoptrace_upstream_connection_attempts_total", "app").unwrap() >= 1.0);
    assert_eq!(
        connect("hoptrace_upstream_connection_failures_total", "app"),
        Some(0.0)
    );
    // Every request was sampled: one SERVER span each.
    assert_eq!(
        value(&samples, "hoptrace_spans_started_total", &[]),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        value(&samples, "hoptrace_spans_dropped_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(&samples, "hoptrace_config_generation", &[]),
        Some(1.0)
    );
    // The test client keeps its one connection open.
    assert_eq!(
        value(
            &samples,
            "hoptrace_downstream_connections_open",
            &[("listener", "main")]
        ),
        Some(1.0)
    );
    assert!(value(&samples, "hoptrace_export_queue_depth", &[]).is_some());
    assert!(text.contains("# TYPE hoptrace_export_batch_duration_seconds histogram"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn ready_is_503_until_ready_and_while_draining() {
    let app = echo_server("app").await;
    let proxy = start_proxy(&simple_config("inbound", app.addr, "http1")).await;
    let admin = proxy.admin_addr();
    let status = |path: &'static str| async move {
        get(&http1_client(), format!("http://{admin}{path}"))
            .await
            .status()
            .as_u16()
    };
    assert_eq!(status("/ready").await, 200);
    assert_eq!(status("/live").await, 200);
    proxy.shutdown().await;

    // The admin state starts not ready: hoptrace serves it before binding the listeners and
    // marks it ready only once every listener is bound.
    let (shared, metrics) = {
        let config =
            hoptrace::config::Config::from_toml_str(&simple_config("inbound", app.addr, "http1"))
                .unwrap();
        let metrics = hoptrace::metrics::Metrics::new();
        let snapshot =
            hoptrace::proxy::Snapshot::build(std::sync::Arc::new(config), 1, None, &metrics)
                .unwrap();
        (
            std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(snapshot)),
            std::sync::Arc::new(metrics),
        )
    };
    let state = std::sync::Arc::new(hoptrace::admin::AdminState::new(
        shared,
        std::sync::Arc::new(hoptrace::export::recent::RecentTraces::new(1)),
        metrics,
        Default::default(),
    ));
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = socket.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(hoptrace::admin::serve(socket, state.clone(), stop_rx));
    let status = |path: &'static str| async move {
        get(&http1_client(), format!("http://{admin}{path}"))
            .await
            .status()
            .as_u16()
    };
    assert_eq!(status("/ready").await, 503);
    assert_eq!(status("/live").await, 200);
    state.set_ready(true);
    assert_eq!(status("/ready").await, 200);
    stop.send(true).unwrap();
    task.await.unwrap();
}
