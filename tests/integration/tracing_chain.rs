//! The trace of a request crossing four hoptrace listeners and two apps, as exported over
//! OTLP (gRPC and HTTP/protobuf) to a real receiver that decodes the wire protobuf:
//!
//! ```text
//! client ─► [edge: outbound] ─► [svc1: inbound] ─► app1 ─► [svc1: outbound] ─► [svc2: inbound] ─► app2
//!             CLIENT c1            SERVER s1                  CLIENT c2           SERVER s2
//! ```
//! The apps copy `traceparent` from their request onto their outbound call, as an
//! instrumented app would.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::otlp::{ReceivedSpan, Receiver};
use common::*;
use http::Request;
use hyper::body::Incoming;

fn sidecar(name: &str, exporter: &str, listeners: &[(&str, &str, SocketAddr, &str)]) -> String {
    let mut toml = format!(
        r#"
[service]
name = "{name}"
[admin]
bind = "127.0.0.1:0"
[tracing]
batch_delay = "20ms"
{exporter}
"#
    );
    for (listener, role, upstream, host) in listeners {
        toml.push_str(&format!(
            r#"
[[listeners]]
name = "{listener}"
bind = "127.0.0.1:0"
role = "{role}"
[[routes]]
name = "{listener}-route"
listener = "{listener}"
{host}
upstream = "{listener}-up"
[upstreams.{listener}-up]
endpoints = ["{upstream}"]
"#,
            host = if host.is_empty() {
                String::new()
            } else {
                format!("host = \"{host}\"")
            }
        ));
    }
    toml
}

fn grpc_exporter(receiver: &Receiver) -> String {
    format!(
        "[tracing.otlp]\nprotocol = \"grpc\"\nendpoint = \"{}\"\n",
        receiver.grpc_url()
    )
}

fn http_exporter(receiver: &Receiver) -> String {
    format!(
        "[tracing.otlp]\nprotocol = \"http/protobuf\"\nendpoint = \"{}\"\ncompression = \"gzip\"\nheaders = {{ \"x-api-key\" = \"k-123\" }}\n",
        receiver.http_url()
    )
}

type Seen = Arc<Mutex<Vec<String>>>;

fn header_of(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn by_service<'a>(spans: &'a [ReceivedSpan], service: &str, kind: i32) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| {
            s.resource.get("service.name") == Some(&serde_json::json!(service)) && s.kind == kind
        })
        .collect();
    assert_eq!(found.len(), 1, "{service} kind {kind}: {spans:#?}");
    found[0]
}

