//! The one reload function. Every trigger (file change, SIGHUP, `POST /reload`) calls
//! `Reloader::reload`, which reads and validates the whole file, compiles a new routing
//! snapshot (carrying over the connection pools of unchanged upstreams) and swaps it in with
//! one atomic store, or changes nothing at all. Requests already running finish on the
//! snapshot they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::Serialize;
use tracing::{error, info, warn};

use crate::config::{Config, ListenerConfig, LoadError, TraceIncoming};
use crate::metrics::Metrics;
use crate::proxy::{Shared, Snapshot};
use crate::tls::ServerCerts;

/// What caused a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The config file (or its directory: atomic renames, Kubernetes symlink swaps) changed.
    File,
    /// SIGHUP.
    Signal,
    /// `POST /reload` on the admin listener.
    Admin,
}

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// The new config serves from now on, as this generation.
    Applied { generation: u64 },
    /// The file holds the config already serving.
    Unchanged { generation: u64 },
    /// The file is invalid (every error listed); the old config keeps serving.
    Rejected { errors: Vec<String> },
    /// A field that only a restart can change differs; nothing was applied.
    RestartRequired { fields: Vec<String> },
}

/// The last reload, for `GET /reload`.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadStatus {
    /// Generation serving now (1 = the config the process started with).
    pub generation: u64,
    /// Reloads that were rejected (invalid file), since start.
    pub failures: u64,
    pub last: Option<LastReload>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LastReload {
    /// Seconds since the Unix epoch.
    pub time: f64,
    pub trigger: Trigger,
    #[serde(flatten)]
    pub outcome: ReloadOutcome,
}

