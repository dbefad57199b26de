use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::html::{self, Bar, Escaped};
use super::view::{TraceView, waterfall};
use super::{Format, MAX_LIMIT, Query};
use crate::export::recent::RecentTrace;

const TRACE: u128 = 0x0af7651916cd43dd8448eb211c80319c;
const REMOTE_PARENT: u64 = 0xb7ad6b7169203331;
/// Start of every test trace, in nanoseconds since the Unix epoch.
const T0: u64 = 1_700_000_000_000_000_000;

/// A span of `TRACE` from `start` to `end` nanoseconds after `T0`.
fn span(id: u64, parent: u64, name: &str, start: u64, end: u64) -> SpanData {
    let at = |ns: u64| SystemTime::UNIX_EPOCH + Duration::from_nanos(T0 + ns);
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(TRACE),
            SpanId::from(id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::from(parent),
        parent_span_is_remote: false,
        span_kind: SpanKind::Client,
        name: Cow::Owned(name.to_string()),
        start_time: at(start),
        end_time: at(end),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("test").build(),
    }
}

fn trace(spans: Vec<SpanData>) -> TraceView {
    TraceView::new(&RecentTrace {
        trace_id: TraceId::from(TRACE),
        spans,
    })
}

fn names_and_depths(spans: &[SpanData]) -> Vec<(String, usize)> {
    waterfall(spans)
        .into_iter()
        .map(|(s, depth)| (s.name.to_string(), depth))
        .collect()
}

#[test]
fn waterfall_is_depth_first_with_siblings_by_start() {
    // Arrival order is end order (children before parents), not the display order.
    let spans = vec![
        span(4, 3, "grandchild", 350, 400),
        span(3, 1, "late child", 300, 900),
        span(2, 1, "early child", 100, 200),
        span(1, REMOTE_PARENT, "root", 0, 1000),
        span(5, 0xdead, "orphan", 50, 60),
    ];
    assert_eq!(
        names_and_depths(&spans),
        [
            ("root".into(), 0),
            ("early child".into(), 1),
            ("late child".into(), 1),
            ("grandchild".into(), 2),
            // Its parent is not in this trace: a root of its own, after the earlier root.
            ("orphan".into(), 0),
        ]
    );
}

#[test]
fn waterfall_keeps_spans_caught_in_a_parent_cycle() {
    let spans = vec![
        span(1, 2, "a", 0, 10),
        span(2, 1, "b", 5, 10),
        span(3, 3, "own parent", 20, 30),
    ];
    let order = names_and_depths(&spans);
    assert_eq!(order.len(), 3);
    assert_eq!(order[0], ("own parent".into(), 0));
    assert!(order.contains(&("a".into(), 0)));
    assert!(order.contains(&("b".into(), 1)));
}

