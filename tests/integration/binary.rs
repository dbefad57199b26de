//! The `hoptrace` binary itself: `check`, `--help`/`--version`, graceful shutdown on
//! SIGTERM, the second signal, and constant memory while gigabytes stream through.

use crate::common;

use std::net::SocketAddr;
use std::process::Command;

use bytes::Bytes;
use common::process::{BIN, DEADLINE, Proxy};
use common::*;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

fn config(upstream: SocketAddr, grace: &str) -> String {
    format!(
        r#"
[service]
name = "binary-test"
[admin]
bind = "127.0.0.1:0"
[tracing]
exporter = "none"
[shutdown]
grace = "{grace}"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "inbound"
[[routes]]
listener = "main"
upstream = "app"
[upstreams.app]
endpoints = ["{upstream}"]
"#
    )
}

#[test]
fn check_accepts_the_example_and_rejects_each_invalid_fixture() {
    let output = Command::new(BIN)
        .args(["check", "--config", "config.example.toml"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("config.example.toml: ok"));

    // Each fixture must print exactly its `# expect:` lines, nothing missing and nothing more.
    // Run from the repository root, where the fixtures' relative TLS paths start.
    let mut failures = Vec::new();
    for path in fixtures::invalid_fixtures() {
        let output = Command::new(BIN)
            .current_dir(fixtures::repo_root())
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", path.display());
        assert!(output.stdout.is_empty(), "{}", path.display());
        if let Err(e) = fixtures::compare(&path, &String::from_utf8_lossy(&output.stderr)) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // README's Configuration section shows this output verbatim.
    let output = Command::new(BIN)
        .current_dir(fixtures::repo_root())
        .args([
            "check",
            "--config",
            "tests/fixtures/invalid/multiple_errors.toml",
        ])
        .output()
        .unwrap();
    let readme = std::fs::read_to_string(fixtures::repo_root().join("README.md")).unwrap();
    let printed = String::from_utf8_lossy(&output.stderr);
    assert!(
        readme.contains(&format!("```\n{printed}```\n")),
        "README's `check` example differs from the real output:\n{printed}"
    );

    let output = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/hoptrace.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("cannot read config file /nonexistent/hoptrace.toml")
    );
}

#[test]
fn help_and_version_explain_themselves() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    // It says what hoptrace is, not only that it proxies.
    for word in [
        "tracing sidecar",
        "span for every hop",
        "W3C trace context",
        "OTLP",
        "run",
        "check",
        "RUST_LOG",
        "--log-format",
    ] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
    let output = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("--config") && help.contains("grace"),
        "{help}"
    );
    let output = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("hoptrace {}", env!("CARGO_PKG_VERSION"))
    );
    // A bad command line is exit code 2, with usage.
    let output = Command::new(BIN).arg("serve").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

/// An upstream that signals when a request arrives and answers only when the gate opens.
async fn gated_upstream() -> (TestServer, Gate, Gate) {
    let (arrived, release) = (Gate::default(), Gate::default());
    let (a, r) = (arrived.clone(), release.clone());
    let server = serve(move |_req| {
        let (arrived, release) = (a.clone(), r.clone());
        async move {
            arrived.notify_one();
            release.notified().await;
            text(200, "finished after SIGTERM")
        }
    })
    .await;
    (server, arrived, release)
}

