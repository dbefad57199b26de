//! Wiring: bind the sockets a config names, build the routing snapshot, spawn a task per
//! listener and one for admin, and stop them all gracefully.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin::{self, AdminState};
use std::path::Path;

use std::sync::OnceLock;

use crate::config::Config;
use crate::export::recent::RecentTraces;
use crate::export::{ExportTask, SpanSink};
use crate::metrics::{Metrics, Scraped, ScrapedKind};
use crate::proxy::{self, ListenerCtx, Shared, Snapshot};
use crate::reload::{Reloader, Trigger};
use crate::stitch::Stitcher;
use crate::tls::{Acceptor, ServerCerts};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] crate::config::LoadError),
    #[error("cannot watch the config file's directory {path}: {source}")]
    Watch {
        path: std::path::PathBuf,
        source: notify::Error,
    },
    #[error(transparent)]
    Exporter(#[from] crate::export::ExporterError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot watch the TLS certificate files: {0}")]
    TlsWatch(notify::Error),
    #[error("{what} {addr}: cannot bind: {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The least time given to flushing spans at shutdown, even with `grace = "0s"`.
const EXPORT_FLUSH_MIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A started hoptrace: every socket bound and served.
#[derive(Debug)]
pub struct Running {
    listeners: Vec<(String, SocketAddr)>,
    admin_addr: SocketAddr,
    admin: Arc<AdminState>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Admin stops last, so `/ready` answers 503 while listeners drain.
    admin_stop: watch::Sender<bool>,
    admin_task: JoinHandle<()>,
    sink: SpanSink,
    export: ExportTask,
    reloader: Option<Arc<Reloader>>,
    metrics: Arc<Metrics>,
    /// TLS listeners' certificates, by listener name.
    certs: Vec<(String, Arc<ServerCerts>)>,
}

/// Loads `path` (file and `OTEL_*` environment) and starts serving it, with `POST /reload`
/// on the admin listener and, when `watch` is true, a reload whenever the file's directory
/// changes (debounced).
pub async fn start_from_file(path: &Path, watch: bool) -> Result<Running, StartError> {
    let config = Config::load(path)?;
    let mut running = start(config).await?;
    let reloader = Arc::new(Reloader::new(
        path.to_owned(),
        running.shared.clone(),
        running.metrics.clone(),
        running.certs.iter().map(|(_, c)| c.clone()).collect(),
    ));
    running.reloader = Some(reloader.clone());
    running.admin.reloader.set(reloader.clone()).ok();
    if watch {
        let changed = Arc::new(tokio::sync::Notify::new());
        let (relevant, ignored) = running.metrics.config_watch_events();
        let counters = crate::config::watch::WatchCounters { relevant, ignored };
        let watcher = crate::config::watch::watch(&[path.to_owned()], changed.clone(), counters)
            .map_err(|source| StartError::Watch {
                path: path.to_owned(),
                source,
            })?;
        let stop = running.stop.subscribe();
        running.tasks.push(tokio::spawn(reload_on_change(
            watcher, changed, reloader, stop,
        )));
        info!(path = %path.display(), "watching the config file for changes");
    }
    Ok(running)
}

/// How long the directory must stay quiet after a change before reloading: editors and
/// `kubectl` write in bursts.
const DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(100);

async fn reload_on_change(
    _watcher: crate::config::watch::ConfigWatcher,
    changed: Arc<tokio::sync::Notify>,
    reloader: Arc<Reloader>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = crate::stopped(&mut stop) => return,
        }
        // Wait for a quiet period, then reload once for the whole burst.
        loop {
            tokio::select! {
                _ = changed.notified() => continue,
                _ = tokio::time::sleep(DEBOUNCE) => break,
            }
        }
        reloader.reload(Trigger::File).await;
    }
}

