//! Propagation formats on the wire: each of B3 (single and multi), Jaeger and X-Ray is
//! extracted, injected and translated (in with one format, out with every configured one);
//! malformed values start a new trace; 64-bit ids leave as 64-bit; `baggage`, `uberctx-*` and
//! headers of formats not configured pass through untouched; `restart` mode links the caller;
//! tail keeping exports unsampled spans that failed or were slow. Checked on what the upstream
//! received and on the spans the OTLP receiver decoded.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::otlp::{ReceivedSpan, Receiver};
use common::*;
use http::{HeaderMap, Request};
use hyper::body::Incoming;

const T128: &str = "80f198ee56343ba864fe8b2a57d3eff7";
const T64: &str = "463ac35c9f6413ad";
const SPAN: &str = "e457b5a2e4d86bd1";
const XRAY_ROOT: &str = "1-5759e988-bd862e3fe1be46a994272793";
const XRAY_TRACE: &str = "5759e988bd862e3fe1be46a994272793";

type Seen = Arc<Mutex<Vec<HeaderMap>>>;

/// An upstream that remembers every request's headers. `/fail` answers 503; `/slow` waits
/// for `release` (after signalling `arrived`).
async fn upstream(arrived: Gate, release: Gate) -> (TestServer, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let server = serve(move |req: Request<Incoming>| {
        let (s, arrived, release) = (s.clone(), arrived.clone(), release.clone());
        async move {
            s.lock().unwrap().push(req.headers().clone());
            match req.uri().path() {
                "/fail" => text(503, "down"),
                "/slow" => {
                    arrived.notify_one();
                    release.notified().await;
                    text(200, "late")
                }
                _ => text(200, "ok"),
            }
        }
    })
    .await;
    (server, seen)
}

fn config(
    receiver: &Receiver,
    upstream: SocketAddr,
    role: &str,
    tracing: &str,
    trust: &str,
) -> String {
    format!(
        r#"
[service]
name = "prop-test"
[admin]
bind = "127.0.0.1:0"
[tracing]
batch_delay = "10ms"
{tracing}
[tracing.otlp]
endpoint = "{grpc}"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "{role}"
{trust}
[[routes]]
listener = "main"
upstream = "app"
[upstreams.app]
endpoints = ["{upstream}"]
[[routes]]
listener = "main"
path_prefix = "/dead"
upstream = "dead"
[upstreams.dead]
endpoints = ["127.0.0.1:1"]
"#,
        grpc = receiver.grpc_url()
    )
}

async fn send(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> http::Response<Incoming> {
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    http1_client()
        .request(req.body(full("")).unwrap())
        .await
        .unwrap()
}

fn last(seen: &Seen) -> HeaderMap {
    seen.lock()
        .unwrap()
        .last()
        .cloned()
        .expect("the upstream got a request")
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name} in {h:?}"))
        .to_str()
        .unwrap()
}

/// `(trace id, parent id, flags)` of a `traceparent`.
fn traceparent(h: &HeaderMap) -> (String, String, String) {
    let parts: Vec<&str> = header(h, "traceparent").split('-').collect();
    (parts[1].into(), parts[2].into(), parts[3].into())
}

fn only_server(spans: &[ReceivedSpan]) -> &ReceivedSpan {
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].kind, 2);
    &spans[0]
}

const ALL: &str = r#"propagators = ["tracecontext", "b3", "b3multi", "jaeger", "xray"]"#;

