//! The export task: collects spans from the queue into batches, sends a batch when it holds
//! `batch_size` spans or when `batch_delay` has passed, and on shutdown drains the queue
//! within a deadline. Exports run one at a time (the OpenTelemetry exporter contract).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use prometheus_client::metrics::histogram::Histogram;

use super::recent::RecentTraces;
use super::{ExportStats, ExporterError, SpanSink, convert, grpc, otlp, stdout, wire, zipkin};
use crate::config::{Config, ExporterKind, OtlpProtocol};
use crate::trace::span::SpanRecord;

enum Backend {
    /// OTLP/gRPC: spans encoded by `wire` as they arrive, under `resource`.
    OtlpGrpc {
        exporter: Arc<grpc::GrpcExporter>,
        resource: Box<Resource>,
    },
    /// OTLP/HTTP: opentelemetry-otlp's exporter, fed `SpanData`.
    OtlpHttp(Box<opentelemetry_otlp::SpanExporter>),
    /// Zipkin v2 JSON; `service` is the local endpoint's `serviceName`.
    Zipkin {
        exporter: Box<zipkin::Exporter>,
        service: String,
    },
    Stdout,
    /// `exporter = "none"`: spans only feed the recent-traces view.
    None,
    /// Tests: each batch's size, and when it left (tokio's clock, which tests may pause).
    #[cfg(test)]
    Capture(mpsc::UnboundedSender<(tokio::time::Instant, usize)>),
}

/// The running export task. Dropping it leaves the task running until every sink is gone.
#[derive(Debug)]
pub struct ExportTask {
    flush: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    stats: Arc<ExportStats>,
}

