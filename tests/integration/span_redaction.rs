//! Credentials never reach a span or the upstream: an app sends an absolute-form request
//! with `user:pass@` and a sensitive query value through an outbound listener. On the wire
//! the CLIENT span's `url.full` has `REDACTED:REDACTED@` (semantic conventions) and
//! `token=REDACTED`, no attribute holds the secrets, and the upstream's `Host` has no
//! userinfo.

use crate::common;

use common::otlp::Receiver;
use common::*;

#[tokio::test]
async fn url_credentials_become_redacted_in_url_full_and_never_reach_the_upstream() {
    let receiver = Receiver::start().await;
    let upstream = echo_server("pay").await;
    let config = format!(
        r#"
[service]
name = "redaction"
[admin]
bind = "127.0.0.1:0"
[tracing]
batch_delay = "10ms"
[tracing.otlp]
endpoint = "{}"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "outbound"
[[routes]]
listener = "main"
upstream = "app"
[upstreams.app]
endpoints = ["{}"]
"#,
        receiver.grpc_url(),
        upstream.addr
    );
    let proxy = start_proxy(&config).await;
    let addr = proxy.listener_addr("main").unwrap();
    let request = "GET http://alice:s3cret@pay.internal:8080/charge?token=t0ken&x=1 HTTP/1.1\r\n\
                   Host: pay.internal:8080\r\nConnection: close\r\n\r\n";
    let response = raw_http(addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(echo["headers"]["host"][0], "pay.internal:8080", "{echo}");
    assert!(
        !body.contains("s3cret") && !body.contains("alice"),
        "{body}"
    );

    let spans = receiver.wait_for_spans(1).await;
    let span = &spans[0];
    assert_eq!(span.kind, 3, "CLIENT");
    assert_eq!(
        span.attr_str("url.full"),
        Some("http://REDACTED:REDACTED@pay.internal:8080/charge?token=REDACTED&x=1")
    );
    assert_eq!(span.attr_str("server.address"), Some("pay.internal"));
    assert_eq!(span.attr_i64("server.port"), Some(8080));
    let everything = format!("{:?}", span.attributes);
    assert!(
        !everything.contains("s3cret")
            && !everything.contains("alice")
            && !everything.contains("t0ken"),
        "{everything}"
    );
    proxy.shutdown().await;
}
