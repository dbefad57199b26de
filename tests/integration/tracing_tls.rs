//! Span export to an OTLP collector over TLS, for gRPC and HTTP/protobuf: a real receiver
//! serving a self-signed certificate for `localhost`. With `ca_file` naming that certificate
//! the spans arrive; without it (the system roots do not trust it) the proxy still answers
//! its requests, nothing reaches the receiver, and the lost batch is counted as failed.

use crate::common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use common::otlp::Receiver;
use common::*;

/// A self-signed certificate for `localhost` (SAN DNS `localhost` and IP 127.0.0.1), PEM.
fn self_signed() -> (String, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

fn config(protocol: &str, endpoint: &str, ca_file: Option<&str>, upstream: SocketAddr) -> String {
    let ca_file = ca_file
        .map(|path| format!("ca_file = '{path}'"))
        .unwrap_or_default();
    format!(
        r#"
[service]
name = "tls-test"
[admin]
bind = "127.0.0.1:0"
[tracing]
batch_delay = "10ms"
[tracing.otlp]
protocol = "{protocol}"
endpoint = "{endpoint}"
timeout = "1s"
{ca_file}
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

async fn export_over_tls(protocol: &str) {
    let (cert, key) = self_signed();
    let mut ca = tempfile::NamedTempFile::new().unwrap();
    ca.write_all(cert.as_bytes()).unwrap();
    let ca_path = ca.path().to_str().unwrap().to_string();

    let upstream = echo_server("app").await;
    let receiver = Receiver::start_tls(&cert, &key).await;
    let (endpoint, transport) = match protocol {
        "grpc" => (receiver.grpc_url(), "grpc"),
        _ => (receiver.http_url(), "http"),
    };
    assert!(endpoint.starts_with("https://localhost:"), "{endpoint}");

    // Trusting the receiver's certificate: the span arrives over TLS.
    let proxy = start_proxy(&config(protocol, &endpoint, Some(&ca_path), upstream.addr)).await;
    let addr = proxy.listener_addr("main").unwrap();
    let response = get(&http1_client(), format!("http://{addr}/over-tls")).await;
    assert_eq!(response.status(), 200, "{protocol}");
    let spans = receiver.wait_for_spans(1).await;
    assert_eq!(spans.len(), 1, "{protocol}: {spans:#?}");
    assert_eq!(
        spans[0].attr_str("url.path"),
        Some("/over-tls"),
        "{protocol}"
    );
    assert_eq!(spans[0].transport, transport, "{protocol}");
    let stats = proxy.span_sink().stats().clone();
    wait_until("exported counted", Duration::from_secs(20), || {
        let stats = stats.clone();
        async move { stats.snapshot()[1] == 1 }
    })
    .await;
    assert_eq!(stats.snapshot()[3], 0, "{protocol}: failed");
    proxy.shutdown().await;

    // No `ca_file`: the system roots do not trust the self-signed certificate, so the
    // handshake fails; requests are unaffected, the batch is lost and counted as failed.
    let proxy = start_proxy(&config(protocol, &endpoint, None, upstream.addr)).await;
    let addr = proxy.listener_addr("main").unwrap();
    let response = get(&http1_client(), format!("http://{addr}/untrusted")).await;
    assert_eq!(response.status(), 200, "{protocol}");
    let stats = proxy.span_sink().stats().clone();
    wait_until("failed counted", Duration::from_secs(20), || {
        let stats = stats.clone();
        async move { stats.snapshot()[3] == 1 }
    })
    .await;
    assert_eq!(stats.snapshot()[1], 0, "{protocol}: exported");
    assert_eq!(
        receiver.spans().len(),
        1,
        "{protocol}: {:#?}",
        receiver.spans()
    );
    assert_eq!(receiver.requests(), 1, "{protocol}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn grpc_export_over_tls() {
    export_over_tls("grpc").await;
}

#[tokio::test]
async fn http_protobuf_export_over_tls() {
    export_over_tls("http/protobuf").await;
}