/// The OpenTelemetry resource of this process: `service.name` (config, overridden by
/// `OTEL_SERVICE_NAME` when loaded from a file), `service.instance.id` (random per process),
/// `host.name`, and `OTEL_RESOURCE_ATTRIBUTES`.
pub fn resource(config: &Config) -> Resource {
    let instance = format!("{:032x}", fastrand::u128(..));
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let mut attributes = vec![
        KeyValue::new("service.instance.id", instance),
        KeyValue::new("host.name", host),
    ];
    attributes.extend(
        config
            .service
            .resource_attributes
            .iter()
            .filter(|(k, _)| k != "service.name")
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    Resource::builder_empty()
        .with_service_name(config.service.name.clone())
        .with_attributes(attributes)
        .build()
}

/// Starts the export task for `config.tracing`; every batch also goes to `recent`. Must run
/// inside a tokio runtime.
pub fn spawn(
    config: &Config,
    recent: Arc<RecentTraces>,
    batch_duration: Histogram,
) -> Result<(SpanSink, ExportTask), ExporterError> {
    let tracing = &config.tracing;
    let backend = match tracing.exporter {
        ExporterKind::None => Backend::None,
        ExporterKind::Stdout => Backend::Stdout,
        ExporterKind::Zipkin => Backend::Zipkin {
            exporter: Box::new(zipkin::build(&tracing.zipkin)?),
            service: config.service.name.clone(),
        },
        ExporterKind::Otlp => match tracing.otlp.protocol {
            OtlpProtocol::Grpc => Backend::OtlpGrpc {
                exporter: Arc::new(grpc::GrpcExporter::build(&tracing.otlp)?),
                resource: Box::new(resource(config)),
            },
            OtlpProtocol::HttpProtobuf => Backend::OtlpHttp(Box::new(otlp::build_http(
                &tracing.otlp,
                &resource(config),
            )?)),
        },
    };
    let (tx, rx) = mpsc::channel(tracing.queue_size.max(1));
    let stats = Arc::new(ExportStats::default());
    let (flush, flush_rx) = oneshot::channel();
    let task = tokio::spawn(run(
        rx,
        flush_rx,
        backend,
        Batching {
            size: tracing.batch_size.max(1),
            delay: tracing.batch_delay,
        },
        stats.clone(),
        recent,
        batch_duration,
    ));
    let sink = SpanSink {
        tx,
        stats: stats.clone(),
    };
    Ok((
        sink,
        ExportTask {
            flush: Some(flush),
            task: Some(task),
            stats,
        },
    ))
}

impl ExportTask {
    /// Exports what is queued, waiting at most `deadline`. Then the export task is stopped:
    /// spans still queued, batched or being exported are lost, and counted as dropped, so
    /// that `started = exported + dropped + failed` holds at exit.
    pub async fn shutdown(mut self, deadline: Duration) {
        if let Some(flush) = self.flush.take() {
            let _ = flush.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(deadline, &mut task).await.is_err() {
                task.abort();
                // Cancelled at its next await: nothing counts spans after this.
                let _ = task.await;
                let lost = self.stats.drop_pending();
                warn!(
                    ?deadline,
                    lost,
                    "span export did not finish before the shutdown deadline; spans still \
                     queued or being exported are counted as dropped"
                );
            }
        }
    }
}

struct Batching {
    size: usize,
    delay: Duration,
}

async fn run(
    mut rx: mpsc::Receiver<SpanRecord>,
    mut flush: oneshot::Receiver<()>,
    backend: Backend,
    batching: Batching,
    stats: Arc<ExportStats>,
    recent: Arc<RecentTraces>,
    batch_duration: Histogram,
) {
    let Batching {
        size: batch_size,
        delay: batch_delay,
    } = batching;
    let in_flight = Arc::new(Semaphore::new(GRPC_IN_FLIGHT as usize));
    let sinks = Sinks {
        backend: &backend,
        stats: &stats,
        recent: &recent,
        batch_duration: &batch_duration,
        in_flight: &in_flight,
    };
    let scope = convert::scope();
    let keep = recent.capacity() > 0;
    let mut batch = Batch::with_capacity(batch_size, &backend, &scope);
    // The first tick one delay from now (`interval` would fire at once and send whatever
    // had arrived as a tiny batch).
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + batch_delay, batch_delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Spans are taken off the queue up to a batch at a time: one wake-up and one unit of
    // the task's scheduling budget for all of them. Taken one by one, the task would yield
    // after tokio's budget (128 receives) while hundreds of connection tasks on the same
    // thread each queue a span per turn, and fall behind until the queue overflows.
    let mut arrived = Vec::with_capacity(batch_size);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut arrived, batch_size) => {
                // Every sink is gone: nothing more can arrive.
                if n == 0 {
                    break;
                }
                stats.batched.fetch_add(n as u64, Ordering::Relaxed);
                for span in arrived.drain(..) {
                    batch.push(span, keep, &scope, &backend);
                    if batch.len() >= batch_size {
                        sinks.export(&mut batch).await;
                    }
                }
            }
            _ = tick.tick() => {
                if !batch.is_empty() {
                    sinks.export(&mut batch).await;
                }
            }
            _ = &mut flush => {
                // Shutdown: take what is queued now, export it, stop.
                rx.close();
                while let Ok(span) = rx.try_recv() {
                    batch.push(span, keep, &scope, &backend);
                    stats.batched.fetch_add(1, Ordering::Relaxed);
                    if batch.len() >= batch_size {
                        sinks.export(&mut batch).await;
                    }
                }
                break;
            }
        }
    }
    if !batch.is_empty() {
        sinks.export(&mut batch).await;
    }
    sinks.settle().await;
    if let Backend::OtlpHttp(exporter) = &backend {
        let _ = exporter.shutdown();
    }
    debug!("span export stopped");
}

/// Spans waiting for export, in the form the backend takes: OTLP/gRPC's encoded request,
/// the OpenTelemetry model (OTLP/HTTP, stdout), Zipkin's JSON; built from the record while
/// the record is at hand.
struct Batch {
    wire: Option<wire::SpanBatch>,
    spans: Vec<SpanData>,
    zipkin: Vec<serde_json::Value>,
    /// The records themselves, for the recent-traces view (moved there, not copied).
    records: Vec<SpanRecord>,
    len: usize,
}

