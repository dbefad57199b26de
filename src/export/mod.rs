//! Getting spans out without slowing requests: `SpanSink` (the request path's handle: a
//! bounded queue, `try_send`, full → drop and count) → the batcher task (batches by size or
//! delay) → an exporter (OTLP over gRPC or HTTP/protobuf, Zipkin v2 JSON, or stdout). The conversion to the
//! OpenTelemetry model happens in the batcher task, off the request path.

mod batcher;
pub mod convert;
mod grpc;
mod otlp;
mod partial;
pub mod recent;
mod stdout;
pub mod wire;
mod zipkin;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::trace::span::SpanRecord;

pub use self::batcher::{ExportTask, spawn};
pub use self::otlp::ExporterError;
pub use self::partial::rejected_spans;

/// Counters of the export pipeline, shared with whoever reports them (logs, metrics).
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans started: a sampled request's SERVER span when the request arrives, each
    /// CLIENT span when its attempt begins; spans of unsampled requests when tail keeping
    /// keeps them. Once every span started has ended (no request in flight),
    /// `started = exported + dropped + failed + pending`.
    pub started: AtomicU64,
    /// Spans the exporter delivered.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full (or the exporter gone), or still queued or
    /// being exported when the shutdown flush ran out of time.
    pub dropped: AtomicU64,
    /// Spans lost because their export failed after retries.
    pub failed: AtomicU64,
    /// Spans of unsampled requests kept because they failed (`keep_errors`).
    pub kept_error: AtomicU64,
    /// Spans of unsampled requests kept because they were slow (`keep_slower_than`).
    pub kept_slow: AtomicU64,
    /// Spans the export task has taken from the queue and not yet exported or lost (the
    /// batch being built or sent).
    pub batched: AtomicU64,
    /// Spans queued and not yet exported, failed or discarded (`exporter = "none"`): what a
    /// shutdown that runs out of time loses.
    pending: AtomicU64,
}

impl ExportStats {
    /// `count` queued spans were exported, failed or discarded.
    fn resolved(&self, count: u64) {
        self.pending.fetch_sub(count, Ordering::Relaxed);
    }

    /// Counts every pending span as dropped (the export task is gone); returns how many.
    fn drop_pending(&self) -> u64 {
        let lost = self.pending.swap(0, Ordering::Relaxed);
        self.dropped.fetch_add(lost, Ordering::Relaxed);
        lost
    }

    pub fn snapshot(&self) -> [u64; 4] {
        [
            self.started.load(Ordering::Relaxed),
            self.exported.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        ]
    }
}

/// The request path's handle to the exporter: two methods, never waits.
#[derive(Clone, Debug)]
pub struct SpanSink {
    tx: mpsc::Sender<SpanRecord>,
    stats: Arc<ExportStats>,
}

impl SpanSink {
    /// Whether sampled spans should be recorded at all: true while the export task runs,
    /// with `exporter = "none"` too (its spans feed the recent-traces view).
    pub fn is_enabled(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Counts spans kept by tail keeping, by reason (`"error"` or `"slow"`).
    pub fn count_kept(&self, reason: &str, spans: u64) {
        let counter = match reason {
            "error" => &self.stats.kept_error,
            _ => &self.stats.kept_slow,
        };
        counter.fetch_add(spans, Ordering::Relaxed);
    }

    /// Counts `spans` spans as started (see `ExportStats::started`).
    pub fn started(&self, spans: u64) {
        self.stats.started.fetch_add(spans, Ordering::Relaxed);
    }

    /// Queues a finished span; when the queue is full the span is dropped and counted.
    pub fn try_send(&self, span: SpanRecord) {
        // Counted before the send, so the batcher never resolves a span not yet counted.
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(span).is_err() {
            self.stats.pending.fetch_sub(1, Ordering::Relaxed);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> &Arc<ExportStats> {
        &self.stats
    }

    /// Spans waiting in the queue (at most `queue_size`).
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Spans ended and not yet exported or lost: in the queue, or in the batches the export
    /// task is building or sending (at most `queue_size + 5 × batch_size`).
    pub fn pending(&self) -> u64 {
        self.queue_depth() as u64 + self.stats.batched.load(Ordering::Relaxed)
    }
}