fn assert_inside(child: &ReceivedSpan, parent: &ReceivedSpan) {
    assert!(
        parent.start_unix_nano <= child.start_unix_nano
            && child.end_unix_nano <= parent.end_unix_nano,
        "{} [{}, {}] is not inside {} [{}, {}]",
        child.name,
        child.start_unix_nano,
        child.end_unix_nano,
        parent.name,
        parent.start_unix_nano,
        parent.end_unix_nano
    );
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

#[tokio::test]
async fn one_trace_across_four_hops_with_the_parents_the_chain_implies() {
    let receiver = Receiver::start().await;

    // app2: records what it received.
    let app2_seen: Seen = Arc::default();
    let seen = app2_seen.clone();
    let app2 = serve(move |req: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(header_of(&req, "traceparent"));
            text(200, "paid")
        }
    })
    .await;
    let svc2 = start_proxy(&sidecar(
        "svc2",
        &http_exporter(&receiver),
        &[("in", "inbound", app2.addr, "")],
    ))
    .await;
    let svc2_in = svc2.listener_addr("in").unwrap();

    // svc1's sidecar: inbound to app1, outbound to svc2. app1 calls svc2 through it,
    // copying traceparent.
    let app1_seen: Seen = Arc::default();
    let app1_out: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let (seen, out) = (app1_seen.clone(), app1_out.clone());
    let app1 = serve(move |req: Request<Incoming>| {
        let (seen, out) = (seen.clone(), out.clone());
        async move {
            let traceparent = header_of(&req, "traceparent");
            seen.lock().unwrap().push(traceparent.clone());
            let out = out.lock().unwrap().unwrap();
            let call = Request::get(format!("http://{out}/pay"))
                .header("host", "svc2")
                .header("traceparent", traceparent)
                .body(full(""))
                .unwrap();
            let response = http1_client().request(call).await.unwrap();
            let body = body_string(response).await;
            text(
                200,
                if body == "paid" {
                    "checkout done"
                } else {
                    "checkout failed"
                },
            )
        }
    })
    .await;
    let svc1 = start_proxy(&sidecar(
        "svc1",
        &grpc_exporter(&receiver),
        &[
            ("in", "inbound", app1.addr, ""),
            ("out", "outbound", svc2_in, "svc2"),
        ],
    ))
    .await;
    *app1_out.lock().unwrap() = svc1.listener_addr("out");
    let svc1_in = svc1.listener_addr("in").unwrap();

    let edge = start_proxy(&sidecar(
        "edge",
        &grpc_exporter(&receiver),
        &[("out", "outbound", svc1_in, "svc1")],
    ))
    .await;
    let edge_out = edge.listener_addr("out").unwrap();

    let request = Request::get(format!("http://{edge_out}/checkout?cart=7&token=s3cr3t"))
        .header("host", "svc1")
        .header("user-agent", "chain-test/1.0")
        .body(full(""))
        .unwrap();
    let response = http1_client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let traceresponse = response.headers()["traceresponse"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(body_string(response).await, "checkout done");

    let spans = receiver.wait_for_spans(4).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let c1 = by_service(&spans, "edge", CLIENT);
    let s1 = by_service(&spans, "svc1", SERVER);
    let c2 = by_service(&spans, "svc1", CLIENT);
    let s2 = by_service(&spans, "svc2", SERVER);

    // Exactly one trace; every parent is the one the chain implies.
    for span in [s1, c2, s2] {
        assert_eq!(span.trace_id, c1.trace_id);
    }
    assert_eq!(
        c1.parent_span_id, "",
        "no incoming context: the edge's span is the root"
    );
    assert_eq!(s1.parent_span_id, c1.span_id);
    assert_eq!(c2.parent_span_id, s1.span_id);
    assert_eq!(s2.parent_span_id, c2.span_id);
    assert_inside(s1, c1);
    assert_inside(c2, s1);
    assert_inside(s2, c2);

    // Each app saw a traceparent naming the SERVER span of its own sidecar.
    assert_eq!(
        app1_seen.lock().unwrap().clone(),
        [format!("00-{}-{}-01", c1.trace_id, s1.span_id)]
    );
    assert_eq!(
        app2_seen.lock().unwrap().clone(),
        [format!("00-{}-{}-01", c1.trace_id, s2.span_id)]
    );
    // The client learns the trace from traceresponse (its hop's span: the edge CLIENT span).
    assert_eq!(
        traceresponse,
        format!("00-{}-{}-01", c1.trace_id, c1.span_id)
    );

    // Names, kinds, attributes and status per the HTTP semantic conventions.
    assert_eq!(c1.name, "GET out-route");
    assert_eq!(s1.name, "GET in-route");
    assert_eq!(c1.attr_str("http.request.method"), Some("GET"));
    assert_eq!(c1.attr_i64("http.response.status_code"), Some(200));
    assert_eq!(c1.attr_str("server.address"), Some("svc1"));
    assert_eq!(c1.attr_i64("server.port"), Some(80));
    assert_eq!(
        c1.attr_str("url.full"),
        Some("http://svc1/checkout?cart=7&token=REDACTED")
    );
    assert_eq!(c1.attr_str("network.peer.address"), Some("127.0.0.1"));
    assert_eq!(
        c1.attr_i64("network.peer.port"),
        Some(i64::from(svc1_in.port()))
    );
    assert_eq!(s1.attr_str("url.path"), Some("/checkout"));
    assert_eq!(s1.attr_str("url.query"), Some("cart=7&token=REDACTED"));
    assert_eq!(s1.attr_str("url.scheme"), Some("http"));
    assert_eq!(s1.attr_str("http.route"), Some("in-route"));
    assert_eq!(s1.attr_i64("http.response.status_code"), Some(200));
    assert_eq!(s1.attr_str("server.address"), Some("svc1"));
    assert_eq!(s1.attr_str("client.address"), Some("127.0.0.1"));
    assert_eq!(s1.attr_str("network.peer.address"), Some("127.0.0.1"));
    assert_eq!(s1.attr_str("network.protocol.version"), Some("1.1"));
    assert_eq!(s1.attr_str("user_agent.original"), Some("chain-test/1.0"));
    for span in [c1, s1, c2, s2] {
        assert_eq!(
            span.status_code, 0,
            "{}: status unset on success",
            span.name
        );
        assert_eq!(span.scope_name, "hoptrace");
        assert!(span.resource.contains_key("service.instance.id"));
        assert!(span.resource.contains_key("host.name"));
    }
    // CLIENT spans carry the connection and first-byte events.
    let events: Vec<&str> = c1.events.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(events, ["connection acquired", "response headers received"]);
    assert_eq!(
        c1.events[0].2.get("hoptrace.connection"),
        Some(&serde_json::json!("new"))
    );
    // Both transports were used, and the HTTP one carried the API key header.
    assert_eq!(s2.transport, "http");
    assert_eq!(s1.transport, "grpc");
    assert!(
        receiver
            .http_headers()
            .iter()
            .any(|h| h.get("x-api-key").is_some_and(|v| v == "k-123"))
    );

    for proxy in [edge, svc1, svc2] {
        proxy.shutdown().await;
    }
}