impl Batch {
    fn with_capacity(
        n: usize,
        backend: &Backend,
        scope: &opentelemetry::InstrumentationScope,
    ) -> Batch {
        let wire = match backend {
            Backend::OtlpGrpc { resource, .. } => Some(wire::SpanBatch::new(resource, scope)),
            _ => None,
        };
        let zipkin = matches!(backend, Backend::Zipkin { .. });
        let model = matches!(backend, Backend::OtlpHttp(_) | Backend::Stdout);
        Batch {
            wire,
            spans: Vec::with_capacity(if model { n } else { 0 }),
            zipkin: Vec::with_capacity(if zipkin { n } else { 0 }),
            records: Vec::with_capacity(n),
            len: 0,
        }
    }

    /// Adds a span; `keep`: its record goes to the recent-traces view too.
    fn push(
        &mut self,
        span: SpanRecord,
        keep: bool,
        scope: &opentelemetry::InstrumentationScope,
        backend: &Backend,
    ) {
        self.len += 1;
        match backend {
            Backend::OtlpGrpc { .. } => {
                if let Some(wire) = &mut self.wire {
                    wire.push(&span);
                }
            }
            Backend::Zipkin { service, .. } => {
                let data = convert::to_span_data(&span, scope);
                self.zipkin.push(zipkin::to_json(&span, &data, service));
            }
            Backend::OtlpHttp(_) | Backend::Stdout => {
                self.spans.push(convert::to_span_data(&span, scope));
            }
            Backend::None => {}
            #[cfg(test)]
            Backend::Capture(_) => {}
        }
        if keep {
            // Detached (its header values copied out of the request's head buffer) only
            // if the recent-traces view keeps it; until then it holds that buffer, which
            // is the size of the head's first read (`proxy::server`), for one batch.
            self.records.push(span);
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Where a finished batch goes: the recent-traces view, then the exporter.
struct Sinks<'a> {
    backend: &'a Backend,
    stats: &'a Arc<ExportStats>,
    recent: &'a RecentTraces,
    batch_duration: &'a Histogram,
    /// OTLP/gRPC requests in flight, at most `GRPC_IN_FLIGHT`.
    in_flight: &'a Arc<Semaphore>,
}

/// OTLP/gRPC export requests sent before the first is answered. One at a time, a batch's
/// round trip to a collector on a busy machine bounds the export rate: at 40,000 requests/s
/// on one core (`benches/load.py`, 512 connections) the queue overflowed while the task
/// waited for answers.
const GRPC_IN_FLIGHT: u32 = 4;

impl Sinks<'_> {
    async fn export(&self, batch: &mut Batch) {
        self.recent.record(&mut batch.records);
        let count = batch.len() as u64;
        let started = std::time::Instant::now();
        if let (Backend::OtlpGrpc { exporter, .. }, Some(wire)) = (self.backend, &mut batch.wire) {
            // Sent from its own task, so the next batch is built meanwhile; waits here only
            // when `GRPC_IN_FLIGHT` are out.
            let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
                return;
            };
            batch.len = 0;
            let request = wire.take();
            let exporter = exporter.clone();
            let stats = self.stats.clone();
            let batch_duration = self.batch_duration.clone();
            tokio::spawn(async move {
                let result = exporter.export(request).await;
                resolve(&stats, count, result);
                batch_duration.observe(started.elapsed().as_secs_f64());
                stats.batched.fetch_sub(count, Ordering::Relaxed);
                drop(permit);
            });
            return;
        }
        export(self.backend, batch, self.stats).await;
        self.batch_duration.observe(started.elapsed().as_secs_f64());
        // Exported, failed, or (exporter "none") done with: no longer pending.
        self.stats.batched.fetch_sub(count, Ordering::Relaxed);
    }

    /// Waits for the OTLP/gRPC requests still in flight.
    async fn settle(&self) {
        let _ = self.in_flight.acquire_many(GRPC_IN_FLIGHT).await;
    }
}