#[test]
fn trace_summary_and_json_shape() {
    let mut server = span(1, REMOTE_PARENT, "GET /checkout", 0, 2_000_000);
    server.span_kind = SpanKind::Server;
    server.attributes = vec![
        KeyValue::new("http.response.status_code", 502),
        KeyValue::new("error.type", "connect_error"),
    ];
    server.status = Status::error("connect_error");
    let mut client = span(2, 1, "GET", 500_000, 1_500_000);
    client.parent_span_is_remote = false;
    client.events.events.push(Event::new(
        "response headers received",
        SystemTime::UNIX_EPOCH + Duration::from_nanos(T0 + 1_000_000),
        Vec::new(),
        0,
    ));
    let mut local_root = span(3, 0, "local", 0, 10);
    local_root.parent_span_id = SpanId::INVALID;
    let view = trace(vec![client, server, local_root]);
    assert_eq!(view.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(view.root, "GET /checkout");
    assert_eq!(view.start_unix_nano, T0);
    assert_eq!(view.duration_ns, 2_000_000);
    assert_eq!(view.span_count, 3);
    assert!(view.error);
    let json = serde_json::to_value(&view).unwrap();
    let spans = json["spans"].as_array().unwrap();
    assert_eq!(spans[0]["span_id"], "0000000000000001");
    assert_eq!(spans[0]["parent_span_id"], "b7ad6b7169203331");
    assert_eq!(spans[0]["kind"], "server");
    assert_eq!(spans[0]["status"], "error");
    assert_eq!(spans[0]["attributes"]["http.response.status_code"], 502);
    assert_eq!(spans[1]["parent_span_id"], "0000000000000001");
    assert_eq!(spans[1]["kind"], "client");
    assert_eq!(spans[1]["duration_ns"], 1_000_000);
    assert_eq!(spans[1]["end_unix_nano"], T0 + 1_500_000);
    assert_eq!(
        spans[1]["events"],
        serde_json::json!([{"name": "response headers received", "time_unix_nano": T0 + 1_000_000}])
    );
    assert_eq!(spans[2]["parent_span_id"], serde_json::Value::Null);
    assert_eq!(spans[2]["status"], "unset");
    assert!(spans[0].get("depth").is_none());
    assert_eq!(view.spans[0].outcome(), "502 connect_error");
}

#[test]
fn bars_are_percentages_of_the_trace_range() {
    let view = trace(vec![
        span(1, 0, "root", 0, 1000),
        span(2, 1, "middle", 250, 750),
        span(3, 1, "end", 1000, 1000),
    ]);
    let bars: Vec<Bar> = view.spans.iter().map(|s| Bar::new(&view, s)).collect();
    assert_eq!(
        bars,
        [
            Bar {
                left: 0.0,
                width: 100.0
            },
            Bar {
                left: 25.0,
                width: 50.0
            },
            Bar {
                left: 100.0,
                width: 0.0
            },
        ]
    );
    // A trace with no duration: every bar spans the row.
    let instant = trace(vec![span(1, 0, "root", 5, 5)]);
    assert_eq!(
        Bar::new(&instant, &instant.spans[0]),
        Bar {
            left: 0.0,
            width: 100.0
        }
    );
}

#[test]
fn durations_read_in_the_right_unit() {
    assert_eq!(html::duration(0), "0 ns");
    assert_eq!(html::duration(999), "999 ns");
    assert_eq!(html::duration(1_500), "1.50 µs");
    assert_eq!(html::duration(1_234_000), "1.23 ms");
    assert_eq!(html::duration(2_500_000_000), "2.50 s");
}

#[test]
fn escaping_covers_markup_and_quotes() {
    assert_eq!(
        Escaped(r#"<a href="x" title='y'>&</a>"#).to_string(),
        "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
    );
    assert_eq!(Escaped("plain µs text").to_string(), "plain µs text");
}

#[test]
fn html_escapes_every_span_value() {
    let mut root = span(1, REMOTE_PARENT, "<script>alert(1)</script>", 0, 1_000_000);
    root.attributes = vec![
        KeyValue::new(
            "http.request.header.x-request-id",
            "\"><script>alert(2)</script>",
        ),
        KeyValue::new("<script>key</script>", "v"),
    ];
    root.events.events.push(Event::new(
        "<script>event</script>",
        SystemTime::UNIX_EPOCH + Duration::from_nanos(T0 + 10),
        Vec::new(),
        0,
    ));
    let mut child = span(2, 1, "GET", 100_000, 600_000);
    child.status = Status::error("");
    let view = trace(vec![child, root]);
    let page = html::page("svc<script>", &[view], "/traces?limit=100");
    assert!(!page.contains("<script"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt;"));
    assert!(page.contains("svc&lt;script&gt;"));
    assert!(
        page.contains(
            "<section class=\"trace\" data-trace-id=\"0af7651916cd43dd8448eb211c80319c\">"
        )
    );
    assert!(page.contains(
        "<tr class=\"span\" data-span-id=\"0000000000000001\" \
         data-parent-id=\"b7ad6b7169203331\" data-depth=\"0\">"
    ));
    assert!(page.contains(
        "<tr class=\"span error\" data-span-id=\"0000000000000002\" \
         data-parent-id=\"0000000000000001\" data-depth=\"1\">"
    ));
    assert!(page.contains("<div class=\"bar error\" style=\"left:10.00%;width:50.00%\">"));
    assert!(page.contains("<td class=\"duration\">1.00 ms</td>"));
    assert!(page.contains("<span class=\"marker\">error</span>"));
    assert!(page.contains("<a class=\"json\" href=\"/traces?limit=100\">"));
}

#[test]
fn empty_page_says_so() {
    let page = html::page("svc", &[], "/traces");
    assert!(page.contains("No traces recorded yet"));
    assert!(!page.contains("<section"));
}

#[test]
fn query_parsing() {
    let id = TraceId::from(TRACE);
    assert_eq!(
        Query::parse(""),
        Ok(Query {
            format: Format::Json,
            limit: MAX_LIMIT,
            trace_id: None
        })
    );
    assert_eq!(
        Query::parse("format=html&limit=5&trace_id=0AF7651916CD43DD8448EB211C80319C"),
        Ok(Query {
            format: Format::Html,
            limit: 5,
            trace_id: Some(id)
        })
    );
    assert_eq!(Query::parse("limit=1000").map(|q| q.limit), Ok(MAX_LIMIT));
    let (format, message) = Query::parse("format=html&limit=x&trace_id=42&lmit=3").unwrap_err();
    assert_eq!(format, Format::Html);
    assert!(
        message.contains("limit: expected a number, got \"x\""),
        "{message}"
    );
    assert!(
        message.contains("trace_id: expected 32 hex digits"),
        "{message}"
    );
    assert!(
        message.contains("unknown query parameter \"lmit\""),
        "{message}"
    );
    let (format, message) = Query::parse("format=xml").unwrap_err();
    assert_eq!(format, Format::Json);
    assert!(
        message.contains("format: expected json or html"),
        "{message}"
    );
    // The `+` that `u128::from_str_radix` would accept is not a hex digit.
    assert!(Query::parse("trace_id=+af7651916cd43dd8448eb211c80319c").is_err());
}
