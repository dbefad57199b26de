//! `/metrics` after known traffic and known reloads: exact counter values, the exposition
//! validated by a real parser (Python `prometheus_client`'s strict OpenMetrics parser), and
//! the series of routes and upstreams a reload removed gone.

use crate::common;
use crate::prom;

use std::net::SocketAddr;
use std::path::Path;

use common::otlp::Receiver;
use common::*;
use http::Request;
use prom::{scrape, value};
use serde_json::Value;

fn traffic_config(app: SocketAddr, dead: SocketAddr, collector: &str, grace: &str) -> String {
    format!(
        r#"
[service]
name = "metrics-test"
[admin]
bind = "127.0.0.1:0"
[shutdown]
grace = "{grace}"
[tracing]
batch_size = 1
batch_delay = "10ms"
[tracing.otlp]
endpoint = "{collector}"
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
endpoints = ["{app}"]
[upstreams.dead]
endpoints = ["{dead}"]
"#
    )
}

async fn closed_port() -> SocketAddr {
    refusing_addr()
}

/// `POST /reload` after writing `text` (when given): the outcome's name.
async fn reload(admin: SocketAddr, path: &Path, text: Option<&str>) -> String {
    if let Some(text) = text {
        std::fs::write(path, text).unwrap();
    }
    let request = Request::post(format!("http://{admin}/reload"))
        .body(full(""))
        .unwrap();
    let response = http1_client().request(request).await.unwrap();
    body_json(response).await["outcome"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn metrics_count_known_traffic_and_reloads_exactly_and_parse() {
    let receiver = Receiver::start().await;
    let app = echo_server("app").await;
    let dead = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let config = |grace: &str| traffic_config(app.addr, dead, &receiver.grpc_url(), grace);
    std::fs::write(&path, config("30s")).unwrap();
    // From a file, as `hoptrace run` does: with a reloader, so the reload series exist.
    let proxy = hoptrace::app::start_from_file(&path, false).await.unwrap();
    let addr = proxy.listener_addr("main").unwrap();
    let admin = proxy.admin_addr();

    let (_, samples) = scrape(admin).await;
    let reloads = |samples: &[Value], outcome: &str| {
        value(
            samples,
            "hoptrace_config_reloads_total",
            &[("outcome", outcome)],
        )
    };
    for outcome in ["applied", "unchanged", "rejected", "restart_required"] {
        assert_eq!(reloads(&samples, outcome), Some(0.0), "{outcome}");
    }
    assert_eq!(
        value(
            &samples,
            "hoptrace_config_last_reload_timestamp_seconds",
            &[]
        ),
        Some(0.0),
        "no reload yet"
    );

    let client = http1_client();
    let send = |path: &'static str, host: &'static str| {
        let client = client.clone();
        async move {
            let request = Request::get(format!("http://{addr}{path}"))
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
    // One SERVER span per request, one export per span (batch_size = 1).
    receiver.wait_for_spans(6).await;

    // One reload of each outcome; the applied one's time is the timestamp metric.
    assert_eq!(reload(admin, &path, None).await, "unchanged");
    assert_eq!(reload(admin, &path, Some(&config("29s"))).await, "applied");
    let applied_at = body_json(get(&client, format!("http://{admin}/reload")).await).await["last"]
        ["time"]
        .as_f64()
        .unwrap();
    assert_eq!(reload(admin, &path, Some("[service\n")).await, "rejected");
    let moved = config("29s").replace(
        "bind = \"127.0.0.1:0\"\nrole",
        "bind = \"127.0.0.1:1\"\nrole",
    );
    assert_eq!(reload(admin, &path, Some(&moved)).await, "restart_required");

    // Exported counts once the exporter has returned from the last export.
    let stats = proxy.span_sink().stats().clone();
    wait_until("6 spans counted as exported", DEADLINE, || {
        let stats = stats.clone();
        async move { stats.snapshot()[1] == 6 }
    })
    .await;
    let (text, samples) = scrape(admin).await;
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
    // Spans: every one started was exported, nothing is waiting, and each export of one
    // span is one batch, timed once.
    let spans = |name: &str| value(&samples, name, &[]);
    assert_eq!(spans("hoptrace_spans_started_total"), Some(6.0), "{text}");
    assert_eq!(spans("hoptrace_spans_exported_total"), Some(6.0));
    assert_eq!(spans("hoptrace_spans_dropped_total"), Some(0.0));
    assert_eq!(spans("hoptrace_spans_failed_total"), Some(0.0));
    assert_eq!(spans("hoptrace_export_queue_depth"), Some(0.0));
    assert_eq!(receiver.requests(), 6);
    assert_eq!(
        spans("hoptrace_export_batch_duration_seconds_count"),
        Some(6.0)
    );
    // Reloads: one of each outcome, generation 2, the applied one's time to the millisecond.
    for outcome in ["applied", "unchanged", "rejected", "restart_required"] {
        assert_eq!(reloads(&samples, outcome), Some(1.0), "{outcome}");
    }
    assert_eq!(spans("hoptrace_config_generation"), Some(2.0));
    assert_eq!(
        spans("hoptrace_config_last_reload_timestamp_seconds"),
        Some(applied_at)
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
    proxy.shutdown().await;
}

const DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

#[tokio::test]
async fn a_reload_removes_the_series_of_removed_routes_and_upstreams() {
    let (app, old) = (echo_server("app").await, echo_server("old").await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let both = format!(
        r#"
[service]
name = "series-test"
[admin]
bind = "127.0.0.1:0"
[tracing]
exporter = "none"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "inbound"
[[routes]]
name = "keep"
listener = "main"
path_prefix = "/keep"
upstream = "app"
[[routes]]
name = "gone"
listener = "main"
path_prefix = "/gone"
upstream = "old"
[upstreams.app]
endpoints = ["{}"]
[upstreams.old]
endpoints = ["{}"]
"#,
        app.addr, old.addr
    );
    std::fs::write(&path, &both).unwrap();
    let proxy = hoptrace::app::start_from_file(&path, false).await.unwrap();
    let (addr, admin) = (proxy.listener_addr("main").unwrap(), proxy.admin_addr());
    for path in ["/keep/1", "/gone/1", "/keep/2"] {
        let response = get(&http1_client(), format!("http://{addr}{path}")).await;
        assert_eq!(response.status(), 200);
        body_string(response).await;
    }
    let mentions = |samples: &[Value], key: &str, label: &str| {
        samples
            .iter()
            .filter(|s| s["labels"][key] == label)
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let (_, samples) = scrape(admin).await;
    assert!(!mentions(&samples, "route", "gone").is_empty());
    assert!(!mentions(&samples, "upstream", "old").is_empty());
    let kept = |samples: &[Value]| {
        value(
            samples,
            "hoptrace_requests_total",
            &[
                ("listener", "main"),
                ("route", "keep"),
                ("upstream", "app"),
                ("status_class", "2xx"),
            ],
        )
    };
    assert_eq!(kept(&samples), Some(2.0));

    // Route "gone" and upstream "old" removed.
    let without = both
        .replace(
            "[[routes]]\nname = \"gone\"\nlistener = \"main\"\npath_prefix = \"/gone\"\nupstream = \"old\"\n",
            "",
        )
        .replace(&format!("[upstreams.old]\nendpoints = [\"{}\"]\n", old.addr), "");
    assert_eq!(reload(admin, &path, Some(&without)).await, "applied");
    let (text, samples) = scrape(admin).await;
    assert_eq!(
        mentions(&samples, "route", "gone"),
        Vec::<String>::new(),
        "{text}"
    );
    assert_eq!(
        mentions(&samples, "upstream", "old"),
        Vec::<String>::new(),
        "{text}"
    );
    // What is still configured keeps its series and values.
    assert_eq!(kept(&samples), Some(2.0));
    assert!(
        value(
            &samples,
            "hoptrace_upstream_connection_attempts_total",
            &[("upstream", "app")]
        )
        .is_some()
    );
    proxy.shutdown().await;
}
