//! Export retries against a real OTLP receiver. hoptrace leaves them to opentelemetry-otlp
//! 0.33's own retry (`retry_with_backoff`, with `[tracing.otlp] timeout` as its deadline),
//! which honours HTTP `Retry-After` on 429 and 503 and gRPC `RetryInfo` on UNAVAILABLE, and
//! retries 502, 504 and UNAVAILABLE without one with capped exponential back-off. Checked
//! here on the wire: the retry arrives no earlier than the collector asked, the spans
//! arrive, and a collector that keeps refusing until the deadline loses the batch, counted
//! as failed.

use crate::common;

use std::time::Duration;

use common::otlp::{Failure, Receiver};
use common::*;

fn config(receiver: &Receiver, protocol: &str, upstream: std::net::SocketAddr) -> String {
    let endpoint = match protocol {
        "grpc" => receiver.grpc_url(),
        _ => receiver.http_url(),
    };
    format!(
        r#"
[service]
name = "retry-test"
[admin]
bind = "127.0.0.1:0"
[tracing]
batch_delay = "10ms"
[tracing.otlp]
protocol = "{protocol}"
endpoint = "{endpoint}"
timeout = "4s"
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

/// One request through the proxy while the collector fails its first export with
/// `failure`: the span arrives on the retry, which came `at_least` after the failed attempt.
async fn delivered_on_retry(protocol: &str, failure: Failure, at_least: Duration) {
    let upstream = echo_server("app").await;
    let receiver = Receiver::start().await;
    let proxy = start_proxy(&config(&receiver, protocol, upstream.addr)).await;
    let addr = proxy.listener_addr("main").unwrap();
    receiver.set_failures(1, failure);
    let response = get(&http1_client(), format!("http://{addr}/retried")).await;
    assert_eq!(response.status(), 200);

    let spans = receiver.wait_for_spans(1).await;
    assert_eq!(spans.len(), 1, "{protocol} {failure:?}: {spans:#?}");
    assert_eq!(spans[0].attr_str("url.path"), Some("/retried"));
    let arrivals = receiver.arrivals();
    let failed: Vec<bool> = arrivals.iter().map(|(_, failed)| *failed).collect();
    assert_eq!(
        failed,
        [true, false],
        "{protocol} {failure:?}: one failure, one retry"
    );
    let gap = arrivals[1].0 - arrivals[0].0;
    assert!(
        gap >= at_least,
        "{protocol} {failure:?}: retried {gap:?} after the failure, asked to wait {at_least:?}"
    );
    let stats = proxy.span_sink().stats().clone();
    wait_until("exported counted", Duration::from_secs(20), || {
        let stats = stats.clone();
        async move { stats.snapshot()[1] == 1 }
    })
    .await;
    assert_eq!(stats.snapshot()[3], 0, "nothing failed");
    proxy.shutdown().await;
}

fn retry_after(status: u16, secs: u64) -> Failure {
    Failure::Status {
        http: status,
        retry_after: Some(secs),
    }
}

#[tokio::test]
async fn http_429_retry_after_is_honoured() {
    delivered_on_retry("http/protobuf", retry_after(429, 2), Duration::from_secs(2)).await;
}

#[tokio::test]
async fn http_503_retry_after_is_honoured() {
    delivered_on_retry("http/protobuf", retry_after(503, 2), Duration::from_secs(2)).await;
}

#[tokio::test]
async fn grpc_unavailable_retry_info_is_honoured() {
    // The gRPC form of Retry-After: a `RetryInfo` detail of 2 s on UNAVAILABLE.
    delivered_on_retry("grpc", retry_after(503, 2), Duration::from_secs(2)).await;
}

#[tokio::test]
async fn http_502_and_504_are_retried() {
    // OTLP/HTTP gives Retry-After a meaning on 429 and 503 only; these are retried after
    // the exporter's own back-off.
    for status in [502, 504] {
        let failure = Failure::Status {
            http: status,
            retry_after: None,
        };
        delivered_on_retry("http/protobuf", failure, Duration::ZERO).await;
    }
}

#[tokio::test]
async fn grpc_unavailable_without_retry_info_is_retried() {
    delivered_on_retry("grpc", Failure::Unavailable, Duration::ZERO).await;
}

/// The collector answers 503 / UNAVAILABLE with a 1 s delay to every export: retried,
/// each retry after the delay, until the 4 s deadline; then the span counts as failed.
#[tokio::test]
async fn refused_until_the_deadline_counts_the_spans_as_failed() {
    let upstream = echo_server("app").await;
    for protocol in ["grpc", "http/protobuf"] {
        let receiver = Receiver::start().await;
        let proxy = start_proxy(&config(&receiver, protocol, upstream.addr)).await;
        let addr = proxy.listener_addr("main").unwrap();
        receiver.set_failures(usize::MAX, retry_after(503, 1));
        let response = get(&http1_client(), format!("http://{addr}/lost")).await;
        assert_eq!(response.status(), 200);

        let stats = proxy.span_sink().stats().clone();
        wait_until("failed counted", Duration::from_secs(30), || {
            let stats = stats.clone();
            async move { stats.snapshot()[3] == 1 }
        })
        .await;
        let [started, exported, dropped, failed] = stats.snapshot();
        assert_eq!(
            (started, exported, dropped, failed),
            (1, 0, 0, 1),
            "{protocol}"
        );
        assert_eq!(receiver.requests(), 0, "{protocol}: nothing accepted");
        let arrivals = receiver.arrivals();
        assert!(arrivals.len() >= 2, "{protocol}: retried: {arrivals:?}");
        assert!(arrivals.iter().all(|(_, failed)| *failed));
        for pair in arrivals.windows(2) {
            let gap = pair[1].0 - pair[0].0;
            assert!(gap >= Duration::from_secs(1), "{protocol}: {gap:?}");
        }
        // Given up within the deadline: no attempt after it.
        let span = arrivals.last().unwrap().0 - arrivals[0].0;
        assert!(
            span < Duration::from_secs(4),
            "{protocol}: attempts over {span:?}"
        );
        proxy.shutdown().await;
    }
}
