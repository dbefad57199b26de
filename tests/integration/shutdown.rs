//! SIGTERM under load, on the real binary: every request that reached the proxy before the
//! signal is answered, and every span of an answered request reaches the collector. With a
//! black-holed collector, the flush gives up at its deadline, the process still exits, and
//! the final counts add up (every span exported, dropped or failed). A request that outlasts
//! `[shutdown] grace` is cut off and the process still exits 0.

use crate::common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::otlp::Receiver;
use common::process::{DEADLINE, Proxy};
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hoptrace");
const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_started_request_and_no_span() {
    let receiver = Receiver::start().await;
    // The upstream answers at once until `hold` is set; then it keeps every request waiting
    // until `release`, so the signal lands while CLIENTS requests are in flight.
    let hold = Arc::new(AtomicBool::new(false));
    let waiting = Arc::new(AtomicUsize::new(0));
    let release = Gate::default();
    let (h, w, r) = (hold.clone(), waiting.clone(), release.clone());
    let upstream = serve(move |_req| {
        let (hold, waiting, release) = (h.clone(), w.clone(), r.clone());
        async move {
            if hold.load(Ordering::SeqCst) {
                let released = release.notified();
                waiting.fetch_add(1, Ordering::SeqCst);
                released.await;
            }
            text(200, "ok")
        }
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[service]
name = "shutdown"
[admin]
bind = "127.0.0.1:0"
[shutdown]
grace = "20s"
[tracing]
batch_delay = "1s"
[tracing.otlp]
protocol = "grpc"
endpoint = "{}"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "inbound"
[[routes]]
listener = "main"
upstream = "app"
[upstreams.app]
endpoints = ["{}"]
"#,
            receiver.grpc_url(),
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
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str(&line) {
                let _ = tx.send(event);
            }
        }
    });
    let addr: SocketAddr = loop {
        let event = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("no listener");
        if event["message"] == "listening" {
            break event["addr"].as_str().unwrap().parse().unwrap();
        }
    };

    // Phase 1: CLIENTS clients, each sending requests one after another on its own
    // keep-alive connection, 25 each.
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let ok = ok.clone();
        clients.push(tokio::spawn(async move {
            let client = http1_client();
            for _ in 0..25 {
                let response = get(&client, format!("http://{addr}/load")).await;
                assert_eq!(response.status(), 200);
                body_string(response).await;
                ok.fetch_add(1, Ordering::SeqCst);
            }
            client
        }));
    }
    let mut kept = Vec::new();
    for c in clients {
        kept.push(c.await.unwrap());
    }
    assert_eq!(ok.load(Ordering::SeqCst), CLIENTS * 25);

    // Phase 2: CLIENTS more requests held in flight at the upstream, then SIGTERM.
    hold.store(true, Ordering::SeqCst);
    let mut in_flight = Vec::new();
    for client in kept {
        in_flight.push(tokio::spawn(async move {
            let response = get(&client, format!("http://{addr}/in-flight")).await;
            (response.status(), body_string(response).await)
        }));
    }
    wait_until(
        "every request is in flight",
        Duration::from_secs(10),
        || {
            let waiting = waiting.clone();
            async move { waiting.load(Ordering::SeqCst) == CLIENTS }
        },
    )
    .await;
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    loop {
        let event = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("no drain log");
        if event["message"] == "stopped accepting; draining" {
            break;
        }
    }
    // New connections are refused now; the requests in flight still finish.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    release.notify_waiters();
    for task in in_flight {
        assert_eq!(
            task.await.unwrap(),
            (http::StatusCode::OK, "ok".to_string())
        );
    }

    // The process exits 0 after flushing: every answered request's span was exported,
    // although the batch delay (1 s) had not passed for the last ones.
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let total = CLIENTS * 26;
    let spans = receiver.wait_for_spans(total).await;
    assert_eq!(spans.len(), total);
    assert_eq!(
        spans
            .iter()
            .filter(|s| s.attr_str("url.path") == Some("/in-flight"))
            .count(),
        CLIENTS
    );
}

