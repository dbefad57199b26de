//! `hoptrace demo`: FizzBuzz as a service on loopback, in one process. Three plain apps
//! (`app`), each behind its own hoptrace sidecar started from generated TOML (`config`), a
//! bounded load against the hub's sidecar, and a per-hop latency table computed from the
//! spans the sidecars recorded (`report`).
//!
//! ```text
//! load ─► [hub inbound] ─► hub app ─► [hub outbound] ─┬─► [fizzer inbound] ─► fizzer app
//!                                     (HTTP_PROXY)    └─► [buzzer inbound] ─► buzzer app
//! ```

pub mod app;
pub mod config;
pub mod report;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::app::{App, Dependencies, Role};
use self::config::Dependency;
use crate::app::{Running, StartError, StartOptions};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot bind a loopback port for the {role} app: {source}")]
    Bind {
        role: &'static str,
        source: std::io::Error,
    },
    #[error("the {service} sidecar's config: {source}")]
    Config {
        service: &'static str,
        source: crate::config::LoadError,
    },
    #[error("the {service} sidecar: {source}")]
    Start {
        service: &'static str,
        source: StartError,
    },
}

/// The most traces each sidecar keeps for the table (bounds memory for large `--requests`).
pub const MAX_KEPT_TRACES: usize = 10_000;

/// How long the table waits for the last spans to reach the recent-traces view.
const SPANS_DEADLINE: Duration = Duration::from_secs(10);

/// The running demo: three apps and their sidecars.
pub struct Demo {
    hub: Running,
    fizzer: Running,
    buzzer: Running,
    apps: Vec<JoinHandle<()>>,
    app_stop: watch::Sender<bool>,
}

/// What the load saw.
#[derive(Debug, Default)]
pub struct LoadSummary {
    pub ok: u64,
    /// Answers other than 200 with the right FizzBuzz word, and failed requests.
    pub failed: u64,
    /// The first failure, for the message.
    pub first_failure: Option<String>,
}

impl LoadSummary {
    fn add(&mut self, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.ok += 1,
            Err(err) => {
                self.failed += 1;
                self.first_failure.get_or_insert(err);
            }
        }
    }
}

