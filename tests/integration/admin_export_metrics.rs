//! The span export metrics, exactly, read from `/metrics` through the real parser: spans
//! counted when they start, exported to the test OTLP receiver, failed against a refused
//! collector, and waiting (queue depth) behind a collector that never answers. Once no
//! request is in flight, started = exported + dropped + failed + queue depth.

use crate::common;
use crate::prom;

use std::net::SocketAddr;
use std::time::Duration;

use common::otlp::Receiver;
use common::*;
use prom::{scrape, value};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

fn config(role: &str, app: SocketAddr, collector: &str, otlp: &str) -> String {
    format!(
        r#"
[service]
name = "export-metrics"
[admin]
bind = "127.0.0.1:0"
[tracing]
batch_size = 1
batch_delay = "10ms"
[tracing.otlp]
endpoint = "{collector}"
{otlp}
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "{role}"
[[routes]]
listener = "main"
upstream = "app"
[upstreams.app]
endpoints = ["{app}"]
"#
    )
}

/// [started, exported, dropped, failed, queue depth, export batches timed].
fn export_values(samples: &[Value]) -> [Option<f64>; 6] {
    [
        "hoptrace_spans_started_total",
        "hoptrace_spans_exported_total",
        "hoptrace_spans_dropped_total",
        "hoptrace_spans_failed_total",
        "hoptrace_export_queue_depth",
        "hoptrace_export_batch_duration_seconds_count",
    ]
    .map(|name| value(samples, name, &[]))
}

async fn send(addr: SocketAddr, n: usize) {
    for _ in 0..n {
        let response = get(&http1_client(), format!("http://{addr}/")).await;
        assert_eq!(response.status(), 200);
        body_string(response).await;
    }
}

#[tokio::test]
async fn spans_are_counted_when_they_start_and_when_exported() {
    let receiver = Receiver::start().await;
    let (arrived, release) = (Gate::default(), Gate::default());
    let (arr, rel) = (arrived.clone(), release.clone());
    let app = serve(move |_req| {
        let (arr, rel) = (arr.clone(), rel.clone());
        async move {
            arr.notify_one();
            rel.notified().await;
            text(200, "done")
        }
    })
    .await;
    // A gateway: a SERVER span when the request arrives, a CLIENT span when it goes out.
    let proxy = start_proxy(&config("gateway", app.addr, &receiver.grpc_url(), "")).await;
    let (addr, admin) = (proxy.listener_addr("main").unwrap(), proxy.admin_addr());
    let request = tokio::spawn(async move { send(addr, 1).await });
    arrived.notified().await;
    let (text, samples) = scrape(admin).await;
    assert_eq!(
        export_values(&samples),
        [
            Some(2.0),
            Some(0.0),
            Some(0.0),
            Some(0.0),
            Some(0.0),
            Some(0.0)
        ],
        "both spans started, none ended yet:\n{text}"
    );

    release.notify_one();
    request.await.unwrap();
    receiver.wait_for_spans(2).await;
    let stats = proxy.span_sink().stats().clone();
    wait_until("2 spans counted as exported", DEADLINE, || {
        let stats = stats.clone();
        async move { stats.snapshot()[1] == 2 }
    })
    .await;
    let (text, samples) = scrape(admin).await;
    assert_eq!(
        receiver.requests(),
        2,
        "one export per span (batch_size = 1)"
    );
    assert_eq!(
        export_values(&samples),
        [
            Some(2.0),
            Some(2.0),
            Some(0.0),
            Some(0.0),
            Some(0.0),
            Some(2.0)
        ],
        "{text}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn spans_a_refused_collector_never_got_are_counted_as_failed() {
    let app = echo_server("app").await;
    let refused = refusing_addr();
    let proxy = start_proxy(&config(
        "inbound",
        app.addr,
        &format!("http://{refused}"),
        "timeout = \"200ms\"",
    ))
    .await;
    let (addr, admin) = (proxy.listener_addr("main").unwrap(), proxy.admin_addr());
    send(addr, 3).await;
    let stats = proxy.span_sink().stats().clone();
    wait_until("3 spans failed", DEADLINE, || {
        let stats = stats.clone();
        async move { stats.snapshot()[3] == 3 }
    })
    .await;
    let (text, samples) = scrape(admin).await;
    assert_eq!(
        export_values(&samples),
        [
            Some(3.0),
            Some(0.0),
            Some(0.0),
            Some(3.0),
            Some(0.0),
            Some(3.0)
        ],
        "{text}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn spans_behind_a_collector_that_never_answers_are_the_queue_depth() {
    let app = echo_server("app").await;
    // Accepts connections and never answers: the exports hang (until their 60 s timeout,
    // long after this test), and every later span waits behind them.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = hole.local_addr().unwrap();
    let _hole = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = hole.accept().await {
            open.push(stream);
        }
    });
    let proxy = start_proxy(&config(
        "inbound",
        app.addr,
        &format!("http://{collector}"),
        "timeout = \"60s\"",
    ))
    .await;
    let (addr, admin) = (proxy.listener_addr("main").unwrap(), proxy.admin_addr());
    send(addr, 6).await;
    let sink = proxy.span_sink().clone();
    wait_until("five spans taken for export", DEADLINE, || {
        let sink = sink.clone();
        async move { sink.queue_depth() == 1 }
    })
    .await;
    let (text, samples) = scrape(admin).await;
    // Four exports in flight (one span each: batch_size 1), a fifth batch waiting for one
    // of them to end, one span in the queue: all six waiting.
    assert_eq!(
        export_values(&samples),
        [
            Some(6.0),
            Some(0.0),
            Some(0.0),
            Some(0.0),
            Some(6.0),
            Some(0.0)
        ],
        "{text}"
    );
    // Not shut down: its flush would wait for the hanging export.
    drop(proxy);
}
