//! The most recent traces this sidecar recorded, kept in memory for the admin `/traces`
//! view, so one sidecar can be inspected with no tracing backend. Fed by the batcher task
//! (off the request path), bounded by a number of traces.

use std::collections::VecDeque;
use std::sync::Mutex;

use opentelemetry_sdk::trace::SpanData;

/// Traces kept by default.
pub const DEFAULT_TRACES: usize = 100;

/// A bounded ring of recent traces ordered by their latest span's arrival, most recently
/// active last; each trace holds its spans in arrival order.
#[derive(Debug)]
pub struct RecentTraces {
    capacity: usize,
    traces: Mutex<VecDeque<RecentTrace>>,
}

#[derive(Clone, Debug)]
pub struct RecentTrace {
    pub trace_id: opentelemetry::trace::TraceId,
    pub spans: Vec<SpanData>,
}

/// Most spans kept per trace (a runaway trace cannot fill memory).
const MAX_SPANS_PER_TRACE: usize = 256;

impl RecentTraces {
    pub fn new(capacity: usize) -> RecentTraces {
        RecentTraces {
            capacity,
            traces: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    /// How many traces are kept at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Adds spans; a span joins its trace if that trace is still kept (and moves it to the
    /// back, so a trace still growing is not the next one pushed out), else starts a new
    /// entry, pushing out the least recently active trace when full.
    pub fn record(&self, spans: &[SpanData]) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut traces) = self.traces.lock() else {
            return;
        };
        for span in spans {
            let trace_id = span.span_context.trace_id();
            let kept = traces.iter().rposition(|t| t.trace_id == trace_id);
            let mut trace = match kept.and_then(|at| traces.remove(at)) {
                Some(trace) => trace,
                None => {
                    if traces.len() == self.capacity {
                        traces.pop_front();
                    }
                    RecentTrace {
                        trace_id,
                        spans: Vec::new(),
                    }
                }
            };
            if trace.spans.len() < MAX_SPANS_PER_TRACE {
                trace.spans.push(span.clone());
            }
            traces.push_back(trace);
        }
    }

    /// The kept traces, most recently active first.
    pub fn snapshot(&self) -> Vec<RecentTrace> {
        self.traces
            .lock()
            .map(|traces| traces.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::SystemTime;

    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

    use super::RecentTraces;

    fn span(trace: u128, id: u64) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace),
                SpanId::from(id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: Cow::Borrowed("GET"),
            start_time: SystemTime::UNIX_EPOCH,
            end_time: SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    fn ids(recent: &RecentTraces) -> Vec<u128> {
        recent
            .snapshot()
            .iter()
            .map(|t| u128::from_be_bytes(t.trace_id.to_bytes()))
            .collect()
    }

    #[test]
    fn most_recently_active_first_and_least_recent_pushed_out() {
        let recent = RecentTraces::new(2);
        recent.record(&[span(1, 1), span(2, 2)]);
        assert_eq!(ids(&recent), [2, 1]);
        // A late span of trace 1 makes it the most recent: trace 2 is pushed out next.
        recent.record(&[span(1, 3)]);
        assert_eq!(ids(&recent), [1, 2]);
        recent.record(&[span(3, 4)]);
        assert_eq!(ids(&recent), [3, 1]);
        assert_eq!(recent.snapshot()[1].spans.len(), 2);
    }
}