/// The collector accepts TCP connections and never answers. SIGTERM: the flush waits for
/// its deadline (`grace` 1 s, raised to the 5 s minimum), then gives up; the spans still
/// queued or being exported are counted as dropped, so the last log line adds up, and the
/// process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_black_holed_collector_exits_and_the_counts_add_up() {
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
name = "shutdown"
[admin]
bind = "127.0.0.1:0"
[shutdown]
grace = "1s"
[tracing]
queue_size = 64
batch_size = 16
batch_delay = "10ms"
[tracing.otlp]
protocol = "grpc"
endpoint = "http://{collector}"
timeout = "60s"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "inbound"
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
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str(&line) {
                let _ = tx.send(event);
            }
        }
    });
    let addr: SocketAddr = loop {
        let event = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("no listener");
        if event["message"] == "listening" {
            break event["addr"].as_str().unwrap().parse().unwrap();
        }
    };
    const REQUESTS: u64 = 150;
    let client = http1_client();
    for i in 0..REQUESTS {
        let response = get(&client, format!("http://{addr}/r{i}")).await;
        assert_eq!(response.status(), 200);
        body_string(response).await;
    }

    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // A generous bound that only catches a hang: the flush deadline is 5 s, the export
    // timeout 60 s.
    let exited = tokio::time::timeout(
        Duration::from_secs(40),
        tokio::task::spawn_blocking(move || child.wait().unwrap()),
    )
    .await
    .expect("hoptrace did not exit after SIGTERM")
    .unwrap();
    assert!(exited.success(), "{exited:?}");

    let events: Vec<serde_json::Value> = rx.try_iter().collect();
    let gave_up = events
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("span export did not finish"))
        })
        .unwrap_or_else(|| panic!("no give-up line: {events:#?}"));
    let lost = gave_up["lost"].as_u64().unwrap();
    assert!(lost > 0, "{gave_up}");
    let done = events
        .iter()
        .find(|e| e["message"] == "span export finished")
        .unwrap_or_else(|| panic!("no final counts: {events:#?}"));
    let count = |k: &str| done[k].as_u64().unwrap_or_else(|| panic!("{k}: {done}"));
    let (started, exported, dropped, failed) = (
        count("started"),
        count("exported"),
        count("dropped"),
        count("failed"),
    );
    assert_eq!(started, REQUESTS, "{done}");
    assert_eq!(exported, 0, "{done}");
    assert_eq!(
        started,
        exported + dropped + failed,
        "the counts add up: {done}"
    );
    assert!(dropped >= lost, "{done}");
    hole.abort();
}

#[tokio::test]
async fn a_request_outlasting_the_grace_period_is_cut_off_and_the_process_exits_0() {
    // The upstream takes the request and never answers.
    let arrived = Gate::default();
    let signal = arrived.clone();
    let upstream = serve(move |_req| {
        let arrived = signal.clone();
        async move {
            arrived.notify_one();
            std::future::pending::<()>().await;
            text(200, "never")
        }
    })
    .await;
    let grace = Duration::from_secs(1);
    let mut proxy = Proxy::spawn(&format!(
        r#"
[service]
name = "shutdown"
[admin]
bind = "127.0.0.1:0"
[shutdown]
grace = "1s"
[tracing]
exporter = "none"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "inbound"
[[routes]]
listener = "main"
upstream = "app"
[upstreams.app]
endpoints = ["{}"]
request_timeout = "1h"
"#,
        upstream.addr
    ));
    let addr = proxy.listeners["main"];
    let in_flight = tokio::spawn(async move {
        let request = http::Request::get(format!("http://{addr}/forever"))
            .body(full(""))
            .unwrap();
        http1_client().request(request).await
    });
    arrived.notified().await;
    let signalled = std::time::Instant::now();
    proxy.signal(libc::SIGTERM);

    // Exits 0 (within DEADLINE, checked by exit_code), after the grace period and not before.
    assert_eq!(proxy.exit_code().await, 0);
    assert!(signalled.elapsed() >= grace);
    let messages: Vec<String> = proxy
        .remaining_events()
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect();
    assert!(
        messages.contains(&"grace period over; closing remaining connections".to_owned()),
        "{messages:?}"
    );
    // The client's connection was closed under its request: an error, not a response.
    let outcome = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .expect("the client's connection was left open")
        .unwrap();
    let error = outcome.expect_err("a response to a request the upstream never answered");
    // hyper's IncompleteMessage: the connection closed before a response began.
    let closed = std::error::Error::source(&error)
        .and_then(|e| e.downcast_ref::<hyper::Error>())
        .is_some_and(hyper::Error::is_incomplete_message);
    assert!(closed, "{error:?}");
}
