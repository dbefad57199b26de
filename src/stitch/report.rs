//! The periodic log line naming the routes whose app does not forward trace context: every
//! `report_interval`, the (inbound route, outbound route) pairs of calls that arrived
//! without a `traceparent`, with counts, so teams learn where to fix it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use super::Stitcher;
use crate::proxy::Shared;

/// Distinct pairs counted per interval; beyond, calls are counted under "other".
const MAX_PAIRS: usize = 256;
/// Pairs named in one line (most calls first).
const MAX_NAMED: usize = 10;
/// How often a disabled report (`report_interval = "0s"`) checks the config again.
const IDLE_CHECK: Duration = Duration::from_secs(5);

type Pair = (Option<Arc<str>>, Option<Arc<str>>);

#[derive(Debug, Default)]
pub struct Report {
    pairs: Mutex<HashMap<Pair, u64>>,
    other: std::sync::atomic::AtomicU64,
}

impl Report {
    /// A call without context on outbound route `outbound`, attributed to a request of
    /// inbound route `inbound` (unknown when linked or with no candidate).
    pub fn record(&self, inbound: Option<Arc<str>>, outbound: Option<Arc<str>>) {
        let mut pairs = self
            .pairs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (inbound, outbound);
        if let Some(n) = pairs.get_mut(&key) {
            *n += 1;
        } else if pairs.len() < MAX_PAIRS {
            pairs.insert(key, 1);
        } else {
            self.other
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The line's text since the last call, or `None` when every call carried context.
    pub fn take(&self) -> Option<String> {
        // Drained, not replaced: the map keeps its capacity, so `record` on the request path
        // does not allocate again for pairs it has seen before.
        let mut sorted: Vec<(Pair, u64)> = self
            .pairs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .collect();
        let other = self.other.swap(0, std::sync::atomic::Ordering::Relaxed);
        if sorted.is_empty() && other == 0 {
            return None;
        }
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut text = String::new();
        let name = |r: &Option<Arc<str>>| r.as_deref().unwrap_or("?").to_string();
        for ((inbound, outbound), n) in sorted.iter().take(MAX_NAMED) {
            if !text.is_empty() {
                text.push_str(", ");
            }
            let _ = write!(text, "{} -> {}: {n}", name(inbound), name(outbound));
        }
        let rest: u64 = sorted.iter().skip(MAX_NAMED).map(|(_, n)| n).sum::<u64>() + other;
        if rest > 0 {
            let _ = write!(text, ", others: {rest}");
        }
        Some(text)
    }
}

/// Writes the line every `[stitching] report_interval` (read again after each line, so a
/// reload changes it) until `stop`.
pub async fn run(stitcher: Arc<Stitcher>, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let interval = shared.load().config.stitching.report_interval;
        let wait = if interval.is_zero() {
            IDLE_CHECK
        } else {
            interval
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = crate::stopped(&mut stop) => return,
        }
        if interval.is_zero() {
            continue;
        }
        if let Some(routes) = stitcher.report().take() {
            warn!(
                target: "hoptrace::stitching",
                routes = %routes,
                interval = %humantime::format_duration(interval),
                "outbound calls without trace context (inbound route -> outbound route: calls); \
                 the app on these routes does not forward traceparent"
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn names_pairs_most_calls_first_and_resets() {
        let report = Report::default();
        let r = |s: &str| Some(Arc::<str>::from(s));
        for _ in 0..3 {
            report.record(r("orders"), r("payments"));
        }
        report.record(None, r("stock"));
        assert_eq!(
            report.take().as_deref(),
            Some("orders -> payments: 3, ? -> stock: 1")
        );
        assert_eq!(report.take(), None);
    }
}
