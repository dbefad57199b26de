//! The most recent traces this sidecar recorded, kept in memory for the admin `/traces`
//! view, so one sidecar can be inspected with no tracing backend. Fed by the batcher task
//! (off the request path), bounded by a number of traces. The batch's own span records are
//! moved in (only the kept ones' header values are copied out of their request buffers);
//! they are turned into OpenTelemetry's model only when the view is asked for.

use std::collections::VecDeque;
use std::sync::Mutex;

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::trace::SpanData;

use crate::trace::context::TraceId;
use crate::trace::span::SpanRecord;

/// Traces kept by default.
pub const DEFAULT_TRACES: usize = 100;

/// A bounded set of recent traces ordered by their latest span's arrival, most recently
/// active last; each trace holds its spans in arrival order. It behaves as an LRU cache fed
/// one span at a time: a span of a trace not kept pushes out the least recently active
/// trace when the view is full, and a trace pushed out starts again, empty, when another of
/// its spans arrives.
#[derive(Debug)]
pub struct RecentTraces {
    capacity: usize,
    /// Most spans kept per trace (a runaway trace cannot fill memory).
    max_spans: usize,
    traces: Mutex<Vec<Kept>>,
    scope: InstrumentationScope,
}

/// One kept trace; its spans are detached from their requests' buffers.
#[derive(Debug)]
struct Kept {
    trace_id: TraceId,
    spans: Vec<SpanRecord>,
}

/// One kept trace, in OpenTelemetry's model.
#[derive(Clone, Debug)]
pub struct RecentTrace {
    pub trace_id: opentelemetry::trace::TraceId,
    pub spans: Vec<SpanData>,
}

/// Most spans kept per trace.
const MAX_SPANS_PER_TRACE: usize = 256;

impl RecentTraces {
    pub fn new(capacity: usize) -> RecentTraces {
        RecentTraces::with_limits(capacity, MAX_SPANS_PER_TRACE)
    }