#[tokio::test]
async fn b3_in_leaves_as_w3c_and_every_format_with_the_same_trace_and_width() {
    let receiver = Receiver::start().await;
    let (up, seen) = upstream(Gate::default(), Gate::default()).await;
    let proxy = start_proxy(&config(&receiver, up.addr, "inbound", ALL, "")).await;
    let addr = proxy.listener_addr("main").unwrap();

    let b3 = format!("{T64}-{SPAN}-1");
    send(
        addr,
        "/translate",
        &[
            ("b3", &b3),
            ("baggage", "user=alice,tier=gold"),
            ("uberctx-user", "alice"),
        ],
    )
    .await;
    let span = receiver.wait_for_spans(1).await;
    let span = only_server(&span);
    let padded = format!("0000000000000000{T64}");
    assert_eq!(span.trace_id, padded);
    assert_eq!(span.parent_span_id, SPAN);

    let h = last(&seen);
    let (trace, parent, flags) = traceparent(&h);
    assert_eq!(
        (trace.as_str(), parent.as_str(), flags.as_str()),
        (padded.as_str(), span.span_id.as_str(), "01")
    );
    // 64-bit in, 64-bit out in the formats that have a 64-bit form.
    assert_eq!(header(&h, "b3"), format!("{T64}-{}-1", span.span_id));
    assert_eq!(header(&h, "x-b3-traceid"), T64);
    assert_eq!(header(&h, "x-b3-spanid"), span.span_id);
    assert_eq!(header(&h, "x-b3-sampled"), "1");
    assert_eq!(
        header(&h, "uber-trace-id"),
        format!("{T64}:{}:0:1", span.span_id)
    );
    assert_eq!(
        header(&h, "x-amzn-trace-id"),
        format!(
            "Root=1-00000000-00000000{T64};Parent={};Sampled=1",
            span.span_id
        )
    );
    assert_eq!(header(&h, "baggage"), "user=alice,tier=gold");
    assert_eq!(header(&h, "uberctx-user"), "alice");
    proxy.shutdown().await;
}

