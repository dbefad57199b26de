//! What the reload tests share: a config with one route between two upstreams, file
//! writes, waiting for a generation, reading `/metrics`, and a bounded load that checks which
//! upstream answered.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::Request;

use crate::common::*;

pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct Setup<'a> {
    pub a: SocketAddr,
    pub b: SocketAddr,
    /// Which upstream the route uses.
    pub route_to: &'a str,
    pub bind: &'a str,
    /// Lines of `[tracing]`; `exporter = "none"` when empty.
    pub tracing: &'a str,
}

impl Setup<'_> {
    pub fn new(a: SocketAddr, b: SocketAddr, route_to: &str) -> Setup<'_> {
        Setup {
            a,
            b,
            route_to,
            bind: "127.0.0.1:0",
            tracing: "",
        }
    }
}

pub fn config(s: &Setup<'_>) -> String {
    format!(
        r#"
[service]
name = "reload-test"
[admin]
bind = "127.0.0.1:0"
[tracing]
batch_delay = "10ms"
{tracing}
[[listeners]]
name = "main"
bind = "{bind}"
role = "inbound"
[[routes]]
listener = "main"
upstream = "{route_to}"
[upstreams.a]
endpoints = ["{a}"]
[upstreams.b]
endpoints = ["{b}"]
"#,
        tracing = if s.tracing.is_empty() {
            "exporter = \"none\""
        } else {
            s.tracing
        },
        bind = s.bind,
        route_to = s.route_to,
        a = s.a,
        b = s.b,
    )
}

/// Replaces the file atomically, as editors and config management tools do.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub async fn served_by(addr: SocketAddr) -> String {
    let response = get(&http1_client(), format!("http://{addr}/")).await;
    assert_eq!(response.status(), 200);
    response.headers()["x-upstream"]
        .to_str()
        .unwrap()
        .to_string()
}

pub async fn wait_generation(running: &hoptrace::app::Running, generation: u64) {
    let reloader = running.reloader().unwrap().clone();
    wait_until(&format!("generation {generation}"), DEADLINE, || {
        let reloader = reloader.clone();
        async move { reloader.status().generation == generation }
    })
    .await;
}

/// Reloads so far by outcome: [applied, unchanged, rejected, restart_required].
pub fn outcomes(running: &hoptrace::app::Running) -> [u64; 4] {
    running
        .reloader()
        .unwrap()
        .outcome_counts()
        .map(|(_, count)| count)
}

/// Writes `text` to `dir/config.toml` and starts serving it (watching it if `watch`).
pub async fn start(dir: &Path, text: &str, watch: bool) -> (hoptrace::app::Running, PathBuf) {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    (
        hoptrace::app::start_from_file(&path, watch).await.unwrap(),
        path,
    )
}

/// `POST /reload`: (status, JSON body).
pub async fn post_reload(admin: SocketAddr) -> (u16, serde_json::Value) {
    let request = Request::post(format!("http://{admin}/reload"))
        .body(full(""))
        .unwrap();
    let response = http1_client().request(request).await.unwrap();
    (response.status().as_u16(), body_json(response).await)
}

/// The value of the sample `series` (name and labels exactly as exposed) in `/metrics`.
pub async fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let text = body_string(get(&http1_client(), format!("http://{admin}/metrics")).await).await;
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        Some(value.parse().unwrap())
    })
}

/// Clients keeping requests going on one listener until `stop`, each bounded to `MAX_EACH`
/// requests (only a guard against a hang: the test stops them long before). Once `expect`
/// names an upstream, every request sent from then on must be answered by it.
pub struct Load {
    stop: Arc<AtomicBool>,
    expect: Arc<RwLock<Option<&'static str>>>,
    /// Requests answered 200, all of them / those sent after `expect` was set.
    pub ok: Arc<AtomicU64>,
    pub ok_expected: Arc<AtomicU64>,
    /// Requests that failed or were not 200.
    pub failed: Arc<AtomicU64>,
    /// Answers (sent after `expect` was set) from another upstream, by name.
    pub wrong: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

const MAX_EACH: u64 = 1_000_000;

impl Load {
    pub fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let expect: Arc<RwLock<Option<&'static str>>> = Arc::default();
        let counter = || Arc::new(AtomicU64::new(0));
        let (ok, ok_expected, failed) = (counter(), counter(), counter());
        let wrong: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let tasks = (0..clients)
            .map(|_| {
                let (stop, expect, wrong) = (stop.clone(), expect.clone(), wrong.clone());
                let (ok, ok_expected, failed) = (ok.clone(), ok_expected.clone(), failed.clone());
                tokio::spawn(async move {
                    let client = http1_client();
                    let mut sent = 0;
                    while sent < MAX_EACH && !stop.load(Ordering::Relaxed) {
                        sent += 1;
                        let expected = *expect.read().unwrap();
                        let request = Request::get(format!("http://{addr}/load"))
                            .body(full(""))
                            .unwrap();
                        let response = match client.request(request).await {
                            Ok(r) if r.status() == 200 => r,
                            _ => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        };
                        let server = response.headers()["x-upstream"].to_str().unwrap();
                        if let Some(expected) = expected {
                            if server == expected {
                                ok_expected.fetch_add(1, Ordering::Relaxed);
                            } else {
                                wrong.lock().unwrap().push(server.to_string());
                            }
                        }
                        if body_string(response).await.is_empty() {
                            failed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    sent
                })
            })
            .collect();
        Load {
            stop,
            expect,
            ok,
            ok_expected,
            failed,
            wrong,
            tasks,
        }
    }

    /// From now on every request sent must be answered by `upstream`.
    pub fn expect(&self, upstream: &'static str) {
        *self.expect.write().unwrap() = Some(upstream);
    }

    /// Waits until `n` more requests were answered by the expected upstream.
    pub async fn wait_for_more(&self, n: u64) {
        let target = self.ok_expected.load(Ordering::Relaxed) + n;
        let counter = self.ok_expected.clone();
        wait_until(&format!("{n} more requests"), DEADLINE, || {
            let counter = counter.clone();
            async move { counter.load(Ordering::Relaxed) >= target }
        })
        .await;
    }

    /// Stops the clients; asserts none ran into its bound (they ran until stopped).
    pub async fn stop(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let sent = task.await.unwrap();
            assert!(
                sent < MAX_EACH,
                "a client hit its bound before the stop signal"
            );
        }
        let wrong = self.wrong.lock().unwrap().clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            wrong,
        )
    }
}
