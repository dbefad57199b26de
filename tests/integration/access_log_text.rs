//! The access log in text mode (the default `--log-format`), as a log file gets it: one plain
//! `key=value` line per request (no terminal colours), with the trace and span ids the
//! `traceresponse` header names, and `error.type` when the request failed.

use crate::common;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hoptrace");
const DEADLINE: Duration = Duration::from_secs(30);

/// The value of `key=` in a text log line (quotes removed).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

#[tokio::test]
async fn text_access_lines_carry_the_ids_and_the_error_type() {
    let app = echo_server("app").await;
    let dead = refusing_addr();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let config = format!(
        "{}[[routes]]\nlistener = \"main\"\npath_prefix = \"/gone\"\nupstream = \"dead\"\n\
         [upstreams.dead]\nendpoints = [\"{dead}\"]\n",
        simple_config("inbound", app.addr, "http1")
    );
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env_remove("HOPTRACE_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = |what: &str| loop {
        let line = lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no {what} line"));
        assert!(!line.contains('\u{1b}'), "a terminal colour code: {line:?}");
        if line.contains(what) {
            return line;
        }
    };
    let listening = next(": listening listener=main ");
    let addr: SocketAddr = field(&listening, "addr").unwrap().parse().unwrap();

    let response = get(&http1_client(), format!("http://{addr}/orders/7?token=x")).await;
    assert_eq!(response.status(), 200);
    let traceresponse = response.headers()["traceresponse"]
        .to_str()
        .unwrap()
        .to_string();
    body_string(response).await;
    let line = next("hoptrace::access");
    assert!(line.contains(" INFO hoptrace::access: request "), "{line}");
    assert_eq!(field(&line, "path"), Some("/orders/7"), "{line}");
    assert_eq!(field(&line, "status"), Some("200"), "{line}");
    assert_eq!(field(&line, "method"), Some("GET"), "{line}");
    // traceresponse: 00-{trace id}-{span id}-{flags}.
    let ids: Vec<&str> = traceresponse.split('-').collect();
    assert_eq!(field(&line, "trace_id"), Some(ids[1]), "{line}");
    assert_eq!(field(&line, "span_id"), Some(ids[2]), "{line}");
    assert_eq!(field(&line, "error.type"), None, "{line}");

    let response = get(&http1_client(), format!("http://{addr}/gone")).await;
    assert_eq!(response.status(), 502);
    let line = next("hoptrace::access");
    assert_eq!(field(&line, "path"), Some("/gone"), "{line}");
    assert_eq!(field(&line, "error.type"), Some("connect_error"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
}
