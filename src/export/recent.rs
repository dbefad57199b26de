//! The most recent traces this sidecar recorded, kept in memory for the admin `/traces`
//! view, so one sidecar can be inspected with no tracing backend. Fed by the batcher task
//! (off the request path), bounded by a number of traces.

use std::collections::VecDeque;
use std::sync::Mutex;

use opentelemetry_sdk::trace::SpanData;

/// Traces kept by default.
pub const DEFAULT_TRACES: usize = 100;

/// A bounded ring of recent traces, newest last; each trace holds its spans in arrival order.
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

    /// Adds spans; a span joins its trace if that trace is still kept, else starts a new
    /// entry, pushing out the oldest trace when full.
    pub fn record(&self, spans: &[SpanData]) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut traces) = self.traces.lock() else {
            return;
        };
        for span in spans {
            let trace_id = span.span_context.trace_id();
            match traces.iter_mut().rev().find(|t| t.trace_id == trace_id) {
                Some(trace) if trace.spans.len() < MAX_SPANS_PER_TRACE => {
                    trace.spans.push(span.clone())
                }
                Some(_) => {}
                None => {
                    if traces.len() == self.capacity {
                        traces.pop_front();
                    }
                    traces.push_back(RecentTrace {
                        trace_id,
                        spans: vec![span.clone()],
                    });
                }
            }
        }
    }

    /// The kept traces, newest first.
    pub fn snapshot(&self) -> Vec<RecentTrace> {
        self.traces
            .lock()
            .map(|traces| traces.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}
