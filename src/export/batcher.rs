//! The export task: collects spans from the queue into batches, sends a batch when it holds
//! `batch_size` spans or when `batch_delay` has passed, and on shutdown drains the queue
//! within a deadline. Exports run one at a time (the OpenTelemetry exporter contract).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use prometheus_client::metrics::histogram::Histogram;

use super::recent::RecentTraces;
use super::{ExportStats, ExporterError, SpanSink, convert, otlp, stdout, zipkin};
use crate::config::{Config, ExporterKind};
use crate::trace::span::SpanRecord;

enum Backend {
    Otlp(Box<opentelemetry_otlp::SpanExporter>),
    /// Zipkin v2 JSON; `service` is the local endpoint's `serviceName`.
    Zipkin {
        exporter: Box<zipkin::Exporter>,
        service: String,
    },
    Stdout,
    /// `exporter = "none"`: spans only feed the recent-traces view.
    None,
}

/// The running export task. Dropping it leaves the task running until every sink is gone.
#[derive(Debug)]
pub struct ExportTask {
    flush: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
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
        ExporterKind::Otlp => {
            Backend::Otlp(Box::new(otlp::build(&tracing.otlp, &resource(config))?))
        }
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
        tx: Some(tx),
        stats,
    };
    Ok((
        sink,
        ExportTask {
            flush: Some(flush),
            task: Some(task),
        },
    ))
}

impl ExportTask {
    /// Exports what is queued, waiting at most `deadline`; spans still queued then are lost
    /// (and counted as dropped).
    pub async fn shutdown(mut self, deadline: Duration) {
        if let Some(flush) = self.flush.take() {
            let _ = flush.send(());
        }
        if let Some(task) = self.task.take() {
            if tokio::time::timeout(deadline, task).await.is_err() {
                warn!(
                    ?deadline,
                    "span export did not finish before the shutdown deadline"
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
    let sinks = Sinks {
        backend: &backend,
        stats: &stats,
        recent: &recent,
        batch_duration: &batch_duration,
    };
    let scope = convert::scope();
    let mut batch = Batch::with_capacity(batch_size, &backend);
    let mut tick = tokio::time::interval(batch_delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            span = rx.recv() => match span {
                Some(span) => {
                    batch.push(&span, &scope, &backend);
                    stats.batched.fetch_add(1, Ordering::Relaxed);
                    if batch.len() >= batch_size {
                        sinks.export(&mut batch).await;
                    }
                }
                // Every sink is gone: nothing more can arrive.
                None => break,
            },
            _ = tick.tick() => {
                if !batch.is_empty() {
                    sinks.export(&mut batch).await;
                }
            }
            _ = &mut flush => {
                // Shutdown: take what is queued now, export it, stop.
                rx.close();
                while let Ok(span) = rx.try_recv() {
                    batch.push(&span, &scope, &backend);
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
    if let Backend::Otlp(exporter) = &backend {
        let _ = exporter.shutdown();
    }
    debug!("span export stopped");
}

/// Spans waiting for export: the OpenTelemetry form (for OTLP, stdout and the recent-traces
/// view) and, for Zipkin, its JSON, built from the record while the record is at hand.
struct Batch {
    spans: Vec<SpanData>,
    zipkin: Vec<serde_json::Value>,
}

impl Batch {
    fn with_capacity(n: usize, backend: &Backend) -> Batch {
        let zipkin = matches!(backend, Backend::Zipkin { .. });
        Batch {
            spans: Vec::with_capacity(n),
            zipkin: Vec::with_capacity(if zipkin { n } else { 0 }),
        }
    }

    fn push(
        &mut self,
        span: &SpanRecord,
        scope: &opentelemetry::InstrumentationScope,
        backend: &Backend,
    ) {
        let data = convert::to_span_data(span, scope);
        if let Backend::Zipkin { service, .. } = backend {
            self.zipkin.push(zipkin::to_json(span, &data, service));
        }
        self.spans.push(data);
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// Where a finished batch goes: the recent-traces view, then the exporter.
struct Sinks<'a> {
    backend: &'a Backend,
    stats: &'a ExportStats,
    recent: &'a RecentTraces,
    batch_duration: &'a Histogram,
}

impl Sinks<'_> {
    async fn export(&self, batch: &mut Batch) {
        self.recent.record(&batch.spans);
        let count = batch.len() as u64;
        let started = std::time::Instant::now();
        export(self.backend, batch, self.stats).await;
        self.batch_duration.observe(started.elapsed().as_secs_f64());
        // Exported, failed, or (exporter "none") done with: no longer pending.
        self.stats.batched.fetch_sub(count, Ordering::Relaxed);
    }
}

async fn export(backend: &Backend, batch: &mut Batch, stats: &ExportStats) {
    let spans = std::mem::take(&mut batch.spans);
    let zipkin_spans = std::mem::take(&mut batch.zipkin);
    let count = spans.len() as u64;
    let result = match backend {
        Backend::Zipkin { exporter, .. } => exporter
            .export(&zipkin_spans)
            .await
            .map_err(|e| e.to_string()),
        Backend::Otlp(exporter) => exporter.export(spans).await.map_err(|e| e.to_string()),
        Backend::Stdout => stdout::write(&spans).map_err(|e| e.to_string()),
        // Not exported, and not lost either: nothing to count.
        Backend::None => return,
    };
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
