//! `exporter = "stdout"`: one JSON object per span on stdout, for local debugging.

use std::io::Write as _;
use std::time::UNIX_EPOCH;

use opentelemetry::Value;
use opentelemetry_sdk::trace::SpanData;

pub fn write(spans: &[SpanData]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for span in spans {
        let attributes: serde_json::Map<String, serde_json::Value> = span
            .attributes
            .iter()
            .map(|kv| (kv.key.to_string(), json(&kv.value)))
            .collect();
        let nanos = |t: std::time::SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        };
        let line = serde_json::json!({
            "trace_id": span.span_context.trace_id().to_string(),
            "span_id": span.span_context.span_id().to_string(),
            "parent_span_id": (span.parent_span_id != opentelemetry::trace::SpanId::INVALID)
                .then(|| span.parent_span_id.to_string()),
            "name": span.name,
            "kind": format!("{:?}", span.span_kind).to_lowercase(),
            "start_unix_nano": nanos(span.start_time),
            "end_unix_nano": nanos(span.end_time),
            "status": format!("{:?}", span.status),
            "attributes": attributes,
            "events": span.events.events.iter().map(|e| serde_json::json!({
                "name": e.name,
                "time_unix_nano": nanos(e.timestamp),
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{line}")?;
    }
    out.flush()
}

fn json(value: &Value) -> serde_json::Value {
    match value {
        Value::Bool(b) => (*b).into(),
        Value::I64(i) => (*i).into(),
        Value::F64(f) => (*f).into(),
        Value::String(s) => s.as_str().into(),
        other => other.to_string().into(),
    }
}