/// For each format: a valid value is continued (same trace, the caller's span as parent, the
/// decision followed) and written back with this hop's span; a malformed one starts a new
/// trace and is overwritten with it.
#[tokio::test]
async fn each_format_is_extracted_injected_and_malformed_values_start_a_new_trace() {
    let receiver = Receiver::start().await;
    let (up, seen) = upstream(Gate::default(), Gate::default()).await;
    struct Case {
        name: &'static str,
        valid: Vec<(&'static str, String)>,
        trace: String,
        malformed: Vec<(&'static str, String)>,
        /// The header that carries this format's context on the way out.
        out: &'static str,
    }
    let cases = [
        Case {
            name: "b3",
            valid: vec![("b3", format!("{T128}-{SPAN}-1-05e3ac9a4f6e3b90"))],
            trace: T128.into(),
            malformed: vec![("b3", format!("{}-{SPAN}-1", T128.to_uppercase()))],
            out: "b3",
        },
        Case {
            name: "b3multi",
            valid: vec![
                ("x-b3-traceid", T128.into()),
                ("x-b3-spanid", SPAN.into()),
                ("x-b3-sampled", "1".into()),
            ],
            trace: T128.into(),
            malformed: vec![("x-b3-traceid", T128.into()), ("x-b3-sampled", "1".into())],
            out: "x-b3-traceid",
        },
        Case {
            name: "jaeger",
            valid: vec![("uber-trace-id", format!("{T128}%3A{SPAN}%3A0%3A1"))],
            trace: T128.into(),
            malformed: vec![("uber-trace-id", format!("{T128}:{SPAN}:0"))],
            out: "uber-trace-id",
        },
        Case {
            name: "xray",
            valid: vec![(
                "x-amzn-trace-id",
                format!("Root={XRAY_ROOT};Parent={SPAN};Sampled=1"),
            )],
            trace: XRAY_TRACE.into(),
            malformed: vec![(
                "x-amzn-trace-id",
                format!("Root=2-5759e988-bd862e3f;Parent={SPAN}"),
            )],
            out: "x-amzn-trace-id",
        },
    ];
    for case in cases {
        let tracing = format!(r#"propagators = ["{}", "tracecontext"]"#, case.name);
        let proxy = start_proxy(&config(&receiver, up.addr, "inbound", &tracing, "")).await;
        let addr = proxy.listener_addr("main").unwrap();
        let name = case.name;

        let valid: Vec<(&str, &str)> = case.valid.iter().map(|(k, v)| (*k, v.as_str())).collect();
        send(addr, "/valid", &valid).await;
        let spans = receiver.wait_for_spans(1).await;
        let span = only_server(&spans).clone();
        assert_eq!(span.trace_id, case.trace, "{name}");
        assert_eq!(span.parent_span_id, SPAN, "{name}");
        let h = last(&seen);
        assert_eq!(
            traceparent(&h),
            (case.trace.clone(), span.span_id.clone(), "01".into()),
            "{name}"
        );
        let out = header(&h, case.out);
        assert!(
            out.contains(&span.span_id) || case.out == "x-b3-traceid",
            "{name}: {out}"
        );
        if case.out == "x-b3-traceid" {
            assert_eq!(header(&h, "x-b3-spanid"), span.span_id);
        }
        receiver.clear();

        let malformed: Vec<(&str, &str)> = case
            .malformed
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        send(addr, "/malformed", &malformed).await;
        let spans = receiver.wait_for_spans(1).await;
        let span = only_server(&spans).clone();
        assert_ne!(
            span.trace_id, case.trace,
            "{name}: malformed value continued"
        );
        assert_eq!(span.parent_span_id, "", "{name}: a new trace has no parent");
        let h = last(&seen);
        assert_eq!(traceparent(&h).0, span.trace_id, "{name}");
        // The malformed header of a configured format is replaced by this hop's context.
        let out = header(&h, case.out);
        assert!(
            !malformed.iter().any(|(k, v)| *k == case.out && *v == out),
            "{name}: {out}"
        );
        let series =
            format!("hoptrace_trace_context_invalid_total{{listener=\"main\",format=\"{name}\"}}");
        assert_eq!(metric(proxy.admin_addr(), &series).await, 1, "{name}");
        receiver.clear();
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn unconfigured_formats_pass_through_and_the_first_configured_one_wins() {
    let receiver = Receiver::start().await;
    let (up, seen) = upstream(Gate::default(), Gate::default()).await;
    let tracing = r#"propagators = ["jaeger", "tracecontext"]"#;
    let proxy = start_proxy(&config(&receiver, up.addr, "inbound", tracing, "")).await;
    let addr = proxy.listener_addr("main").unwrap();

    let other_trace = "0af7651916cd43dd8448eb211c80319c";
    let tp = format!("00-{other_trace}-b7ad6b7169203331-01");
    let b3 = format!("{T64}-{SPAN}-0");
    let jaeger = format!("{T128}:{SPAN}:0:1");
    send(
        addr,
        "/",
        &[
            ("traceparent", &tp),
            ("tracestate", "vendor=1"),
            ("uber-trace-id", &jaeger),
            ("b3", &b3),
        ],
    )
    .await;
    let spans = receiver.wait_for_spans(1).await;
    let span = only_server(&spans);
    // Jaeger is first: its context wins; the losing traceparent is rewritten to match, and
    // its tracestate (which belonged to the other trace) is dropped.
    assert_eq!(span.trace_id, T128);
    let h = last(&seen);
    assert_eq!(traceparent(&h).0, T128);
    assert!(h.get("tracestate").is_none(), "{h:?}");
    assert_eq!(
        header(&h, "uber-trace-id"),
        format!("{T128}:{}:0:1", span.span_id)
    );
    // b3 is not configured: untouched.
    assert_eq!(header(&h, "b3"), b3);
    proxy.shutdown().await;
}

#[tokio::test]
async fn restart_mode_starts_a_new_trace_and_links_the_caller() {
    let receiver = Receiver::start().await;
    let (up, seen) = upstream(Gate::default(), Gate::default()).await;
    let trust = "[listeners.trace]\nincoming = \"restart\"";
    let proxy = start_proxy(&config(&receiver, up.addr, "gateway", ALL, trust)).await;
    let addr = proxy.listener_addr("main").unwrap();

    // The caller says "not sampled": on an edge that restarts, that does not decide either.
    let tp = format!("00-{T128}-{SPAN}-00");
    send(addr, "/", &[("traceparent", &tp), ("tracestate", "a=1")]).await;
    let spans = receiver.wait_for_spans(2).await;
    let server = spans.iter().find(|s| s.kind == 2).unwrap();
    let client = spans.iter().find(|s| s.kind == 3).unwrap();
    assert_ne!(server.trace_id, T128);
    assert_eq!(server.parent_span_id, "");
    assert_eq!(server.links, vec![(T128.to_string(), SPAN.to_string())]);
    assert!(
        client.links.is_empty(),
        "the link is on the SERVER span only"
    );
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(client.parent_span_id, server.span_id);
    let h = last(&seen);
    assert_eq!(
        traceparent(&h),
        (server.trace_id.clone(), client.span_id.clone(), "01".into())
    );
    assert!(
        h.get("tracestate").is_none(),
        "the caller's tracestate is not continued"
    );
    assert_eq!(
        header(&h, "b3"),
        format!("{}-{}-1", server.trace_id, client.span_id)
    );
    proxy.shutdown().await;
}

/// The value of the metric line that starts with `series` (name and labels).
async fn metric(admin: SocketAddr, series: &str) -> u64 {
    let response = get(&http1_client(), format!("http://{admin}/metrics")).await;
    let text = body_string(response).await;
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {series} in metrics:\n{text}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

async fn kept_total(admin: SocketAddr, reason: &str) -> u64 {
    metric(
        admin,
        &format!("hoptrace_spans_kept_total{{reason=\"{reason}\"}}"),
    )
    .await
}

#[tokio::test]
async fn keep_errors_exports_unsampled_failures_only() {
    let receiver = Receiver::start().await;
    let (up, _seen) = upstream(Gate::default(), Gate::default()).await;
    let tracing = "sampling_ratio = 0.0\nkeep_errors = true";
    let proxy = start_proxy(&config(&receiver, up.addr, "inbound", tracing, "")).await;
    let addr = proxy.listener_addr("main").unwrap();

    let ok = send(addr, "/ok", &[]).await;
    assert_eq!(ok.status(), 200);
    body_string(ok).await;
    let failed = send(addr, "/fail", &[]).await;
    assert_eq!(failed.status(), 503);
    body_string(failed).await;
    let spans = receiver.wait_for_spans(1).await;
    let span = only_server(&spans);
    assert_eq!(span.attr_str("url.path"), Some("/fail"));
    assert_eq!(span.attr_str("hoptrace.kept_reason"), Some("error"));
    assert_eq!(span.status_code, 2);

    // A transport failure (nothing listens on the dead upstream) is kept too.
    let dead = send(addr, "/dead", &[]).await;
    assert_eq!(dead.status(), 502);
    body_string(dead).await;
    let spans = receiver.wait_for_spans(2).await;
    let dead = spans
        .iter()
        .find(|s| s.attr_str("url.path") == Some("/dead"))
        .unwrap();
    assert_eq!(dead.attr_str("hoptrace.kept_reason"), Some("error"));
    assert_eq!(dead.attr_str("error.type"), Some("connect_error"));
    assert_eq!(kept_total(proxy.admin_addr(), "error").await, 2);
    assert_eq!(kept_total(proxy.admin_addr(), "slow").await, 0);
    // The unsampled 200 was never exported.
    assert!(
        receiver
            .spans()
            .iter()
            .all(|s| s.attr_str("url.path") != Some("/ok"))
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn keep_slower_than_exports_a_slow_unsampled_request() {
    let receiver = Receiver::start().await;
    let (arrived, release) = (Gate::default(), Gate::default());
    let (up, _seen) = upstream(arrived.clone(), release.clone()).await;
    let tracing = "sampling_ratio = 0.0\nkeep_slower_than = \"50ms\"";
    let proxy = start_proxy(&config(&receiver, up.addr, "inbound", tracing, "")).await;
    let addr = proxy.listener_addr("main").unwrap();

    let request = tokio::spawn(async move { body_string(send(addr, "/slow", &[]).await).await });
    arrived.notified().await;
    // The gate opens only after the threshold has certainly passed.
    tokio::time::sleep(Duration::from_millis(60)).await;
    release.notify_one();
    assert_eq!(request.await.unwrap(), "late");
    let spans = receiver.wait_for_spans(1).await;
    let span = only_server(&spans);
    assert_eq!(span.attr_str("hoptrace.kept_reason"), Some("slow"));
    assert!(span.end_unix_nano - span.start_unix_nano >= 50_000_000);
    assert_eq!(kept_total(proxy.admin_addr(), "slow").await, 1);
    proxy.shutdown().await;
}
