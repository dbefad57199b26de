//! Export behaviour against a real OTLP receiver: retryable failures are retried until the
//! spans arrive, non-retryable ones are counted as failed, partial success is counted, and
//! gzip is sent exactly when configured, over both gRPC and HTTP/protobuf. (Retry-After and
//! the retry deadline: `tests/integration/export_retry.rs`.)

use crate::common;

use std::time::Duration;

use common::otlp::{Failure, Receiver};
use common::*;

fn config(endpoint: &str, protocol: &str, upstream: std::net::SocketAddr) -> String {
    config_with(endpoint, protocol, upstream, "")
}

/// `otlp_extra`: more `[tracing.otlp]` lines.
fn config_with(
    endpoint: &str,
    protocol: &str,
    upstream: std::net::SocketAddr,
    otlp_extra: &str,
) -> String {
    format!(
        r#"
[service]
name = "export-test"
[admin]
bind = "127.0.0.1:0"
[tracing]
batch_delay = "10ms"
[tracing.otlp]
protocol = "{protocol}"
endpoint = "{endpoint}"
timeout = "5s"
{otlp_extra}
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "inbound"
[[routes]]
listener = "main"
upstream = "app"
[upstreams.app]
endpoints = ["{upstream}"]
"#
    )
}

fn endpoints(receiver: &Receiver) -> [(&'static str, String); 2] {
    [
        ("grpc", receiver.grpc_url()),
        ("http/protobuf", receiver.http_url()),
    ]
}

#[tokio::test]
async fn retryable_failures_are_retried_and_others_counted() {
    let upstream = echo_server("app").await;
    for protocol in ["grpc", "http/protobuf"] {
        let receiver = Receiver::start().await;
        let endpoint = endpoints(&receiver)
            .into_iter()
            .find(|(p, _)| *p == protocol)
            .unwrap()
            .1;
        let proxy = start_proxy(&config(&endpoint, protocol, upstream.addr)).await;
        let addr = proxy.listener_addr("main").unwrap();

        // Two UNAVAILABLE / 503 answers, then success: the span still arrives.
        receiver.set_failures(2, Failure::Unavailable);
        get(&http1_client(), format!("http://{addr}/retried")).await;
        let spans = receiver.wait_for_spans(1).await;
        assert_eq!(
            spans[0].attr_str("url.path"),
            Some("/retried"),
            "{protocol}"
        );
        assert_eq!(receiver.failed_requests(), 2, "{protocol}");
        let stats = proxy.span_sink().stats().clone();
        // The receiver holds the span a moment before the exporter's call returns.
        wait_until("exported counted", Duration::from_secs(20), || {
            let stats = stats.clone();
            async move { stats.snapshot()[1] == 1 }
        })
        .await;

        // A non-retryable answer: the batch is lost and counted, not retried.
        receiver.set_failures(1, Failure::Internal);
        get(&http1_client(), format!("http://{addr}/rejected")).await;
        wait_until("failed counted", Duration::from_secs(20), || {
            let stats = stats.clone();
            async move { stats.snapshot()[3] == 1 }
        })
        .await;
        assert_eq!(receiver.failed_requests(), 3, "{protocol}: no retry");
        assert_eq!(receiver.spans().len(), 1, "{protocol}");
        proxy.shutdown().await;
    }
}

/// A collector's partial success (accepted, some spans rejected) is counted on both
/// transports, and not retried.
#[tokio::test]
async fn partial_success_is_logged_and_counted() {
    let upstream = echo_server("app").await;
    for protocol in ["grpc", "http/protobuf"] {
        let receiver = Receiver::start().await;
        receiver.set_partial_success(3, "over quota");
        let endpoint = endpoints(&receiver)
            .into_iter()
            .find(|(p, _)| *p == protocol)
            .unwrap()
            .1;
        let proxy = start_proxy(&config(&endpoint, protocol, upstream.addr)).await;
        let addr = proxy.listener_addr("main").unwrap();
        let before = hoptrace::export::rejected_spans();
        get(&http1_client(), format!("http://{addr}/partial")).await;
        receiver.wait_for_spans(1).await;
        wait_until(
            "partial success counted",
            Duration::from_secs(20),
            || async move { hoptrace::export::rejected_spans() == before + 3 },
        )
        .await;
        assert_eq!(receiver.arrivals().len(), 1, "{protocol}: not retried");
        proxy.shutdown().await;
    }
}

/// hoptrace's own exporter compresses with gzip when `compression = "gzip"` (the receiver
/// records `content-encoding` / `grpc-encoding` and decodes the body accordingly), and
/// sends plain protobuf when it is not set.
#[tokio::test]
async fn gzip_is_sent_exactly_when_configured() {
    let upstream = echo_server("app").await;
    for (protocol, transport) in [("grpc", "grpc"), ("http/protobuf", "http")] {
        for gzip in [true, false] {
            let receiver = Receiver::start().await;
            let endpoint = endpoints(&receiver)
                .into_iter()
                .find(|(p, _)| *p == protocol)
                .unwrap()
                .1;
            let extra = if gzip { "compression = \"gzip\"" } else { "" };
            let proxy = start_proxy(&config_with(&endpoint, protocol, upstream.addr, extra)).await;
            let addr = proxy.listener_addr("main").unwrap();
            get(&http1_client(), format!("http://{addr}/zipped")).await;
            let spans = receiver.wait_for_spans(1).await;
            assert_eq!(spans[0].attr_str("url.path"), Some("/zipped"));
            let expected = gzip.then(|| "gzip".to_string());
            assert_eq!(
                receiver.encodings(),
                [(transport, expected)],
                "{protocol}, gzip {gzip}"
            );
            proxy.shutdown().await;
        }
    }
}

/// gRPC export requests are pipelined: a batch goes out while the previous one waits for
/// its answer. The receiver answers none until two are open, so an exporter that waited
/// for each answer before sending the next batch would never get one.
#[tokio::test]
async fn grpc_batches_go_out_while_earlier_ones_wait_for_answers() {
    let upstream = echo_server("app").await;
    let receiver = Receiver::start().await;
    receiver.hold_answers(2);
    let config = config(&receiver.grpc_url(), "grpc", upstream.addr).replace(
        "batch_delay = \"10ms\"",
        "batch_delay = \"10ms\"\nbatch_size = 1",
    );
    let proxy = start_proxy(&config).await;
    let addr = proxy.listener_addr("main").unwrap();
    // Each request is one batch: the SERVER span of the inbound listener.
    get(&http1_client(), format!("http://{addr}/first")).await;
    wait_until(
        "the first batch is sent",
        Duration::from_secs(20),
        || async { receiver.arrived_requests() == 1 },
    )
    .await;
    assert_eq!(receiver.requests(), 0, "answered before the second arrived");
    get(&http1_client(), format!("http://{addr}/second")).await;
    let spans = receiver.wait_for_spans(2).await;
    let mut paths: Vec<_> = spans
        .iter()
        .filter_map(|s| s.attr_str("url.path"))
        .collect();
    paths.sort();
    assert_eq!(paths, ["/first", "/second"]);
    assert_eq!(receiver.requests(), 2);
    proxy.shutdown().await;
}
