//! What the real binary logs on stderr: `RUST_LOG` chooses the levels, text logs carry no
//! colour codes when stderr is not a terminal, and a request head that hyper refused or that
//! never finished arriving is logged at info with its cause and client.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::process::{BIN, DEADLINE, Proxy};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(upstream: SocketAddr) -> String {
    format!(
        r#"
[service]
name = "logs"
[admin]
bind = "127.0.0.1:0"
reload_token = "a-reload-token-of-some-length"
[tracing]
exporter = "none"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "inbound"
header_read_timeout = "500ms"
max_header_bytes = 8192
[[routes]]
listener = "main"
upstream = "app"
[upstreams.app]
endpoints = ["{upstream}"]
"#
    )
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    String::from_utf8_lossy(&received).into_owned()
}

/// Sends `bytes` on a new connection and waits for the server to close it. Returns the
/// client's address and the response.
async fn send_and_wait_for_close(addr: SocketAddr, bytes: &[u8]) -> (SocketAddr, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let client = stream.local_addr().unwrap();
    (client, read_to_close(&mut stream).await)
}

#[tokio::test]
async fn refused_request_heads_are_logged_with_cause_and_client() {
    let upstream = serve(|_req| async { text(200, "ok") }).await;
    let proxy = Proxy::spawn(&config(upstream.addr));
    let addr = proxy.listeners["main"];

    // An idle kept-alive connection that hyper closes after header_read_timeout is not an
    // error worth a line: done first, so that the next "request head refused" event, if it
    // named this client, would fail below.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let idle_client = idle.local_addr().unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let response = read_to_close(&mut idle).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let cases: [(&[u8], &str, &str); 3] = [
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
            "HTTP/1.1 400",
            "malformed request head; answered 400",
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(10_000)
            )
            .leak()
            .as_bytes(),
            "HTTP/1.1 431",
            "request head too large; answered 431",
        ),
        // Half a head, then nothing: cut off after header_read_timeout, no response.
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n",
            "",
            "request head incomplete after header_read_timeout; closed",
        ),
    ];
    for (request, status, cause) in cases {
        let (client, response) = send_and_wait_for_close(addr, request).await;
        assert!(response.starts_with(status), "{cause}: {response}");
        let event = proxy.next_event("request head refused");
        assert_eq!(event["level"], "INFO", "{event}");
        assert_eq!(event["cause"], cause, "{event}");
        assert_eq!(event["client"], client.to_string(), "{event}");
        assert_ne!(event["client"], idle_client.to_string(), "{event}");
        assert_eq!(event["listener"], "main", "{event}");
    }
}

#[tokio::test]
async fn rust_log_chooses_what_is_logged() {
    let upstream = serve(|_req| async { text(200, "ok") }).await;

    // Per-target directives: only warnings, except hoptrace::app at info (its "listening"
    // events say the process is up).
    let mut proxy = Proxy::spawn_until(
        &config(upstream.addr),
        &[("RUST_LOG", "warn,hoptrace::app=info".into())],
        &[],
        "listening",
    );
    exercise(proxy.listeners["main"], proxy.admin).await;
    proxy.signal(libc::SIGTERM);
    assert_eq!(proxy.exit_code().await, 0);
    let events = proxy.remaining_events();
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(messages.contains(&"POST /reload refused"), "{messages:?}");
    for event in &events {
        let allowed = event["level"] == "WARN"
            || event["level"] == "ERROR"
            || (event["level"] == "INFO" && event["target"] == "hoptrace::app");
        assert!(allowed, "{event}");
    }

    // Debug: the access log (info) and a client connection that ended mid-head (debug).
    let mut proxy = Proxy::spawn_with_env(&config(upstream.addr), &[("RUST_LOG", "debug".into())]);
    exercise(proxy.listeners["main"], proxy.admin).await;
    // The half-sent head's connection ends on its own time: wait for its line.
    let mut events = Vec::new();
    while !events
        .last()
        .is_some_and(|e: &serde_json::Value| e["message"] == "connection ended with an error")
    {
        events.push(proxy.events.recv_timeout(DEADLINE).expect("no debug line"));
    }
    proxy.signal(libc::SIGTERM);
    assert_eq!(proxy.exit_code().await, 0);
    events.extend(proxy.remaining_events());
    let has = |level: &str, message: &str| {
        events
            .iter()
            .any(|e| e["level"] == level && e["message"] == message)
    };
    assert!(has("INFO", "request"), "no access log line");
    assert!(has("WARN", "POST /reload refused"));
    assert!(has("DEBUG", "connection ended with an error"));
}

/// A request (the access log: info), a connection that ends half-way through its head
/// (debug), and a reload without the token (warn).
async fn exercise(addr: SocketAddr, admin: SocketAddr) {
    let response = get(&http1_client(), format!("http://{addr}/")).await;
    assert_eq!(response.status(), 200);
    body_string(response).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    drop(stream);
    let reload = http::Request::post(format!("http://{admin}/reload"))
        .body(full(""))
        .unwrap();
    let response = http1_client().request(reload).await.unwrap();
    assert_eq!(response.status(), 401);
}

#[test]
fn text_logs_have_no_colour_codes_when_piped() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(serve(|_req| async { text(200, "ok") }));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config(upstream.addr)).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env_remove("HOPTRACE_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    while !log.contains("hoptrace started") {
        let n = stderr.read_line(&mut log).unwrap();
        assert!(n > 0, "exited before starting:\n{log}");
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    stderr.read_to_string(&mut log).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(log.contains(" INFO "), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(
        !log.contains("\x1b["),
        "colour codes in piped logs:\n{log:?}"
    );
}
