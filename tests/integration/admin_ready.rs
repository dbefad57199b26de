//! `/ready`: 503 until every listener is bound, 200 while serving. The real binary is held
//! between binding its admin listener and binding the others (its stderr is a full pipe, so
//! its first log line, written right after admin starts serving, blocks): /ready answers
//! 503 there. Let go, it becomes ready, or, when a listener's port is taken, exits non-zero
//! naming the port without ever having been ready. The drain after SIGTERM is in
//! `tests/integration/binary.rs`.

use crate::common;

use std::io::Read as _;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hoptrace");
const DEADLINE: Duration = Duration::from_secs(30);

/// A pipe whose buffer is full: a write to `.1` blocks until `.0` is read.
fn full_pipe() -> (std::fs::File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) with a valid two-element array; the fds are owned from here on.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let fd = write.as_raw_fd();
    // SAFETY: fcntl(2) and write(2) on a pipe fd this function owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        assert!(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0);
        // Whole pages, then single bytes: no room left for even one.
        for chunk in [4096, 1] {
            let filler = vec![b'\n'; chunk];
            while libc::write(fd, filler.as_ptr().cast(), chunk) > 0 {}
        }
        assert!(libc::fcntl(fd, libc::F_SETFL, flags) == 0);
    }
    (std::fs::File::from(read), write)
}

/// A port that was free a moment ago (bound, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `hoptrace run` on `simple_config` with admin on a known port and the listener on
/// `listener_port`, its stderr a full pipe: it stops at its first log line.
fn spawn_held(
    dir: &std::path::Path,
    upstream: SocketAddr,
    listener_port: u16,
) -> (Child, std::fs::File, SocketAddr) {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let path = dir.join("config.toml");
    let config = simple_config("inbound", upstream, "http1")
        .replacen("bind = \"127.0.0.1:0\"", &format!("bind = \"{admin}\""), 1)
        .replace(
            "bind = \"127.0.0.1:0\"",
            &format!("bind = \"127.0.0.1:{listener_port}\""),
        );
    std::fs::write(&path, config).unwrap();
    let (stderr, held) = full_pipe();
    let child = Command::new(BIN)
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(held))
        .spawn()
        .unwrap();
    (child, stderr, admin)
}

/// `GET path` on admin: the status, or `None` while nothing accepts connections there.
async fn status(admin: SocketAddr, path: &str) -> Option<u16> {
    let request = http::Request::get(format!("http://{admin}{path}"))
        .body(full(""))
        .unwrap();
    let response = http1_client().request(request).await.ok()?;
    Some(response.status().as_u16())
}

/// Reads the pipe to its end (the process's exit) on a thread: the JSON log events.
fn drain(mut stderr: std::fs::File) -> std::thread::JoinHandle<Vec<serde_json::Value>> {
    std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    })
}

async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < DEADLINE, "hoptrace did not exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn ready_is_503_while_listeners_are_not_bound_then_200() {
    let app = echo_server("app").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut child, stderr, admin) = spawn_held(dir.path(), app.addr, port);
    wait_until("admin answering", DEADLINE, || async move {
        status(admin, "/live").await == Some(200)
    })
    .await;
    // Held before binding its listener: up, not ready, the listener's port closed.
    assert_eq!(status(admin, "/ready").await, Some(503));
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );

    let logs = drain(stderr);
    wait_until("ready", DEADLINE, || async move {
        status(admin, "/ready").await == Some(200)
    })
    .await;
    let response = get(&http1_client(), format!("http://127.0.0.1:{port}/")).await;
    assert_eq!(response.status(), 200);
    // SIGTERM, not SIGKILL: /ready turns 200 just before "hoptrace started" is written, and
    // the signal is only taken after that line, so the log is complete at the exit.
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(wait_exit(&mut child).await.success());
    let events = logs.join().unwrap();
    let messages: Vec<_> = events.iter().map(|e| e["message"].clone()).collect();
    let started = messages.iter().position(|m| m == "hoptrace started");
    let draining = messages
        .iter()
        .position(|m| m == "shutting down: draining in-flight requests");
    assert!(
        started.is_some() && started < draining,
        "expected start then drain: {messages:?}"
    );
}

#[tokio::test]
async fn a_listener_whose_port_is_taken_is_never_ready_and_the_process_exits_naming_it() {
    let app = echo_server("app").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, stderr, admin) = spawn_held(dir.path(), app.addr, port);
    wait_until("admin answering", DEADLINE, || async move {
        status(admin, "/live").await == Some(200)
    })
    .await;
    assert_eq!(status(admin, "/ready").await, Some(503));

    // Let go: the bind fails. Every /ready answer until the exit is 503.
    let logs = drain(stderr);
    let mut answers = Vec::new();
    let start = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(start.elapsed() < DEADLINE, "hoptrace did not exit");
        answers.extend(status(admin, "/ready").await);
    };
    assert_eq!(exit.code(), Some(1));
    assert!(answers.iter().all(|s| *s == 503), "{answers:?}");
    let events = logs.join().unwrap();
    let position = |f: &dyn Fn(&serde_json::Value) -> bool| events.iter().position(f);
    let failed = position(&|e| {
        e["level"] == "ERROR"
            && e["message"].as_str().is_some_and(|m| {
                m.contains(&format!("127.0.0.1:{port}")) && m.contains("cannot bind")
            })
    })
    .unwrap_or_else(|| panic!("no error naming port {port}: {events:#?}"));
    let admin_up = position(&|e| e["message"] == "admin listening").unwrap();
    assert!(admin_up < failed);
    assert_eq!(position(&|e| e["message"] == "listening"), None);
    assert_eq!(position(&|e| e["message"] == "hoptrace started"), None);
    // Admin is gone with the process.
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());
    drop(taken);
}

/// The admin state on its own starts not ready.
#[tokio::test]
async fn ready_is_503_until_ready_and_while_draining() {
    let app = echo_server("app").await;
    let proxy = start_proxy(&simple_config("inbound", app.addr, "http1")).await;
    let admin = proxy.admin_addr();
    let status = |path: &'static str| async move {
        get(&http1_client(), format!("http://{admin}{path}"))
            .await
            .status()
            .as_u16()
    };
    assert_eq!(status("/ready").await, 200);
    assert_eq!(status("/live").await, 200);
    proxy.shutdown().await;

    // The admin state starts not ready: hoptrace serves it before binding the listeners and
    // marks it ready only once every listener is bound.
    let (shared, metrics) = {
        let config =
            hoptrace::config::Config::from_toml_str(&simple_config("inbound", app.addr, "http1"))
                .unwrap();
        let metrics = hoptrace::metrics::Metrics::new();
        let snapshot =
            hoptrace::proxy::Snapshot::build(std::sync::Arc::new(config), 1, None, &metrics)
                .unwrap();
        (
            std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(snapshot)),
            std::sync::Arc::new(metrics),
        )
    };
    let state = std::sync::Arc::new(hoptrace::admin::AdminState::new(
        shared,
        std::sync::Arc::new(hoptrace::export::recent::RecentTraces::new(1)),
        metrics,
        Default::default(),
    ));
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = socket.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(hoptrace::admin::serve(socket, state.clone(), stop_rx));
    let status = |path: &'static str| async move {
        get(&http1_client(), format!("http://{admin}{path}"))
            .await
            .status()
            .as_u16()
    };
    assert_eq!(status("/ready").await, 503);
    assert_eq!(status("/live").await, 200);
    state.set_ready(true);
    assert_eq!(status("/ready").await, 200);
    stop.send(true).unwrap();
    task.await.unwrap();
}