/// What an embedding program (the demo, tests) may set beyond the config file.
#[derive(Clone, Copy, Debug)]
pub struct StartOptions {
    /// Traces kept in memory for `GET /traces` and `Running::recent_traces`.
    pub recent_traces: usize,
}

impl Default for StartOptions {
    fn default() -> StartOptions {
        StartOptions {
            recent_traces: crate::export::recent::DEFAULT_TRACES,
        }
    }
}

/// Binds every listener and the admin socket (all or none: the first failure is returned and
/// nothing is served), then serves them on the current tokio runtime. Without a file there
/// is nothing to reload from; see `start_from_file`.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_with(config, StartOptions::default()).await
}

/// `start` with options.
pub async fn start_with(config: Config, options: StartOptions) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let bind = |what: String, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let mut metrics = Metrics::new();
    let recent = Arc::new(RecentTraces::new(options.recent_traces));
    let shared: Arc<Shared> = Arc::new(ArcSwap::from_pointee(Snapshot::build(
        config.clone(),
        1,
        None,
        &metrics,
    )?));
    // TLS listeners: certificates loaded before anything is bound, so a bad file fails the
    // start with a message naming it.
    let mut certs = Vec::new();
    let mut acceptors = Vec::with_capacity(config.listeners.len());
    for listener in &config.listeners {
        let Some(tls) = &listener.tls else {
            acceptors.push(None);
            continue;
        };
        let (applied, failed) = metrics.tls_cert_reloads(&listener.name);
        let reloads = crate::tls::CertReloadMetrics { applied, failed };
        let server_certs = Arc::new(ServerCerts::load(&listener.name, tls, reloads)?);
        let server_config = crate::tls::server_config(&listener.name, tls, server_certs.clone())?;
        certs.push((listener.name.clone(), server_certs));
        acceptors.push(Some(Acceptor {
            listener: listener.name.as_str().into(),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server_config)),
            timeout: listener.header_read_timeout,
            failures: metrics.tls_handshake_failures(&listener.name),
        }));
    }
    let (sink, export) =
        crate::export::spawn(&config, recent.clone(), metrics.export_batch_duration())?;
    let reloader_slot: Arc<OnceLock<Arc<Reloader>>> = Arc::default();
    let stitch = Arc::new(Stitcher::new());
    metrics.register_scraped(scraped(sink.clone(), shared.clone(), reloader_slot.clone()));
    metrics.register_scraped(stitch_scraped(stitch.clone()));
    let metrics = Arc::new(metrics);

    // Admin first: orchestrators see /ready answer 503 until every listener is bound.
    let admin_socket = bind("admin".to_string(), config.admin.bind).await?;
    let admin_addr = admin_socket.local_addr().unwrap_or(config.admin.bind);
    let admin = Arc::new(AdminState::new(
        shared.clone(),
        recent,
        metrics.clone(),
        reloader_slot,
    ));
    // Serving before the first log line: a process whose log writes block (a full stderr
    // pipe) still answers /live and /ready (503) from here on.
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(admin_socket, admin.clone(), admin_stop_rx));
    info!(addr = %admin_addr, "admin listening");
    if !admin_addr.ip().is_loopback() {
        match config.admin.reload_token {
            Some(_) => {
                info!(addr = %admin_addr, "admin is reachable from other hosts; POST /reload needs the reload token")
            }
            None => {
                warn!(addr = %admin_addr, "admin is reachable from other hosts (/config, /traces, /metrics); POST /reload is refused to them: set [admin] reload_token to allow it")
            }
        }
    }

    let mut sockets = Vec::with_capacity(config.listeners.len());
    for listener in &config.listeners {
        match bind(format!("listener {}", listener.name), listener.bind).await {
            Ok(socket) => sockets.push(socket),
            Err(err) => {
                let _ = admin_stop.send(true);
                return Err(err);
            }
        }
    }
    let (stop, stop_rx) = watch::channel(false);
    let grace = config.shutdown.grace;
    let mut listeners = Vec::with_capacity(sockets.len());
    let mut tasks = Vec::with_capacity(sockets.len() + 1);
    if !certs.is_empty() {
        let all = certs.iter().map(|(_, c)| c.clone()).collect();
        match crate::tls::watch_files(all, stop_rx.clone()) {
            Ok(task) => tasks.push(task),
            Err(err) => {
                let _ = admin_stop.send(true);
                return Err(StartError::TlsWatch(err));
            }
        }
    }
    let listening = sockets.into_iter().zip(&config.listeners).zip(acceptors);
    for (index, ((socket, listener), tls)) in listening.enumerate() {
        let addr = socket.local_addr().unwrap_or(listener.bind);
        let tls_on = tls.is_some();
        info!(listener = %listener.name, role = ?listener.role, %addr, tls = tls_on, "listening");
        listeners.push((listener.name.clone(), addr));
        let ctx = Arc::new(ListenerCtx {
            name: listener.name.as_str().into(),
            role: listener.role,
            index,
            shared: shared.clone(),
            sink: sink.clone(),
            open_connections: metrics.open_connections(&listener.name),
            invalid_contexts: metrics.invalid_contexts(
                &listener.name,
                &crate::trace::propagation::Format::ALL.map(|f| f.name()),
            ),
            stitch: stitch.clone(),
            rejected_connections: metrics.rejected_connections(&listener.name),
        });
        let listener = listener.clone();
        let stop_rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            proxy::serve(socket, ctx, &listener, tls, stop_rx, grace).await
        }));
    }

    // The log line naming routes whose app forwards no trace context.
    tasks.push(tokio::spawn(crate::stitch::report::run(
        stitch.clone(),
        shared.clone(),
        stop_rx.clone(),
    )));

    admin.set_ready(true);

    Ok(Running {
        listeners,
        admin_addr,
        admin,
        shared,
        stop,
        tasks,
        admin_stop,
        admin_task,
        sink,
        export,
        reloader: None,
        metrics,
        certs,
    })
}

