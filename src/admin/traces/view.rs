//! The `/traces` model: one kept trace as plain, serializable data, its spans in waterfall
//! order (parent before child, with their depth), shared by the JSON and the HTML renderings.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{Array, Value};
use opentelemetry_sdk::trace::SpanData;
use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::export::recent::RecentTrace;

#[derive(Debug, Serialize)]
pub struct TraceView {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The name of the earliest span whose parent is not in this trace.
    pub root: String,
    /// Start of the earliest span.
    pub start_unix_nano: u64,
    /// From the earliest start to the latest end.
    pub duration_ns: u64,
    pub span_count: usize,
    /// Some span has status error.
    pub error: bool,
    /// Waterfall order: depth-first from the roots, siblings by start time.
    pub spans: Vec<SpanView>,
}

#[derive(Debug, Serialize)]
pub struct SpanView {
    pub span_id: String,
    /// Also set when the parent is in another process (a remote `traceparent`).
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: &'static str,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub duration_ns: u64,
    pub status: &'static str,
    pub attributes: Map<String, Json>,
    pub events: Vec<EventView>,
    /// Distance from the span's root in this trace (0 for a root); only the HTML shows it.
    #[serde(skip)]
    pub depth: usize,
}

#[derive(Debug, Serialize)]
pub struct EventView {
    pub name: String,
    pub time_unix_nano: u64,
}

impl TraceView {
    pub fn new(trace: &RecentTrace) -> TraceView {
        let spans: Vec<SpanView> = waterfall(&trace.spans)
            .into_iter()
            .map(|(span, depth)| SpanView::new(span, depth))
            .collect();
        let start = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
        let end = spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(start);
        // Roots come first in waterfall order, earliest first; the first span is the
        // earliest root, or (no root: a parent cycle) the earliest span.
        let root = spans.first().map(|s| s.name.clone()).unwrap_or_default();
        TraceView {
            trace_id: trace.trace_id.to_string(),
            root,
            start_unix_nano: start,
            duration_ns: end.saturating_sub(start),
            span_count: spans.len(),
            error: spans.iter().any(|s| s.status == "error"),
            spans,
        }
    }
}

impl SpanView {
    fn new(span: &SpanData, depth: usize) -> SpanView {
        let start = unix_nanos(span.start_time);
        let end = unix_nanos(span.end_time).max(start);
        let parent = span.parent_span_id;
        SpanView {
            span_id: span.span_context.span_id().to_string(),
            parent_span_id: (parent != SpanId::INVALID).then(|| parent.to_string()),
            name: span.name.to_string(),
            kind: match span.span_kind {
                SpanKind::Server => "server",
                SpanKind::Client => "client",
                SpanKind::Producer => "producer",
                SpanKind::Consumer => "consumer",
                SpanKind::Internal => "internal",
            },
            start_unix_nano: start,
            end_unix_nano: end,
            duration_ns: end - start,
            status: match span.status {
                Status::Unset => "unset",
                Status::Ok => "ok",
                Status::Error { .. } => "error",
            },
            attributes: span
                .attributes
                .iter()
                .map(|kv| (kv.key.as_str().to_string(), json_value(&kv.value)))
                .collect(),
            events: span
                .events
                .iter()
                .map(|e| EventView {
                    name: e.name.to_string(),
                    time_unix_nano: unix_nanos(e.timestamp),
                })
                .collect(),
            depth,
        }
    }

    /// What the span's HTTP exchange ended with: the response status code and/or the
    /// `error.type` (OTel HTTP semantic conventions), if any.
    pub fn outcome(&self) -> String {
        let code = self.attributes.get("http.response.status_code");
        let error = self.attributes.get("error.type");
        [code, error]
            .into_iter()
            .flatten()
            .map(display_value)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The spans in waterfall order with their depth: depth-first from the roots (spans whose
/// parent is not in `spans`), siblings by start time. Spans caught in a parent cycle (only
/// possible with colliding ids) are not lost: they follow, as roots of what is left.
pub fn waterfall(spans: &[SpanData]) -> Vec<(&SpanData, usize)> {
    let mut by_start: Vec<usize> = (0..spans.len()).collect();
    // Stable: equal start times keep arrival order.
    by_start.sort_by_key(|&i| spans[i].start_time);
    let index: HashMap<SpanId, usize> = by_start
        .iter()
        .map(|&i| (spans[i].span_context.span_id(), i))
        .collect();
    let mut children: HashMap<SpanId, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for &i in &by_start {
        let span = &spans[i];
        let parent = span.parent_span_id;
        if parent != span.span_context.span_id() && index.contains_key(&parent) {
            children.entry(parent).or_default().push(i);
        } else {
            roots.push(i);
        }
    }
    let mut order = Vec::with_capacity(spans.len());
    let mut visited = vec![false; spans.len()];
    for start in roots.into_iter().chain(by_start) {
        let mut stack = vec![(start, 0)];
        while let Some((i, depth)) = stack.pop() {
            if std::mem::replace(&mut visited[i], true) {
                continue;
            }
            let span = &spans[i];
            order.push((span, depth));
            if let Some(kids) = children.get(&span.span_context.span_id()) {
                // Reversed onto the stack so the earliest child is visited first.
                stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
            }
        }
    }
    order
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn json_value(value: &Value) -> Json {
    match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::I64(n) => Json::from(*n),
        // Not finite → null.
        Value::F64(f) => Json::from(*f),
        Value::String(s) => Json::from(s.as_str()),
        Value::Array(Array::Bool(v)) => Json::from(v.clone()),
        Value::Array(Array::I64(v)) => Json::from(v.clone()),
        Value::Array(Array::F64(v)) => v.iter().map(|f| Json::from(*f)).collect(),
        Value::Array(Array::String(v)) => v.iter().map(|s| Json::from(s.as_str())).collect(),
        other => Json::from(other.to_string()),
    }
}

/// A JSON attribute value as text: strings bare, arrays of strings joined by ", ".
pub fn display_value(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        Json::Array(items) => items
            .iter()
            .map(display_value)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}
