//! `GET /traces?format=html`: the kept traces as one server-rendered page with a waterfall per
//! trace. No script and no external asset. Every value taken from a span is escaped: span
//! attributes hold request data (paths, captured headers), so they are attacker-controlled.

use std::fmt::{self, Display, Write};

use super::view::{SpanView, TraceView, display_value};

/// Inline style: the page must work with no asset server and under `default-src 'none'`.
const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
header{display:flex;gap:1em;align-items:baseline}\
h1{font-size:1.3em;margin:0}h2{font-size:1.05em;margin:1.5em 0 .4em}\
code{font:12px ui-monospace,monospace}.meta{color:#666;font-weight:normal}\
.marker{background:#c62828;color:#fff;border-radius:3px;padding:0 .4em;font-size:.85em}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:2px 6px;vertical-align:top}\
th{border-bottom:1px solid #ccc;font-weight:600}tr.span:nth-child(even){background:#f6f6f6}\
td.timeline{width:40%}.track{position:relative;height:12px;margin-top:4px;background:#eee}\
.bar{position:absolute;top:0;height:100%;min-width:1px;background:#1e88e5}\
.bar.error,tr.error td.status{background:#c62828;color:#fff}\
details{font-size:12px;color:#444}dl{margin:.2em 0;display:grid;grid-template-columns:auto 1fr;gap:0 1em}\
dt{font-family:ui-monospace,monospace}dd{margin:0;word-break:break-all}.empty{color:#666}";

/// The page: a link to the same view as JSON, then one section per trace (or the empty state).
pub fn page(service: &str, traces: &[TraceView], json_href: &str) -> String {
    let mut out = String::with_capacity(4096 + traces.len() * 2048);
    let service = Escaped(service);
    // `write!` into a String cannot fail.
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{service} · recent traces · hoptrace</title><style>{STYLE}</style></head>\n\
         <body><header><h1>Recent traces · {service}</h1>\
         <a class=\"json\" href=\"{}\">JSON</a></header>\n",
        Escaped(json_href)
    );
    if traces.is_empty() {
        out.push_str(
            "<p class=\"empty\">No traces recorded yet: traces appear here once sampled \
             requests went through this sidecar.</p>\n",
        );
    }
    for trace in traces {
        section(&mut out, trace);
    }
    out.push_str("</body></html>\n");
    out
}

fn section(out: &mut String, trace: &TraceView) {
    let _ = write!(
        out,
        "<section class=\"trace\" data-trace-id=\"{id}\">\n<h2><code>{id}</code> {root} \
         <span class=\"meta\">{duration} · {count} span{s}</span>{marker}</h2>\n\
         <table class=\"waterfall\"><thead><tr><th>span</th><th>kind</th><th>status</th>\
         <th>duration</th><th>timeline</th></tr></thead><tbody>\n",
        id = Escaped(&trace.trace_id),
        root = Escaped(&trace.root),
        duration = duration(trace.duration_ns),
        count = trace.span_count,
        s = if trace.span_count == 1 { "" } else { "s" },
        marker = if trace.error {
            " <span class=\"marker\">error</span>"
        } else {
            ""
        },
    );
    for span in &trace.spans {
        row(out, trace, span);
    }
    out.push_str("</tbody></table>\n</section>\n");
}

fn row(out: &mut String, trace: &TraceView, span: &SpanView) {
    let error = if span.status == "error" { " error" } else { "" };
    let bar = Bar::new(trace, span);
    let _ = write!(
        out,
        "<tr class=\"span{error}\" data-span-id=\"{id}\" data-parent-id=\"{parent}\" \
         data-depth=\"{depth}\"><td class=\"name\" style=\"padding-left:{indent:.2}em\">{name}",
        id = Escaped(&span.span_id),
        parent = Escaped(span.parent_span_id.as_deref().unwrap_or("")),
        depth = span.depth,
        // Capped so a deep trace stays readable; data-depth keeps the real value.
        indent = 0.4 + 1.25 * span.depth.min(24) as f64,
        name = Escaped(&span.name),
    );
    details(out, span);
    let _ = writeln!(
        out,
        "</td><td class=\"kind\">{kind}</td><td class=\"status\">{outcome}</td>\
         <td class=\"duration\">{duration}</td><td class=\"timeline\"><div class=\"track\">\
         <div class=\"bar{error}\" style=\"left:{left:.2}%;width:{width:.2}%\"></div></div>\
         </td></tr>",
        kind = span.kind,
        outcome = Escaped(&span.outcome()),
        duration = duration(span.duration_ns),
        left = bar.left,
        width = bar.width,
    );
}

/// Attributes and events, folded (no script needed).
fn details(out: &mut String, span: &SpanView) {
    if span.attributes.is_empty() && span.events.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<details><summary>{} attributes, {} events</summary><dl>",
        span.attributes.len(),
        span.events.len()
    );
    for (key, value) in &span.attributes {
        let value = display_value(value);
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", Escaped(key), Escaped(&value));
    }
    for event in &span.events {
        let offset = event.time_unix_nano.saturating_sub(span.start_unix_nano);
        let _ = write!(
            out,
            "<dt>event</dt><dd>{} at +{}</dd>",
            Escaped(&event.name),
            duration(offset)
        );
    }
    out.push_str("</dl></details>");
}

/// A span's bar in its trace's timeline, in percent of the trace's time range.
#[derive(Debug, PartialEq)]
pub struct Bar {
    pub left: f64,
    pub width: f64,
}

impl Bar {
    pub fn new(trace: &TraceView, span: &SpanView) -> Bar {
        if trace.duration_ns == 0 {
            return Bar {
                left: 0.0,
                width: 100.0,
            };
        }
        let range = trace.duration_ns as f64;
        let offset = span.start_unix_nano.saturating_sub(trace.start_unix_nano) as f64;
        let left = (offset / range * 100.0).clamp(0.0, 100.0);
        let width = (span.duration_ns as f64 / range * 100.0).clamp(0.0, 100.0 - left);
        Bar { left, width }
    }
}

/// `999 ns`, `1.50 µs`, `1.23 ms`, `2.50 s`.
pub fn duration(ns: u64) -> String {
    let ns_f = ns as f64;
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.2} µs", ns_f / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns_f / 1e6),
        _ => format!("{:.2} s", ns_f / 1e9),
    }
}

/// Text made safe for HTML element content and quoted attribute values.
pub struct Escaped<'a>(pub &'a str);

impl Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            let (plain, tail) = rest.split_at(at);
            f.write_str(plain)?;
            let mut chars = tail.chars();
            f.write_str(match chars.next() {
                Some('&') => "&amp;",
                Some('<') => "&lt;",
                Some('>') => "&gt;",
                Some('"') => "&quot;",
                _ => "&#39;",
            })?;
            rest = chars.as_str();
        }
        f.write_str(rest)
    }
}