impl Demo {
    /// Starts the apps and sidecars. `env` reads the `OTEL_*` variables (std::env::var in
    /// the binary); with an OTLP endpoint set, every sidecar exports there. `keep` is how
    /// many traces each sidecar keeps in memory (at least the default of `/traces`).
    pub async fn start(
        env: &dyn Fn(&str) -> Option<String>,
        keep: usize,
    ) -> Result<Demo, DemoError> {
        let bind = |role: &'static str| async move {
            TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|source| DemoError::Bind { role, source })
        };
        let sockets = [
            bind("hub").await?,
            bind("fizzer").await?,
            bind("buzzer").await?,
        ];
        let addr = |i: usize| {
            sockets[i]
                .local_addr()
                .expect("bound socket has an address")
        };
        let (hub_app, fizzer_app, buzzer_app) = (addr(0), addr(1), addr(2));
        let export = config::exports(env);
        let options = StartOptions {
            recent_traces: keep.clamp(crate::export::recent::DEFAULT_TRACES, MAX_KEPT_TRACES),
        };
        let sidecar = |service: &'static str, app: SocketAddr, deps: Vec<Dependency>| async move {
            let toml = config::sidecar_toml(service, app, &deps, export);
            let config =
                config::load(&toml, env).map_err(|source| DemoError::Config { service, source })?;
            crate::app::start_with(config, options)
                .await
                .map_err(|source| DemoError::Start { service, source })
        };
        let fizzer = sidecar("fizzer", fizzer_app, vec![]).await?;
        let buzzer = sidecar("buzzer", buzzer_app, vec![]).await?;
        let inbound = |running: &Running| {
            running
                .listener_addr("inbound")
                .expect("the demo config has an inbound listener")
        };
        let deps = vec![
            Dependency {
                host: "fizzer",
                endpoint: inbound(&fizzer),
            },
            Dependency {
                host: "buzzer",
                endpoint: inbound(&buzzer),
            },
        ];
        let hub = sidecar("hub", hub_app, deps).await?;
        // The hub app reaches its dependencies as any app with HTTP_PROXY set to its
        // sidecar's outbound listener would: `GET http://fizzer/fizz/3` to the proxy.
        let outbound = hub
            .listener_addr("outbound")
            .expect("the demo config has an outbound listener");
        let deps = Dependencies {
            fizzer: http::Uri::from_static("http://fizzer/"),
            buzzer: http::Uri::from_static("http://buzzer/"),
            proxy: Some(outbound.to_string()),
        };
        let (app_stop, stop) = watch::channel(false);
        let [hub_socket, fizzer_socket, buzzer_socket] = sockets;
        let apps = [
            (Role::Hub, hub_socket),
            (Role::Fizzer, fizzer_socket),
            (Role::Buzzer, buzzer_socket),
        ]
        .into_iter()
        .map(|(role, socket)| {
            let app = Arc::new(App::new(role, deps.clone()));
            tokio::spawn(app::serve(socket, app, stop.clone()))
        })
        .collect();
        Ok(Demo {
            hub,
            fizzer,
            buzzer,
            apps,
            app_stop,
        })
    }

    /// The hub sidecar's inbound listener: where clients send `GET /fizzbuzz/{n}`.
    pub fn hub_addr(&self) -> SocketAddr {
        self.hub
            .listener_addr("inbound")
            .expect("the demo config has an inbound listener")
    }

    /// Each sidecar's name and its recent-traces page.
    pub fn trace_pages(&self) -> Vec<(&'static str, String)> {
        [
            ("hub", &self.hub),
            ("fizzer", &self.fizzer),
            ("buzzer", &self.buzzer),
        ]
        .into_iter()
        .map(|(name, running)| {
            let url = format!("http://{}/traces?format=html", running.admin_addr());
            (name, url)
        })
        .collect()
    }

    /// Sends `GET /fizzbuzz/{n}` for n = 1..=requests to the hub's sidecar and checks each
    /// answer: the first `warmup` one at a time, the rest `concurrency` at a time. The apps
    /// forward no trace header, and stitching learns only from calls it can attribute
    /// exactly (one request in flight), so the one-at-a-time requests are what the hub
    /// sidecar learns from before it must pick among several requests in flight.
    pub async fn drive(&self, requests: u64, warmup: u64, concurrency: usize) -> LoadSummary {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let base = format!("http://{}/fizzbuzz/", self.hub_addr());
        let warmup = warmup.min(requests);
        let mut total = LoadSummary::default();
        for n in 1..=warmup {
            total.add(one_request(&client, &format!("{base}{n}"), n).await);
        }
        let next = Arc::new(AtomicU64::new(warmup + 1));
        let workers: Vec<_> = (0..concurrency.max(1))
            .map(|_| {
                let (client, next, base) = (client.clone(), next.clone(), base.clone());
                tokio::spawn(async move {
                    let mut summary = LoadSummary::default();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n > requests {
                            return summary;
                        }
                        summary.add(one_request(&client, &format!("{base}{n}"), n).await);
                    }
                })
            })
            .collect();
        for worker in workers {
            match worker.await {
                Ok(summary) => {
                    total.ok += summary.ok;
                    total.failed += summary.failed;
                    if total.first_failure.is_none() {
                        total.first_failure = summary.first_failure;
                    }
                }
                Err(err) => {
                    total.failed += 1;
                    total
                        .first_failure
                        .get_or_insert(format!("load worker: {err}"));
                }
            }
        }
        total
    }

    /// Waits (bounded) until the sidecars' recent-traces views hold the spans of `requests`
    /// requests (five per request), then builds the table from them.
    pub async fn report(&self, requests: u64) -> report::Report {
        let want = requests.min(self.kept() as u64) as usize;
        let spans = |running: &Running| -> usize { running.recent_traces().span_count() };
        let deadline = tokio::time::Instant::now() + SPANS_DEADLINE;
        while tokio::time::Instant::now() < deadline
            && (spans(&self.hub) < 3 * want
                || spans(&self.fizzer) < want
                || spans(&self.buzzer) < want)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        report::build(
            &self.hub.recent_traces().snapshot(),
            &self.fizzer.recent_traces().snapshot(),
            &self.buzzer.recent_traces().snapshot(),
        )
    }

    fn kept(&self) -> usize {
        self.hub.recent_traces().capacity()
    }

    /// Stops the apps, then each sidecar (which flushes its spans to the exporter).
    pub async fn shutdown(self) {
        let _ = self.app_stop.send(true);
        for app in self.apps {
            let _ = app.await;
        }
        tokio::join!(
            self.hub.shutdown(),
            self.fizzer.shutdown(),
            self.buzzer.shutdown()
        );
    }
}

async fn one_request(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: &str,
    n: u64,
) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|err| format!("{url}: {err}"))?;
    let response = client
        .get(uri)
        .await
        .map_err(|err| format!("{url}: {err}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| format!("{url}: {err}"))?
        .to_bytes();
    let body = String::from_utf8_lossy(&body);
    let want = app::fizzbuzz(n);
    if status != http::StatusCode::OK || body.trim_end() != want {
        return Err(format!(
            "{url}: {status} {:?} (expected {want:?})",
            body.trim_end()
        ));
    }
    Ok(())
}