/// Reloads one config file into the shared snapshot. One reload runs at a time.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    shared: Arc<Shared>,
    running: tokio::sync::Mutex<()>,
    last: std::sync::Mutex<Option<LastReload>>,
    failures: AtomicU64,
    /// Reloads by outcome: applied, unchanged, rejected, restart_required.
    outcomes: [AtomicU64; 4],
    metrics: Arc<Metrics>,
    /// Unix time (ms) of the last applied reload, 0 before any.
    last_applied_ms: AtomicU64,
    /// TLS listeners' certificates: every reload trigger also re-reads their files.
    certs: Vec<Arc<ServerCerts>>,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
        certs: Vec<Arc<ServerCerts>>,
    ) -> Reloader {
        Reloader {
            certs,
            path,
            shared,
            running: tokio::sync::Mutex::new(()),
            last: std::sync::Mutex::new(None),
            failures: AtomicU64::new(0),
            outcomes: Default::default(),
            metrics,
            last_applied_ms: AtomicU64::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads, validates and applies the config file: all or nothing. Also re-reads the TLS
    /// listeners' certificate files (a bad pair is logged and counted; the old one serves).
    pub async fn reload(&self, trigger: Trigger) -> ReloadOutcome {
        let _one_at_a_time = self.running.lock().await;
        let certs = self.certs.clone();
        let _ = tokio::task::spawn_blocking(move || crate::tls::refresh_all(&certs)).await;
        let path = self.path.clone();
        // File I/O off the async workers.
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await;
        let current = self.shared.load_full();
        let outcome = match loaded {
            Err(join) => ReloadOutcome::Rejected {
                errors: vec![format!("config load task failed: {join}")],
            },
            Ok(Err(err)) => ReloadOutcome::Rejected {
                errors: load_errors(&err),
            },
            Ok(Ok(config)) => self.apply(config, &current),
        };
        let index = match &outcome {
            ReloadOutcome::Applied { .. } => 0,
            ReloadOutcome::Unchanged { .. } => 1,
            ReloadOutcome::Rejected { .. } => 2,
            ReloadOutcome::RestartRequired { .. } => 3,
        };
        if let Some(counter) = self.outcomes.get(index) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        // One clock reading for the metric and `GET /reload`, so that they agree.
        let now = unix_ms(SystemTime::now());
        match &outcome {
            ReloadOutcome::Applied { generation } => {
                info!(?trigger, generation, "config reloaded");
                self.last_applied_ms.store(now, Ordering::Relaxed);
            }
            ReloadOutcome::Unchanged { generation } => {
                info!(?trigger, generation, "config reload: unchanged");
            }
            ReloadOutcome::Rejected { errors } => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                for e in errors {
                    error!(?trigger, file = %self.path.display(), error = %e, "config reload rejected; the previous config keeps serving");
                }
            }
            ReloadOutcome::RestartRequired { fields } => {
                warn!(
                    ?trigger,
                    ?fields,
                    "config reload needs a restart; nothing was applied"
                );
            }
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Some(LastReload {
                time: unix_seconds(now),
                trigger,
                outcome: outcome.clone(),
            });
        }
        outcome
    }

    fn apply(&self, config: Config, current: &Snapshot) -> ReloadOutcome {
        if config == *current.config {
            return ReloadOutcome::Unchanged {
                generation: current.generation,
            };
        }
        let fields = static_changes(&current.config, &config);
        if !fields.is_empty() {
            return ReloadOutcome::RestartRequired { fields };
        }
        let generation = current.generation + 1;
        let new_config = Arc::new(config);
        let next =
            match Snapshot::build(new_config.clone(), generation, Some(current), &self.metrics) {
                Ok(next) => next,
                Err(err) => {
                    return ReloadOutcome::Rejected {
                        errors: vec![err.to_string()],
                    };
                }
            };
        self.shared.store(Arc::new(next));
        crate::proxy::remove_stale_series(&current.config, &new_config, &self.metrics);
        ReloadOutcome::Applied { generation }
    }

    pub fn status(&self) -> ReloadStatus {
        ReloadStatus {
            generation: self.shared.load().generation,
            failures: self.failures.load(Ordering::Relaxed),
            last: self.last.lock().ok().and_then(|last| last.clone()),
        }
    }

    /// Reloads since start by outcome: applied, unchanged, rejected, restart_required.
    pub fn outcome_counts(&self) -> [(&'static str, u64); 4] {
        let get = |i: usize| {
            self.outcomes
                .get(i)
                .map_or(0, |c| c.load(Ordering::Relaxed))
        };
        [
            ("applied", get(0)),
            ("unchanged", get(1)),
            ("rejected", get(2)),
            ("restart_required", get(3)),
        ]
    }

    /// Rejected reloads since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Unix time (seconds, millisecond precision) of the last applied reload, if any: the
    /// same value as `GET /reload`'s `last.time` for that reload.
    pub fn last_applied(&self) -> Option<f64> {
        match self.last_applied_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(unix_seconds(ms)),
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unix_seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// The errors of a file that failed to load, one per entry, each naming its key and line
/// (not `LoadError`'s display, whose first line is a summary such as `cfg.toml: 1 error`).
fn load_errors(err: &LoadError) -> Vec<String> {
    match err {
        LoadError::Invalid { errors, .. } | LoadError::Env { errors } => {
            errors.iter().map(ToString::to_string).collect()
        }
        LoadError::Io { .. } => vec![err.to_string()],
    }
}

/// The fields that only a restart can change, named as in the file, where `old` and `new`
/// differ: sockets are bound once (a listener's `tls` table too: its acceptor is built with
/// the socket; its certificate files are re-read without a restart), and the exporter (its
/// resource, endpoint, TLS files and queue) is built once. `admin.reload_token` is read per
/// request, so it is reloadable.
pub fn static_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut fields = Vec::new();
    let mut check = |name: &str, changed: bool| {
        if changed {
            fields.push(name.to_string());
        }
    };
    // `trace.incoming` is policy, read per request: it reloads like the tracing policy.
    let sockets = |c: &Config| -> Vec<ListenerConfig> {
        let mut listeners = c.listeners.clone();
        for l in &mut listeners {
            l.trace_incoming = TraceIncoming::Continue;
        }
        listeners
    };
    check("listeners", sockets(old) != sockets(new));
    check("admin.bind", old.admin.bind != new.admin.bind);
    check("service", old.service != new.service);
    let (a, b) = (&old.tracing, &new.tracing);
    check("tracing.exporter", a.exporter != b.exporter);
    check("tracing.otlp", a.otlp != b.otlp);
    check("tracing.zipkin", a.zipkin != b.zipkin);
    check("tracing.queue_size", a.queue_size != b.queue_size);
    check("tracing.batch_size", a.batch_size != b.batch_size);
    check("tracing.batch_delay", a.batch_delay != b.batch_delay);
    // `[stitching]` is read per request (and per report), so every key is reloadable.
    fields
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{Propagator, TraceIncoming};

    fn example() -> Config {
        Config::from_toml_str(include_str!("../config.example.toml")).unwrap()
    }

    #[test]
    fn trace_policy_reloads_and_the_zipkin_connection_does_not() {
        let old = example();
        let mut new = old.clone();
        new.listeners[0].trace_incoming = TraceIncoming::Restart;
        new.tracing.propagators = vec![Propagator::Jaeger];
        new.tracing.keep_errors = !old.tracing.keep_errors;
        new.tracing.keep_slower_than = None;
        assert!(static_changes(&old, &new).is_empty());
        new.tracing.zipkin.timeout *= 2;
        new.listeners[0].max_header_bytes += 1;
        assert_eq!(static_changes(&old, &new), ["listeners", "tracing.zipkin"]);
    }

    #[test]
    fn rejected_reloads_list_the_errors_without_the_summary_line() {
        let errors = crate::config::ConfigErrors::new(vec![
            crate::config::ConfigError::new(
                "routes[0].upstream",
                Some(7),
                "\"pay\" is not defined",
            ),
            crate::config::ConfigError::new("", Some(2), "syntax error: expected `]`"),
        ]);
        let err = LoadError::Invalid {
            path: PathBuf::from("cfg.toml"),
            errors: errors.clone(),
        };
        assert!(err.to_string().starts_with("cfg.toml: 2 errors\n"));
        let listed = [
            "syntax error: expected `]` (line 2)",
            "routes[0].upstream: \"pay\" is not defined (line 7)",
        ];
        assert_eq!(load_errors(&err), listed);
        assert_eq!(load_errors(&LoadError::Env { errors }), listed);
    }
}