    fn with_limits(capacity: usize, max_spans: usize) -> RecentTraces {
        RecentTraces {
            capacity,
            max_spans,
            traces: Mutex::new(Vec::with_capacity(capacity)),
            scope: super::convert::scope(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Takes a finished batch's span records (in arrival order, `spans` is left empty);
    /// those it keeps are detached from their requests' read buffers
    /// (`SpanRecord::detach`).
    ///
    /// The result is what feeding the spans one by one to the LRU would leave, computed
    /// from the newest span backwards so that a span pushed out later in the same batch
    /// costs nothing: at a high request rate most of a batch's traces are (each request its
    /// own trace, a batch of 512 in a view of 100). A trace survives to the end iff it is
    /// among the last `capacity` distinct traces, and a span of it survives iff between it
    /// and the trace's next span (or the end) fewer than `capacity` other traces were
    /// active (the LRU's stack distance), which `Scan` reads off a move-to-front list.
    pub fn record(&self, spans: &mut Vec<SpanRecord>) {
        if self.capacity == 0 {
            spans.clear();
            return;
        }
        let Ok(mut traces) = self.traces.lock() else {
            spans.clear();
            return;
        };
        let mut scan = Scan::new(self.capacity);
        // The surviving traces, most recently active first, and the batch's spans that
        // survive with the index of their trace there, newest first.
        let mut finals: Vec<(TraceId, Option<Vec<SpanRecord>>, usize)> = Vec::new();
        let mut fresh: Vec<(usize, SpanRecord)> = Vec::new();
        for span in spans.drain(..).rev() {
            if scan.done() {
                break;
            }
            if let Some(at) = scan.access(span.trace_id) {
                if at == finals.len() {
                    finals.push((span.trace_id, None, 0));
                }
                if let Some(fin) = finals.get_mut(at) {
                    fin.2 += 1;
                }
                fresh.push((at, span));
            }
        }
        // The view as it was, newest first: each kept trace as one access before the batch.
        for kept in std::mem::take(&mut *traces).into_iter().rev() {
            if scan.done() {
                break;
            }
            if let Some(at) = scan.access(kept.trace_id) {
                if at == finals.len() {
                    finals.push((kept.trace_id, None, 0));
                }
                if let Some(fin) = finals.get_mut(at) {
                    fin.1 = Some(kept.spans);
                }
            }
        }
        let mut rebuilt: Vec<Kept> = finals
            .into_iter()
            .map(|(trace_id, old, new)| {
                let mut spans = old.unwrap_or_default();
                spans.reserve_exact(new.min(self.max_spans.saturating_sub(spans.len())));
                Kept { trace_id, spans }
            })
            .collect();
        for (at, mut span) in fresh.into_iter().rev() {
            if let Some(kept) = rebuilt.get_mut(at) {
                if kept.spans.len() < self.max_spans {
                    span.detach();
                    kept.spans.push(span);
                }
            }
        }
        rebuilt.reverse();
        *traces = rebuilt;
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

/// The LRU read backwards: accesses are fed newest first. `seen` is a move-to-front list of
/// the traces met so far, nearest first, cut at `capacity`: a trace's position in it is the
/// number of other traces active between this access and its next one, so an access found
/// in the list is one the LRU would have kept until then. The first `capacity` distinct
/// traces met are the ones that survive (`keep` is their index); a trace that falls off the
/// list had its older spans pushed out.
struct Scan {
    capacity: usize,
    seen: VecDeque<Seen>,
    /// How many of `seen` fall in each bucket of trace ids (`bucket`): a trace whose bucket
    /// is empty is not in the list, which spares the scan of the list in the common case
    /// of a batch of one-span traces.
    buckets: [u8; BUCKETS],
    finals: usize,
    /// Surviving traces still in `seen`: older accesses of them may survive too.
    alive: usize,
}

fn bucket_of(seen: &Seen) -> usize {
    bucket(&seen.trace_id)
}

/// Buckets of `Scan::buckets`: a power of two, well over the view's default capacity.
const BUCKETS: usize = 1024;

/// A trace id's bucket: its last bytes, the random ones (W3C Trace Context level 2: the
/// rightmost 7 bytes; X-Ray's ids start with a timestamp). A poor spread only costs scans.
fn bucket(trace_id: &TraceId) -> usize {
    let [.., a, b] = trace_id.0;
    usize::from(u16::from_le_bytes([b, a])) & (BUCKETS - 1)
}

struct Seen {
    trace_id: TraceId,
    keep: Option<usize>,
}

impl Scan {
    fn new(capacity: usize) -> Scan {
        Scan {
            capacity,
            seen: VecDeque::with_capacity(capacity + 1),
            buckets: [0; BUCKETS],
            finals: 0,
            alive: 0,
        }
    }

    /// The next access back in time: the index of the surviving trace it belongs to, if
    /// it survives.
    fn access(&mut self, trace_id: TraceId) -> Option<usize> {
        let bucket = bucket(&trace_id);
        let found = match self.buckets.get(bucket) {
            Some(0) | None => None,
            Some(_) => self
                .seen
                .iter()
                .position(|s| s.trace_id == trace_id)
                .and_then(|at| self.seen.remove(at)),
        };
        let found = found.inspect(|_| self.forget(bucket));
        let entry = found.unwrap_or_else(|| {
            // Not met yet: nothing has fallen off the list while survivors are still being
            // found (that takes `capacity` + 1 distinct traces), so this is a new trace.
            let keep = (self.finals < self.capacity).then(|| {
                self.finals += 1;
                self.alive += 1;
                self.finals - 1
            });
            Seen { trace_id, keep }
        });
        let keep = entry.keep;
        self.seen.push_front(entry);
        if let Some(count) = self.buckets.get_mut(bucket) {
            // At most `capacity` + 1 entries share a bucket; a count that would overflow
            // (a view larger than 254) stays at the maximum, which only costs scans.
            *count = count.saturating_add(1);
        }
        if self.seen.len() > self.capacity {
            if let Some(last) = self.seen.pop_back() {
                self.forget(bucket_of(&last));
                if last.keep.is_some() {
                    self.alive -= 1;
                }
            }
        }
        keep
    }

    /// An entry of `bucket` left `seen`.
    fn forget(&mut self, bucket: usize) {
        if let Some(count) = self.buckets.get_mut(bucket) {
            if *count < u8::MAX {
                *count = count.saturating_sub(1);
            }
        }
    }

    /// Every survivor is known and none can have older spans that survive.
    fn done(&self) -> bool {
        self.finals == self.capacity && self.alive == 0
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
        recent.record(&mut vec![span(1, 1), span(2, 2)]);
        assert_eq!(ids(&recent), [2, 1]);
        // A late span of trace 1 makes it the most recent: trace 2 is pushed out next.
        recent.record(&mut vec![span(1, 3)]);
        assert_eq!(ids(&recent), [1, 2]);
        recent.record(&mut vec![span(3, 4)]);
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
        recent.record(&mut vec![record, span(2, 2), span(3, 3)]);
        assert_eq!(ids(&recent), [3]);
        let mut kept = span(4, 4);
        kept.host = Some(http::HeaderValue::from_maybe_shared(head.slice(12..24)).unwrap());
        recent.record(&mut vec![kept]);
        let traces = recent.traces.lock().unwrap();
        let host = traces[0].spans[0].host.as_ref().unwrap();
        assert_eq!(host, "shop.example");
        assert!(!head.as_ptr_range().contains(&host.as_bytes().as_ptr()));
    }

    #[test]
    fn a_trace_pushed_out_starts_again_when_it_is_active_again() {
        let recent = RecentTraces::new(2);
        recent.record(&mut vec![span(9, 1)]);
        // Four traces interleaved in a view of two: the two whose latest spans came last
        // (4, then 1) stay, each with the spans that arrived since it last came back.
        let mut batch = vec![
            span(1, 2),
            span(3, 3),
            span(2, 4),
            span(4, 5),
            span(3, 6),
            span(1, 7),
            span(4, 8),
        ];
        recent.record(&mut batch);
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

    /// The view's definition, span by span: what `record` must leave.
    fn model(
        capacity: usize,
        max_spans: usize,
        batches: &[Vec<(u128, u64)>],
    ) -> Vec<(u128, Vec<u64>)> {
        let mut view: Vec<(u128, Vec<u64>)> = Vec::new();
        for &(trace, id) in batches.iter().flatten() {
            let mut kept = match view.iter().position(|t| t.0 == trace) {
                Some(at) => view.remove(at),
                None => {
                    if view.len() == capacity {
                        view.remove(0);
                    }
                    (trace, Vec::new())
                }
            };
            if kept.1.len() < max_spans {
                kept.1.push(id);
            }
            view.push(kept);
        }
        view.reverse();
        view
    }

    #[test]
    fn backwards_scan_leaves_what_the_span_by_span_lru_would() {
        let mut rng = fastrand::Rng::with_seed(7);
        for case in 0..3000 {
            let capacity = rng.usize(1..6);
            let max_spans = rng.usize(1..5);
            let alphabet = rng.u128(1..12);
            // Every other case, ids that differ only in their high bytes: all in one of
            // `Scan`'s buckets.
            let shift = if case % 2 == 0 { 0 } else { 64 };
            let mut id = 0;
            let batches: Vec<Vec<(u128, u64)>> = (0..rng.usize(1..4))
                .map(|_| {
                    (0..rng.usize(0..20))
                        .map(|_| {
                            id += 1;
                            (rng.u128(1..=alphabet) << shift, id)
                        })
                        .collect()
                })
                .collect();
            let recent = RecentTraces::with_limits(capacity, max_spans);
            for batch in &batches {
                let mut spans: Vec<_> = batch.iter().map(|&(t, i)| span(t, i)).collect();
                recent.record(&mut spans);
                assert!(spans.is_empty());
            }
            let got: Vec<(u128, Vec<u64>)> = recent
                .snapshot()
                .iter()
                .map(|t| {
                    let ids = t
                        .spans
                        .iter()
                        .map(|s| u64::from_be_bytes(s.span_context.span_id().to_bytes()))
                        .collect();
                    (u128::from_be_bytes(t.trace_id.to_bytes()), ids)
                })
                .collect();
            assert_eq!(
                got,
                model(capacity, max_spans, &batches),
                "case {case}: capacity {capacity}, {max_spans} spans a trace, batches {batches:?}"
            );
        }
    }
}
