//! Collector black-holed: the proxy's memory stays bounded. The real binary, a collector
//! that accepts TCP and never answers, a 64-span queue, and 20 000 requests after a warm-up
//! of 2 000: the process's resident set (`VmRSS` in `/proc/PID/status`) grows by less than
//! 64 MiB, however many spans are lost. (Queue depth alone is checked in `faults.rs`.)

use crate::common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hoptrace");
const CLIENTS: usize = 8;

/// Kills and reaps the child when dropped, also when the test panics.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The resident set of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

/// `n` requests spread over CLIENTS keep-alive connections; every one must succeed.
async fn load(addr: SocketAddr, n: usize) {
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let client = http1_client();
            for i in 0..n / CLIENTS {
                let response = get(&client, format!("http://{addr}/c{c}/r{i}?q={i}")).await;
                assert_eq!(response.status(), 200);
                body_string(response).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_collector_keeps_memory_bounded() {
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = hole.local_addr().unwrap();
    let hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hole.accept().await {
            held.push(stream);
        }
    });
    let upstream = echo_server("app").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[service]
name = "memory"
[admin]
bind = "127.0.0.1:0"
[tracing]
queue_size = 64
batch_size = 16
batch_delay = "10ms"
[tracing.otlp]
protocol = "grpc"
endpoint = "http://{collector}"
timeout = "300ms"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "gateway"
[[routes]]
listener = "main"
upstream = "app"
[upstreams.app]
endpoints = ["{}"]
"#,
            upstream.addr
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Guard(child);
    let pid = child.0.id();
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str(&line) {
                let _ = tx.send(event);
            }
        }
    });
    let (mut addr, mut admin) = (None, None);
    while addr.is_none() || admin.is_none() {
        let event = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("no listening lines");
        let parsed = || {
            event["addr"]
                .as_str()
                .unwrap()
                .parse::<SocketAddr>()
                .unwrap()
        };
        match event["message"].as_str() {
            Some("listening") => addr = Some(parsed()),
            Some("admin listening") => admin = Some(parsed()),
            _ => {}
        }
    }
    let (addr, admin) = (addr.unwrap(), admin.unwrap());

    load(addr, 2_000).await;
    let before = rss_kib(pid);
    load(addr, 20_000).await;
    let after = rss_kib(pid);
    let growth = after.saturating_sub(before);
    println!("VmRSS after warm-up {before} KiB, after 20 000 more requests {after} KiB");
    assert!(
        growth < 64 * 1024,
        "VmRSS grew by {growth} KiB over 20 000 requests ({before} → {after} KiB)"
    );

    // The collector really was black-holed: spans were lost, none exported.
    let metrics = body_string(get(&http1_client(), format!("http://{admin}/metrics")).await).await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("hoptrace_spans_exported_total"), 0.0);
    assert!(value("hoptrace_spans_dropped_total") + value("hoptrace_spans_failed_total") > 0.0);
    // Queued (at most queue_size) plus the batch being built and the four in flight (at
    // most batch_size each).
    assert!(value("hoptrace_export_queue_depth") <= 64.0 + 5.0 * 16.0);
    drop(child);
    hole.abort();
}