/// Counts a batch's outcome.
fn resolve(stats: &ExportStats, count: u64, result: Result<(), String>) {
    stats.resolved(count);
    match result {
        Ok(()) => {
            stats.exported.fetch_add(count, Ordering::Relaxed);
        }
        Err(err) => {
            let failed = stats.failed.fetch_add(count, Ordering::Relaxed) + count;
            warn!(spans = count, failed_total = failed, error = %err, "span export failed; spans lost");
        }
    }
}

async fn export(backend: &Backend, batch: &mut Batch, stats: &ExportStats) {
    let count = std::mem::take(&mut batch.len) as u64;
    let spans = std::mem::take(&mut batch.spans);
    let result = match backend {
        Backend::OtlpGrpc { exporter, .. } => match &mut batch.wire {
            Some(wire) => exporter.export(wire.take()).await,
            None => Ok(()),
        },
        Backend::Zipkin { exporter, .. } => {
            let zipkin_spans = std::mem::take(&mut batch.zipkin);
            exporter
                .export(&zipkin_spans)
                .await
                .map_err(|e| e.to_string())
        }
        Backend::OtlpHttp(exporter) => exporter.export(spans).await.map_err(|e| e.to_string()),
        Backend::Stdout => stdout::write(&spans).map_err(|e| e.to_string()),
        #[cfg(test)]
        Backend::Capture(batches) => {
            let _ = batches.send((tokio::time::Instant::now(), count as usize));
            Ok(())
        }
        // Not exported, and not lost either: nothing to count.
        Backend::None => {
            stats.resolved(count);
            return;
        }
    };
    resolve(stats, count, result);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// The export task with a capturing backend: where spans go in, and where each batch's
    /// (time, size) comes out. Keep the flush sender: dropping it stops the task.
    fn start(
        size: usize,
        delay: Duration,
    ) -> (
        mpsc::Sender<SpanRecord>,
        mpsc::UnboundedReceiver<(Instant, usize)>,
        oneshot::Sender<()>,
    ) {
        let (tx, rx) = mpsc::channel(64);
        let (batches_tx, batches) = mpsc::unbounded_channel();
        let (flush, flush_rx) = oneshot::channel();
        tokio::spawn(run(
            rx,
            flush_rx,
            Backend::Capture(batches_tx),
            Batching { size, delay },
            Arc::default(),
            Arc::new(RecentTraces::new(10)),
            Histogram::new([0.1]),
        ));
        (tx, batches, flush)
    }

    // The clock is paused: it moves only when every task waits on a timer, so "before the
    // delay" and "at the delay" are exact, not timing guesses.
    #[tokio::test(start_paused = true)]
    async fn a_batch_leaves_when_it_reaches_batch_size_before_the_delay() {
        let delay = Duration::from_secs(3600);
        let t0 = Instant::now();
        let (tx, mut batches, _flush) = start(4, delay);
        for _ in 0..9 {
            tx.send(crate::export::convert::test_record())
                .await
                .unwrap();
        }
        for _ in 0..2 {
            let (at, size) = batches.recv().await.unwrap();
            assert_eq!(size, 4);
            assert!(at - t0 < delay, "a full batch waited {:?}", at - t0);
        }
        // The ninth span is a partial batch: it waits for the delay.
        let (at, size) = batches.recv().await.unwrap();
        assert_eq!(size, 1);
        assert!(at - t0 >= delay);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_leaves_when_the_delay_passes() {
        let delay = Duration::from_secs(5);
        let t0 = Instant::now();
        let (tx, mut batches, _flush) = start(100, delay);
        for _ in 0..3 {
            tx.send(crate::export::convert::test_record())
                .await
                .unwrap();
        }
        let (at, size) = batches.recv().await.unwrap();
        assert_eq!(size, 3);
        assert!(at - t0 >= delay && at - t0 < 2 * delay, "{:?}", at - t0);
        // Later spans make the next batch, one delay later.
        tx.send(crate::export::convert::test_record())
            .await
            .unwrap();
        let (next, size) = batches.recv().await.unwrap();
        assert_eq!(size, 1);
        assert_eq!(next - at, delay);
    }
}