/// Values read at each scrape: span export counters, queue depth, config generation and
/// reloads.
fn scraped(
    sink: SpanSink,
    shared: Arc<Shared>,
    reloader: Arc<OnceLock<Arc<Reloader>>>,
) -> impl Fn() -> Vec<Scraped> + Send + Sync + 'static {
    move || {
        let value = |name, help, kind, labels: Vec<(&'static str, String)>, value: u64| Scraped {
            name,
            help,
            kind,
            unit: None,
            labels,
            value: value as f64,
        };
        let [started, exported, dropped, failed] = sink.stats().snapshot();
        let mut values = vec![
            value(
                "spans_started",
                "Spans started (sampled; unsampled ones when tail keeping keeps them): once \
                 no request is in flight, started = exported + dropped + failed + queue depth",
                ScrapedKind::Counter,
                vec![],
                started,
            ),
            value(
                "spans_exported",
                "Spans the exporter delivered",
                ScrapedKind::Counter,
                vec![],
                exported,
            ),
            value(
                "spans_dropped",
                "Spans dropped because the export queue was full, or left at the shutdown deadline",
                ScrapedKind::Counter,
                vec![],
                dropped,
            ),
            value(
                "spans_failed",
                "Spans lost because their export failed after retries",
                ScrapedKind::Counter,
                vec![],
                failed,
            ),
            value(
                "spans_kept",
                "Spans of unsampled requests exported anyway (keep_errors, keep_slower_than)",
                ScrapedKind::Counter,
                vec![("reason", "error".to_owned())],
                sink.stats()
                    .kept_error
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
            value(
                "spans_kept",
                "Spans of unsampled requests exported anyway (keep_errors, keep_slower_than)",
                ScrapedKind::Counter,
                vec![("reason", "slow".to_owned())],
                sink.stats()
                    .kept_slow
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
            value(
                "spans_rejected",
                "Spans the collector rejected in OTLP partial-success responses",
                ScrapedKind::Counter,
                vec![],
                crate::export::rejected_spans(),
            ),
            value(
                "export_queue_depth",
                "Spans ended and waiting for export: in the queue or in the batch being built \
                 or sent",
                ScrapedKind::Gauge,
                vec![],
                sink.pending(),
            ),
            value(
                "config_generation",
                "Generation of the config serving now (1 = the one started with)",
                ScrapedKind::Gauge,
                vec![],
                shared.load().generation,
            ),
        ];
        if let Some(reloader) = reloader.get() {
            for (outcome, count) in reloader.outcome_counts() {
                values.push(value(
                    "config_reloads",
                    "Config reloads by outcome",
                    ScrapedKind::Counter,
                    vec![("outcome", outcome.to_string())],
                    count,
                ));
            }
            let last = reloader.last_applied().unwrap_or(0.0);
            values.push(Scraped {
                name: "config_last_reload_timestamp",
                help: "Unix time of the last applied reload (0: none yet)",
                kind: ScrapedKind::Gauge,
                unit: Some(prometheus_client::registry::Unit::Seconds),
                labels: vec![],
                value: last,
            });
        }
        values
    }
}

/// Stitching's values: outbound calls by where their parent came from, and the registry.
fn stitch_scraped(stitch: Arc<Stitcher>) -> impl Fn() -> Vec<Scraped> + Send + Sync + 'static {
    move || {
        let mut values: Vec<Scraped> = stitch
            .counts()
            .into_iter()
            .map(|(source, n)| Scraped {
                name: "outbound_context",
                help: "Outbound calls by where their trace context came from: forwarded by \
                       the app, or inferred (single, model), linked, none",
                kind: ScrapedKind::Counter,
                unit: None,
                labels: vec![("source", source.label().to_string())],
                value: n as f64,
            })
            .collect();
        values.push(Scraped {
            name: "stitch_untracked",
            help: "Inbound requests not tracked for stitching because max_inflight were",
            kind: ScrapedKind::Counter,
            unit: None,
            labels: vec![],
            value: stitch.untracked() as f64,
        });
        values.push(Scraped {
            name: "stitch_tracked",
            help: "Inbound requests tracked for stitching (in flight or lingering)",
            kind: ScrapedKind::Gauge,
            unit: None,
            labels: vec![],
            value: stitch.tracked() as f64,
        });
        values
    }
}