async fn refuses_connections(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

async fn admin_status(admin: SocketAddr, path: &str) -> Option<u16> {
    let client = http1_client();
    let response = client
        .request(
            Request::get(format!("http://{admin}{path}"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .ok()?;
    Some(response.status().as_u16())
}

#[tokio::test]
async fn sigterm_lets_the_in_flight_request_finish_then_exits_0() {
    let (upstream, arrived, release) = gated_upstream().await;
    let mut proxy = Proxy::spawn(&config(upstream.addr, "30s"));
    let addr = proxy.listeners["main"];
    assert_eq!(admin_status(proxy.admin, "/ready").await, Some(200));
    assert_eq!(admin_status(proxy.admin, "/live").await, Some(200));

    let in_flight =
        tokio::spawn(async move { get(&http1_client(), format!("http://{addr}/work")).await });
    arrived.notified().await;
    proxy.signal(libc::SIGTERM);
    // The signal took effect: new connections are refused, readiness is withdrawn.
    wait_until("listener closed", DEADLINE, || refuses_connections(addr)).await;
    assert_eq!(admin_status(proxy.admin, "/ready").await, Some(503));
    release.notify_one();

    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(body_string(response).await, "finished after SIGTERM");
    assert_eq!(proxy.exit_code().await, 0);
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let (upstream, arrived, _release) = gated_upstream().await;
    let mut proxy = Proxy::spawn(&config(upstream.addr, "1h"));
    let addr = proxy.listeners["main"];
    // This request never completes: the process exits under it.
    let _in_flight = tokio::spawn(async move {
        let request = Request::get(format!("http://{addr}/"))
            .body(full(""))
            .unwrap();
        let _ = http1_client().request(request).await;
    });
    arrived.notified().await;
    proxy.signal(libc::SIGTERM);
    wait_until("listener closed", DEADLINE, || refuses_connections(addr)).await;
    // Draining would wait an hour for the gated request; the second signal cuts it short.
    proxy.signal(libc::SIGINT);
    assert_eq!(proxy.exit_code().await, 130);
}

const GIB: u64 = 1 << 30;
const CHUNK: usize = 256 * 1024;

fn generated_body(total: u64) -> TestBody {
    let chunk = Bytes::from(vec![b'z'; CHUNK]);
    let stream = futures_util::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        async move {
            (sent < total).then(|| {
                let n = (total - sent).min(CHUNK as u64) as usize;
                (
                    Ok::<_, BoxError>(Frame::data(chunk.slice(..n))),
                    sent + n as u64,
                )
            })
        }
    });
    StreamBody::new(stream).boxed()
}

async fn count_bytes(
    mut body: impl hyper::body::Body<Data = Bytes, Error: std::fmt::Debug> + Unpin,
) -> u64 {
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len() as u64;
        }
    }
    total
}

#[tokio::test]
async fn a_gigabyte_each_way_streams_in_constant_memory() {
    let upstream = serve(|req: Request<hyper::body::Incoming>| async move {
        if req.method() == http::Method::POST {
            let received = count_bytes(req.into_body()).await;
            http::Response::new(full(received.to_string()))
        } else {
            http::Response::new(generated_body(GIB))
        }
    })
    .await;
    let proxy = Proxy::spawn(&config(upstream.addr, "1s"));
    let addr = proxy.listeners["main"];
    let client = http1_client();

    let upload = Request::post(format!("http://{addr}/upload"))
        .body(generated_body(GIB))
        .unwrap();
    let response = client.request(upload).await.unwrap();
    assert_eq!(body_string(response).await, GIB.to_string());

    let response = get(&client, format!("http://{addr}/download")).await;
    assert_eq!(count_bytes(response.into_body()).await, GIB);

    // Buffering either body whole would need over 1 GiB; streaming needs a few buffers.
    let peak = proxy.peak_rss();
    assert!(peak < 64 << 20, "peak RSS {} MiB", peak >> 20);
    eprintln!("hoptrace peak RSS after 2 GiB through: {} MiB", peak >> 20);
}

fn traced_config(upstream: SocketAddr, tracing: &str) -> String {
    config(upstream, "5s").replace("[tracing]\nexporter = \"none\"\n", tracing)
}

