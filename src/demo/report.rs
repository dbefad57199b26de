//! The demo's per-hop latency table, computed only from the spans the sidecars recorded (what
//! a tracing backend would show), never from timers of its own.
//!
//! For each hop, per trace:
//! - latency: the duration of the span the first sidecar on the hop recorded:
//!   `client->hub` the hub's SERVER span, `hub->fizzer` / `hub->buzzer` the hub's CLIENT span
//!   (its outbound listener) for that call;
//! - overhead: that duration minus the time the called app reported for itself
//!   (`server-timing: app;dur=...`, recorded by the called app's inbound sidecar as
//!   `http.response.header.server-timing`). So it is everything on the hop that is not the
//!   app: hoptrace's own work on each sidecar passed (one for `client->hub`; the hub's
//!   outbound and the dependency's inbound for the others) plus the loopback hops between.
//!
//! Percentiles are nearest-rank: the p-th of n sorted values is the ceil(p/100 × n)-th.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use opentelemetry::trace::{SpanId, SpanKind};
use opentelemetry::{Array, Value};
use opentelemetry_sdk::trace::SpanData;

use crate::export::recent::RecentTrace;

/// The hops of the table, in order.
pub const HOPS: [&str; 3] = ["client->hub", "hub->fizzer", "hub->buzzer"];

#[derive(Debug, Default)]
pub struct Report {
    /// Traces with a hub SERVER span.
    pub traces: usize,
    pub hops: Vec<HopStats>,
    /// How the hub sidecar found the parent of each call (the apps forward no context).
    pub joined: Joined,
}

/// The hub's CLIENT spans by `hoptrace.parent.method` (stitching).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Joined {
    /// The only inbound request in flight (`single_inflight`).
    pub single: usize,
    /// The learned model's best match, confident enough (`model`).
    pub model: usize,
    /// Not sure enough: a new trace with links to the candidates (`linked`).
    pub linked: usize,
    /// No inference: the call carried context, or none was in flight.
    pub other: usize,
}

#[derive(Debug)]
pub struct HopStats {
    pub hop: &'static str,
    /// Latency samples (ms), sorted.
    pub latency: Vec<f64>,
    /// Overhead samples (ms), sorted; fewer than `latency` when a called app's span is
    /// missing.
    pub overhead: Vec<f64>,
}

/// Builds the table from the recent traces of the hub, fizzer and buzzer sidecars.
pub fn build(hub: &[RecentTrace], fizzer: &[RecentTrace], buzzer: &[RecentTrace]) -> Report {
    // The called apps' SERVER spans by their parent: the hub's CLIENT span.
    let children: HashMap<SpanId, &SpanData> = fizzer
        .iter()
        .chain(buzzer)
        .flat_map(|t| &t.spans)
        .filter(|s| s.span_kind == SpanKind::Server)
        .map(|s| (s.parent_span_id, s))
        .collect();
    let mut hops: Vec<HopStats> = HOPS
        .iter()
        .map(|hop| HopStats {
            hop,
            latency: Vec::new(),
            overhead: Vec::new(),
        })
        .collect();
    let mut traces = 0;
    let mut joined = Joined::default();
    // Every hub CLIENT span counts, also one whose call was linked rather than parented
    // (it is the root of a trace of its own).
    for span in hub.iter().flat_map(|t| &t.spans) {
        match span.span_kind {
            SpanKind::Server => {
                traces += 1;
                add(&mut hops[0], span, Some(span));
            }
            SpanKind::Client => {
                let index = match string_attribute(span, "http.route") {
                    Some("fizzer") => 1,
                    Some("buzzer") => 2,
                    _ => continue,
                };
                let child = children.get(&span.span_context.span_id()).copied();
                add(&mut hops[index], span, child);
                match string_attribute(span, "hoptrace.parent.method") {
                    Some("single_inflight") => joined.single += 1,
                    Some("model") => joined.model += 1,
                    Some("linked") => joined.linked += 1,
                    _ => joined.other += 1,
                }
            }
            _ => {}
        }
    }
    for hop in &mut hops {
        hop.latency.sort_by(f64::total_cmp);
        hop.overhead.sort_by(f64::total_cmp);
    }
    Report {
        traces,
        hops,
        joined,
    }
}

/// Adds `span`'s duration, and its overhead when `app_span` says how long the app took.
fn add(hop: &mut HopStats, span: &SpanData, app_span: Option<&SpanData>) {
    let ms = duration(span).as_secs_f64() * 1e3;
    hop.latency.push(ms);
    if let Some(app) = app_span.and_then(app_time_ms) {
        hop.overhead.push(ms - app);
    }
}

fn duration(span: &SpanData) -> Duration {
    span.end_time
        .duration_since(span.start_time)
        .unwrap_or_default()
}

fn string_attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .and_then(|kv| match &kv.value {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        })
}

/// The app's own time from a recorded `server-timing: app;dur=<ms>` response header.
fn app_time_ms(span: &SpanData) -> Option<f64> {
    let kv = span
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "http.response.header.server-timing")?;
    let Value::Array(Array::String(values)) = &kv.value else {
        return None;
    };
    values.iter().find_map(|v| parse_server_timing(v.as_str()))
}

/// `app;dur=1.25` (among other metrics, comma-separated) → 1.25 (W3C Server Timing: `dur`
/// is in milliseconds).
pub fn parse_server_timing(header: &str) -> Option<f64> {
    header.split(',').find_map(|metric| {
        let mut parts = metric.split(';').map(str::trim);
        if parts.next()? != "app" {
            return None;
        }
        parts.find_map(|p| p.strip_prefix("dur=")?.parse().ok())
    })
}

/// Nearest-rank percentile of sorted values; `None` when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The table: a header line and one line per hop, columns separated by spaces, times in
/// milliseconds with three decimals, `-` where there is no sample.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<12} {:>6} {:>9} {:>9} {:>16} {:>16}",
            "hop", "calls", "p50_ms", "p99_ms", "overhead_p50_ms", "overhead_p99_ms"
        )?;
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        for hop in &self.hops {
            writeln!(
                f,
                "{:<12} {:>6} {:>9} {:>9} {:>16} {:>16}",
                hop.hop,
                hop.latency.len(),
                cell(percentile(&hop.latency, 50.0)),
                cell(percentile(&hop.latency, 99.0)),
                cell(percentile(&hop.overhead, 50.0)),
                cell(percentile(&hop.overhead, 99.0)),
            )?;
        }
        let j = &self.joined;
        writeln!(
            f,
            "\ncalls joined to the request that made them (the apps forward no trace header): {} of {}",
            j.single + j.model,
            j.single + j.model + j.linked + j.other,
        )?;
        writeln!(
            f,
            "  {} with one request in flight, {} by the learned match (confidence >= min_confidence), \
             {} linked to candidates instead (not sure enough), {} other",
            j.single, j.model, j.linked, j.other
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[1.0, 2.0], 50.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn server_timing() {
        assert_eq!(parse_server_timing("app;dur=1.250"), Some(1.25));
        assert_eq!(
            parse_server_timing("db;dur=3, app;desc=\"x\";dur=2"),
            Some(2.0)
        );
        assert_eq!(parse_server_timing("db;dur=3"), None);
    }
}