impl Running {
    /// The bound address of the listener named `name` (useful with port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| *addr)
    }

    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The reloader, when started from a file.
    pub fn reloader(&self) -> Option<&Arc<Reloader>> {
        self.reloader.as_ref()
    }

    /// The traces this process recorded most recently (what `GET /traces` shows).
    pub fn recent_traces(&self) -> &Arc<RecentTraces> {
        &self.admin.recent
    }

    /// The span sink (for its counters).
    pub fn span_sink(&self) -> &SpanSink {
        &self.sink
    }

    /// The certificate store of the TLS listener named `name`.
    pub fn server_certs(&self, name: &str) -> Option<&Arc<ServerCerts>> {
        self.certs.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// The routing snapshot currently served.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.load_full()
    }

    /// Graceful stop: report not-ready, stop accepting, let in-flight requests finish (each
    /// listener waits at most `[shutdown] grace`), then stop the admin listener.
    pub async fn shutdown(self) {
        self.admin.set_ready(false);
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        // Every request has ended: flush the spans they produced.
        let grace = self.shared.load().config.shutdown.grace;
        self.export.shutdown(grace.max(EXPORT_FLUSH_MIN)).await;
        let [started, exported, dropped, failed] = self.sink.stats().snapshot();
        let rejected = crate::export::rejected_spans();
        info!(
            started,
            exported, dropped, failed, rejected, "span export finished"
        );
        let _ = self.admin_stop.send(true);
        let _ = self.admin_task.await;
        info!("all listeners drained");
    }
}