#[tokio::test]
async fn stdout_exporter_writes_one_json_line_per_span() {
    let upstream = echo_server("app").await;
    let proxy = Proxy::spawn(&traced_config(
        upstream.addr,
        "[tracing]\nexporter = \"stdout\"\nbatch_delay = \"10ms\"\n",
    ));
    let addr = proxy.listeners["main"];
    let request = Request::get(format!("http://{addr}/hello?x=1"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(full(""))
        .unwrap();
    assert_eq!(http1_client().request(request).await.unwrap().status(), 200);
    let line = proxy
        .stdout
        .recv_timeout(DEADLINE)
        .expect("no span on stdout");
    let span: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(span["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(span["kind"], "server");
    assert_eq!(span["name"], "GET /");
    assert_eq!(span["attributes"]["url.path"], "/hello");
    assert_eq!(span["attributes"]["http.response.status_code"], 200);
}

#[tokio::test]
async fn otel_environment_overrides_the_file_and_sigterm_flushes_spans() {
    let receiver = common::otlp::Receiver::start().await;
    let upstream = echo_server("app").await;
    // The file exports nowhere useful and would batch for an hour: only the environment's
    // endpoint and the flush at shutdown can deliver the span.
    let mut proxy = Proxy::spawn_with_env(
        &traced_config(
            upstream.addr,
            "[tracing]\nbatch_delay = \"1h\"\n[tracing.otlp]\nendpoint = \"http://127.0.0.1:9\"\n",
        ),
        &[
            ("OTEL_SERVICE_NAME", "from-env".to_string()),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.http_url()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_string()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=test,team=edge".to_string(),
            ),
        ],
    );
    let addr = proxy.listeners["main"];
    let response = get(&http1_client(), format!("http://{addr}/flush-me")).await;
    assert_eq!(response.status(), 200);
    assert!(receiver.spans().is_empty(), "batched, not yet exported");
    proxy.signal(libc::SIGTERM);
    assert_eq!(proxy.exit_code().await, 0);
    let spans = receiver.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0];
    assert_eq!(span.attr_str("url.path"), Some("/flush-me"));
    assert_eq!(span.resource["service.name"], "from-env");
    assert_eq!(span.resource["deployment.environment"], "test");
    assert_eq!(span.resource["team"], "edge");
    assert_eq!(span.transport, "http");
}

#[tokio::test]
async fn sighup_reloads_the_config() {
    let (a, b) = (echo_server("a").await, echo_server("b").await);
    // --no-watch: only the signal can apply the change.
    let proxy = Proxy::spawn_full(&config(a.addr, "5s"), &[], &["--no-watch"]);
    let addr = proxy.listeners["main"];
    let served = || async move {
        let response = get(&http1_client(), format!("http://{addr}/")).await;
        response.headers()["x-upstream"]
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(served().await, "a");
    std::fs::write(proxy.config_path(), config(b.addr, "5s")).unwrap();
    assert_eq!(
        served().await,
        "a",
        "not watching: nothing changes by itself"
    );
    proxy.signal(libc::SIGHUP);
    let admin = proxy.admin;
    wait_until("SIGHUP applied", DEADLINE, || async move {
        let response = get(&http1_client(), format!("http://{admin}/reload")).await;
        let status = body_json(response).await;
        status["generation"] == 2 && status["last"]["trigger"] == "signal"
    })
    .await;
    assert_eq!(served().await, "b");
}

#[tokio::test]
async fn the_access_log_line_carries_the_exported_span_trace_id() {
    let receiver = common::otlp::Receiver::start().await;
    let upstream = echo_server("app").await;
    // A second route leads to a closed port, for a failing request.
    let dead = refusing_addr();
    let proxy = Proxy::spawn(&format!(
        "{}[[routes]]\nlistener = \"main\"\npath_prefix = \"/gone\"\nupstream = \"dead\"\n\
         [upstreams.dead]\nendpoints = [\"{dead}\"]\n",
        traced_config(
            upstream.addr,
            &format!(
                "[tracing]\nbatch_delay = \"10ms\"\n[tracing.otlp]\nendpoint = \"{}\"\n",
                receiver.grpc_url()
            ),
        )
    ));
    let addr = proxy.listeners["main"];
    let response = get(
        &http1_client(),
        format!("http://{addr}/orders/7?token=secret"),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = body_string(response).await;
    let line = proxy.next_event("request");
    let spans = receiver.wait_for_spans(1).await;
    assert_eq!(line["target"], "hoptrace::access");
    assert_eq!(line["trace_id"], spans[0].trace_id.as_str());
    assert_eq!(line["span_id"], spans[0].span_id.as_str());
    assert_eq!(line["listener"], "main");
    assert_eq!(line["method"], "GET");
    assert_eq!(
        line["path"], "/orders/7",
        "no query: it may carry credentials"
    );
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes"], body.len());
    assert_eq!(line["upstream"], upstream.addr.to_string());
    assert!(line["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(line.get("error.type").is_none());
    assert!(line.get("error_type").is_none());
    assert!(line["timestamp"].is_string());

    // A failure names its error.type.
    let response = get(&http1_client(), format!("http://{addr}/gone")).await;
    assert_eq!(response.status(), 502);
    let line = loop {
        let line = proxy.next_event("request");
        if line["path"] == "/gone" {
            break line;
        }
    };
    assert_eq!(line["error.type"], "connect_error", "{line}");
    assert_eq!(line["status"], 502);
}

#[tokio::test]
async fn the_access_log_can_be_turned_off() {
    let upstream = echo_server("app").await;
    let mut proxy = Proxy::spawn(&format!(
        "{}[access_log]\nenabled = false\n",
        config(upstream.addr, "5s")
    ));
    let addr = proxy.listeners["main"];
    assert_eq!(
        get(&http1_client(), format!("http://{addr}/"))
            .await
            .status(),
        200
    );
    proxy.signal(libc::SIGTERM);
    // Everything logged before shutdown began: no access line among it.
    loop {
        let event = proxy
            .events
            .recv_timeout(DEADLINE)
            .expect("no shutdown log line");
        assert_ne!(event["message"], "request", "{event}");
        if event["message"] == "shutting down: draining in-flight requests" {
            break;
        }
    }
    assert_eq!(proxy.exit_code().await, 0);
}

/// README's promise: rustls on `ring` only. aws-lc's C build would add minutes to a clean
/// build, and one crate with default features on is enough to pull it in.
#[test]
fn the_build_uses_ring_not_aws_lc() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let packages: Vec<&str> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|name| name.trim_end_matches('"'))
        .collect();
    assert!(packages.contains(&"ring"), "no ring in Cargo.lock");
    let aws: Vec<&&str> = packages
        .iter()
        .filter(|p| p.starts_with("aws-lc"))
        .collect();
    assert!(aws.is_empty(), "aws-lc in Cargo.lock: {aws:?}");
}

/// `--threads 1` runs everything on tokio's current-thread scheduler: requests, the span
/// export over gRPC, the config file watcher (its load runs on the blocking pool), and the
/// flush at SIGTERM must all still work with no worker thread.
#[tokio::test]
async fn one_thread_serves_reloads_and_flushes_its_spans() {
    let receiver = common::otlp::Receiver::start().await;
    let (a, b) = (echo_server("a").await, echo_server("b").await);
    // Batched for an hour: only the flush at SIGTERM can deliver the spans.
    let traced = |upstream| {
        traced_config(
            upstream,
            &format!(
                "[tracing]\nbatch_delay = \"1h\"\n[tracing.otlp]\nprotocol = \"grpc\"\nendpoint = \"{}\"\n",
                receiver.grpc_url()
            ),
        )
    };
    let mut proxy = Proxy::spawn_full(&traced(a.addr), &[], &["--threads", "1"]);
    let addr = proxy.listeners["main"];
    let served = |path: &'static str| async move {
        let response = get(&http1_client(), format!("http://{addr}{path}")).await;
        assert_eq!(response.status(), 200);
        response.headers()["x-upstream"]
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(served("/first").await, "a");

    // The file watcher (not a signal) applies the change.
    std::fs::write(proxy.config_path(), traced(b.addr)).unwrap();
    wait_until("the file change applied", DEADLINE, || async move {
        served("/poll").await == "b"
    })
    .await;
    assert!(receiver.spans().is_empty(), "batched, not yet exported");

    proxy.signal(libc::SIGTERM);
    assert_eq!(proxy.exit_code().await, 0);
    let spans = receiver.spans();
    let paths: Vec<_> = spans
        .iter()
        .filter_map(|s| s.attr_str("url.path"))
        .collect();
    assert_eq!(paths.first(), Some(&"/first"), "{paths:?}");
    assert!(paths.len() >= 2, "{paths:?}");
    assert!(paths[1..].iter().all(|p| *p == "/poll"), "{paths:?}");
    assert!(
        spans
            .iter()
            .all(|s| s.attr_i64("http.response.status_code") == Some(200)),
        "{spans:#?}"
    );
}
