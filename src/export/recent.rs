//! The most recent traces this sidecar recorded, kept in memory for the admin `/traces`
//! view, so one sidecar can be inspected with no tracing backend. Fed by the batcher task
//! (off the request path), bounded by a number of traces. The batch's own span records are
//! moved in (nothing is copied); they are turned into OpenTelemetry's model only when the
//! view is asked for.

use std::collections::VecDeque;
use std::sync::Mutex;

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::trace::SpanData;

use crate::trace::context::TraceId;
use crate::trace::span::SpanRecord;

/// Traces kept by default.
pub const DEFAULT_TRACES: usize = 100;

/// A bounded ring of recent traces ordered by their latest span's arrival, most recently
/// active last; each trace holds its spans in arrival order.
#[derive(Debug)]
pub struct RecentTraces {
    capacity: usize,
    traces: Mutex<VecDeque<Kept>>,
    scope: InstrumentationScope,
}

#[derive(Debug)]
struct Kept {
    trace_id: TraceId,
    spans: Vec<SpanRecord>,
    /// The first `owned` spans are detached from their requests' buffers.
    owned: usize,
}

/// One kept trace, in OpenTelemetry's model.
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
            scope: super::convert::scope(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Takes a finished batch's span records (in arrival order); those it keeps are
    /// detached from their requests' read buffers (`SpanRecord::detach`).
    pub fn record(&self, spans: impl IntoIterator<Item = SpanRecord>) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut traces) = self.traces.lock() else {
            return;
        };
        for span in spans {
            let trace_id = span.trace_id;
            let kept = traces.iter().rposition(|t| t.trace_id == trace_id);
            let mut trace = match kept.and_then(|at| traces.remove(at)) {
                Some(trace) => trace,
                None => {
                    if traces.len() == self.capacity {
                        traces.pop_front();
                    }
                    Kept {
                        trace_id,
                        spans: Vec::new(),
                        owned: 0,
                    }
                }
            };
            if trace.spans.len() < MAX_SPANS_PER_TRACE {
                trace.spans.push(span);
            }
            traces.push_back(trace);
        }
        // Only what stays is detached: at a high request rate most of a batch's spans are
        // pushed out by the batch's later traces before it ends.
        for trace in traces.iter_mut() {
            for span in trace.spans.iter_mut().skip(trace.owned) {
                span.detach();
            }
            trace.owned = trace.spans.len();
        }
    }

    /// Spans kept, over all traces.
    pub fn span_count(&self) -> usize {
        self.traces
            .lock()
            .map(|traces| traces.iter().map(|t| t.spans.len()).sum())
            .unwrap_or_default()
    }

    /// The kept traces, most recently active first.
    pub fn snapshot(&self) -> Vec<RecentTrace> {
        let Ok(traces) = self.traces.lock() else {
            return Vec::new();
        };
        traces
            .iter()
            .rev()
            .map(|t| RecentTrace {
                trace_id: opentelemetry::trace::TraceId::from_bytes(t.trace_id.0),
                spans: t
                    .spans
                    .iter()
                    .map(|s| super::convert::to_span_data(s, &self.scope))
                    .collect(),
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use crate::trace::context::{SpanId, TraceId};
    use crate::trace::span::SpanRecord;

    use super::RecentTraces;

    fn span(trace: u128, id: u64) -> SpanRecord {
        let mut record = crate::export::convert::test_record();
        record.trace_id = TraceId(trace.to_be_bytes());
        record.span_id = SpanId(id.to_be_bytes());
        record
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
        recent.record(vec![span(1, 1), span(2, 2)]);
        assert_eq!(ids(&recent), [2, 1]);
        // A late span of trace 1 makes it the most recent: trace 2 is pushed out next.
        recent.record(vec![span(1, 3)]);
        assert_eq!(ids(&recent), [1, 2]);
        recent.record(vec![span(3, 4)]);
        assert_eq!(ids(&recent), [3, 1]);
        let spans = &recent.snapshot()[1].spans;
        let ids: Vec<u64> = spans
            .iter()
            .map(|s| u64::from_be_bytes(s.span_context.span_id().to_bytes()))
            .collect();
        assert_eq!(ids, [1, 3]);
        assert_eq!(recent.span_count(), 3);
    }

    #[test]
    fn kept_spans_are_detached_from_their_heads() {
        let head = bytes::Bytes::from(b"shop.example".repeat(100));
        let mut record = span(1, 1);
        record.host = Some(http::HeaderValue::from_maybe_shared(head.slice(0..12)).unwrap());
        let recent = RecentTraces::new(1);
        // Trace 2 pushes trace 1 out within the batch; trace 3 stays.
        recent.record(vec![record, span(2, 2), span(3, 3)]);
        assert_eq!(ids(&recent), [3]);
        let mut kept = span(4, 4);
        kept.host = Some(http::HeaderValue::from_maybe_shared(head.slice(12..24)).unwrap());
        recent.record(vec![kept]);
        let traces = recent.traces.lock().unwrap();
        let host = traces[0].spans[0].host.as_ref().unwrap();
        assert_eq!(host, "shop.example");
        assert!(!head.as_ptr_range().contains(&host.as_bytes().as_ptr()));
        assert_eq!(traces[0].owned, 1);
    }

    #[test]
    fn a_trace_pushed_out_starts_again_when_it_is_active_again() {
        let recent = RecentTraces::new(2);
        recent.record(vec![span(9, 1)]);
        // Four traces interleaved in a view of two: the two whose latest spans came last
        // (4, then 1) stay, each with the spans that arrived since it last came back.
        let batch = vec![
            span(1, 2),
            span(3, 3),
            span(2, 4),
            span(4, 5),
            span(3, 6),
            span(1, 7),
            span(4, 8),
        ];
        recent.record(batch);
        assert_eq!(ids(&recent), [4, 1]);
        let spans: Vec<Vec<u64>> = recent
            .snapshot()
            .iter()
            .map(|t| {
                t.spans
                    .iter()
                    .map(|s| u64::from_be_bytes(s.span_context.span_id().to_bytes()))
                    .collect()
            })
            .collect();
        assert_eq!(spans, [vec![8], vec![7]]);
        assert_eq!(recent.span_count(), 2);
    }
}
