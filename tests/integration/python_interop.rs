//! Interop with a peer implementation: a client using the Python OpenTelemetry SDK starts a
//! CLIENT span and calls, through hoptrace, a server using the Python OpenTelemetry SDK,
//! which records a SERVER span; all export over OTLP/HTTP to the test receiver, and all spans
//! end up in one trace with the right parents (also with the B3 and Jaeger propagators). The
//! Python pair is also checked alone, without hoptrace. `tests/interop/setup.sh` makes `<repo>/.venv` with the pinned packages.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::otlp::{ReceivedSpan, Receiver};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn venv_python() -> PathBuf {
    repo().join(".venv/bin/python")
}

/// Proxy variables are removed so nothing routes loopback traffic elsewhere.
fn python_command(script: &str) -> Command {
    let mut command = Command::new(venv_python());
    command.arg(repo().join("tests/interop").join(script));
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_SERVICE_NAME",
        "OTEL_PROPAGATORS",
    ] {
        command.env_remove(var);
    }
    command.env("NO_PROXY", "127.0.0.1,localhost");
    command.env("PYTHONUNBUFFERED", "1");
    command
}

/// Kills (and reaps) a spawned process when dropped, also when the test panics.
struct ChildGuard {
    child: Option<Child>,
    name: &'static str,
}

impl ChildGuard {
    fn spawn(name: &'static str, mut command: Command) -> ChildGuard {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        ChildGuard {
            child: Some(child),
            name,
        }
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().unwrap()
    }

    /// Closes stdin (the process's signal to stop) and waits up to `deadline` for a clean exit.
    async fn shutdown(mut self, deadline: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        drop(child.stdin.take());
        let name = self.name;
        let status = tokio::task::spawn_blocking(move || {
            let start = std::time::Instant::now();
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return Some(status);
                }
                if start.elapsed() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .await
        .unwrap();
        status.unwrap_or_else(|| panic!("{name} did not exit within {deadline:?} of stdin closing"))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn setup_venv() {
    let output = tokio::process::Command::new("bash")
        .arg(repo().join("tests/interop/setup.sh"))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running tests/interop/setup.sh");
    assert!(
        output.status.success(),
        "tests/interop/setup.sh failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts server.py exporting to `otlp_endpoint`; returns it and the port it printed.
async fn start_py_server(otlp_endpoint: &str) -> (ChildGuard, u16) {
    start_py_server_with(otlp_endpoint, None).await
}

/// Like `start_py_server`, with the SDK's `OTEL_PROPAGATORS` set to `propagators`.
async fn start_py_server_with(otlp_endpoint: &str, propagators: Option<&str>) -> (ChildGuard, u16) {
    let mut command = python_command("server.py");
    if let Some(p) = propagators {
        command.env("OTEL_PROPAGATORS", p);
    }
    command
        .arg(otlp_endpoint)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut guard = ChildGuard::spawn("server.py", command);
    let stdout = guard.child().stdout.take().unwrap();
    let first_line = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        }),
    )
    .await
    .expect("server.py printed no PORT line within 30 s")
    .unwrap()
    .unwrap();
    let port = first_line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("server.py's first line is not `PORT n`: {first_line:?}"));
    (guard, port)
}

/// Runs client.py against `url`; returns its JSON report.
async fn run_py_client(url: &str, otlp_endpoint: &str) -> serde_json::Value {
    run_py_client_with(url, otlp_endpoint, None).await
}

/// Like `run_py_client`, with the SDK's `OTEL_PROPAGATORS` set to `propagators`.
async fn run_py_client_with(
    url: &str,
    otlp_endpoint: &str,
    propagators: Option<&str>,
) -> serde_json::Value {
    let mut python = python_command("client.py");
    if let Some(p) = propagators {
        python.env("OTEL_PROPAGATORS", p);
    }
    let mut command = tokio::process::Command::from(python);
    command
        .arg(url)
        .arg(otlp_endpoint)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("client.py did not finish within 60 s")
        .expect("running client.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client.py failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("client.py printed no JSON ({e}): {stdout}"))
}

fn only<'a>(spans: &'a [ReceivedSpan], service: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.service_name() == Some(service))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one span from {service} expected: {spans:#?}"
    );
    found[0]
}

#[tokio::test]
async fn python_client_through_hoptrace_to_python_server_is_one_trace() {
    setup_venv().await;
    let receiver = Receiver::start().await;
    let otlp = receiver.http_url();
    let (server, server_port) = start_py_server(&otlp).await;

    // hoptrace as the Python server's inbound sidecar, exporting over gRPC.
    let proxy = common::start_proxy(&format!(
        r#"
[service]
name = "py-server-sidecar"
[admin]
bind = "127.0.0.1:0"
[tracing]
batch_delay = "20ms"
[tracing.otlp]
endpoint = "{}"
[[listeners]]
name = "inbound"
bind = "127.0.0.1:0"
role = "inbound"
[[routes]]
name = "hello"
listener = "inbound"
upstream = "py"
[upstreams.py]
endpoints = ["127.0.0.1:{server_port}"]
"#,
        receiver.grpc_url()
    ))
    .await;
    let url = format!("http://{}/hello", proxy.listener_addr("inbound").unwrap());

    let report = run_py_client(&url, &otlp).await;
    assert_eq!(report["status"], 200, "{report}");
    let trace_id = report["trace_id"].as_str().unwrap().to_string();
    let client_span_id = report["span_id"].as_str().unwrap().to_string();

    receiver.wait_for_spans(3).await;
    // A clean server exit flushes anything left; after it, no more spans can arrive.
    let status = server.shutdown(Duration::from_secs(20)).await;
    assert!(status.success(), "server.py exited with {status}");
    proxy.shutdown().await;

    let spans = receiver.spans();
    assert_eq!(spans.len(), 3, "exactly three spans expected: {spans:#?}");
    assert!(
        spans.iter().all(|s| s.trace_id == trace_id),
        "all spans in trace {trace_id}: {spans:#?}"
    );
    let client = only(&spans, "py-client");
    assert_eq!(client.span_id, client_span_id);
    assert_eq!(
        client.parent_span_id, "",
        "the Python client's span is the root"
    );
    let hop = only(&spans, "py-server-sidecar");
    assert_eq!(hop.kind, 2, "SERVER");
    assert_eq!(hop.name, "GET hello");
    assert_eq!(hop.parent_span_id, client.span_id);
    assert_eq!(hop.transport, "grpc");
    let server = only(&spans, "py-server");
    assert_eq!(
        server.parent_span_id, hop.span_id,
        "the Python server continues hoptrace's span"
    );
    assert!(
        hop.start_unix_nano >= client.start_unix_nano && hop.end_unix_nano <= client.end_unix_nano
    );
    // Only the start is ordered: the Python server ends its span after writing the response
    // (server.py), while hoptrace ends its span when it hands the last byte on, so the Python
    // span may end a little after hoptrace's.
    assert!(server.start_unix_nano >= hop.start_unix_nano);

    // The Python server received hoptrace's context, with the client's flags kept as they
    // were (this SDK sends 03: sampled plus Level 2's random-trace-id bit).
    let received = report["body"]["traceparent"].as_str().unwrap_or_default();
    let client_flags = received.rsplit('-').next().unwrap_or_default();
    assert_eq!(
        received,
        format!("00-{trace_id}-{}-{client_flags}", hop.span_id),
        "{report}"
    );
    assert_eq!(u8::from_str_radix(client_flags, 16).unwrap() & 1, 1);
}

#[tokio::test]
async fn python_client_and_server_spans_form_one_trace() {
    setup_venv().await;
    let receiver = Receiver::start().await;
    let otlp = receiver.http_url();
    let (server, server_port) = start_py_server(&otlp).await;

    // The Python pair alone, without hoptrace: a check of the peer implementation and of
    // the receiver. The same pair through hoptrace is
    // `python_client_through_hoptrace_to_python_server_is_one_trace`.
    let url = format!("http://127.0.0.1:{server_port}/hello");

    let report = run_py_client(&url, &otlp).await;
    assert_eq!(report["status"], 200, "{report}");
    let trace_id = report["trace_id"].as_str().unwrap().to_string();
    let client_span_id = report["span_id"].as_str().unwrap().to_string();
    assert_eq!(trace_id.len(), 32);
    assert_eq!(client_span_id.len(), 16);
    // The flags are "03" with this SDK: sampled plus W3C Trace Context Level 2's random-trace-id
    // bit. Only the sampled bit is required here.
    let traceparent = report["body"]["traceparent"].as_str().unwrap_or_default();
    let flags = traceparent
        .strip_prefix(&format!("00-{trace_id}-{client_span_id}-"))
        .unwrap_or_else(|| panic!("the server received the client's context: {report}"));
    let flags = u8::from_str_radix(flags, 16).unwrap();
    assert_eq!(flags & 1, 1, "sampled: {report}");

    receiver.wait_for_spans(2).await;
    // A clean server exit flushes anything left; after it, no more spans can arrive.
    let status = server.shutdown(Duration::from_secs(20)).await;
    assert!(status.success(), "server.py exited with {status}");

    let spans = receiver.spans();
    assert_eq!(spans.len(), 2, "exactly two spans expected: {spans:#?}");
    assert!(
        spans.iter().all(|s| s.trace_id == trace_id),
        "all spans in trace {trace_id}: {spans:#?}"
    );

    let client = only(&spans, "py-client");
    assert_eq!(client.name, "py-client call");
    assert_eq!(client.kind, 3, "CLIENT");
    assert_eq!(client.span_id, client_span_id);
    assert_eq!(client.parent_span_id, "", "the client span is the root");
    assert_eq!(client.attr_i64("http.response.status_code"), Some(200));

    let server = only(&spans, "py-server");
    assert_eq!(server.name, "GET /hello");
    assert_eq!(server.kind, 2, "SERVER");
    assert_eq!(server.parent_span_id, client.span_id);
    assert_ne!(server.span_id, client.span_id);
    assert_eq!(server.attr_str("url.path"), Some("/hello"));
    // Only the start is ordered: server.py ends its span after writing the response, and the
    // client may end its own as soon as it has read it.
    assert!(server.start_unix_nano >= client.start_unix_nano);

    assert!(spans.iter().all(|s| s.transport == "http"));
    assert!(
        receiver.http_headers().iter().all(|h| h
            .get("content-type")
            .is_some_and(|v| v == "application/x-protobuf")),
        "the Python exporter speaks OTLP/HTTP protobuf"
    );
}

/// A Python SDK client and server that both speak `sdk_propagator` (and not W3C), with
/// hoptrace between them configured for `hoptrace_format`: one trace, client → hoptrace's
/// SERVER span → Python server, with the right parents; `check` looks at the headers the
/// Python server received.
async fn one_trace_through_hoptrace_with(
    sdk_propagator: &str,
    hoptrace_format: &str,
    check: impl Fn(&serde_json::Value, &str, &str),
) {
    setup_venv().await;
    let receiver = Receiver::start().await;
    let otlp = receiver.http_url();
    let (server, server_port) = start_py_server_with(&otlp, Some(sdk_propagator)).await;
    let proxy = common::start_proxy(&format!(
        r#"
[service]
name = "py-server-sidecar"
[admin]
bind = "127.0.0.1:0"
[tracing]
batch_delay = "20ms"
propagators = ["{hoptrace_format}", "tracecontext"]
[tracing.otlp]
endpoint = "{}"
[[listeners]]
name = "inbound"
bind = "127.0.0.1:0"
role = "inbound"
[[routes]]
name = "hello"
listener = "inbound"
upstream = "py"
[upstreams.py]
endpoints = ["127.0.0.1:{server_port}"]
"#,
        receiver.grpc_url()
    ))
    .await;
    let url = format!("http://{}/hello", proxy.listener_addr("inbound").unwrap());

    let report = run_py_client_with(&url, &otlp, Some(sdk_propagator)).await;
    assert_eq!(report["status"], 200, "{report}");
    let trace_id = report["trace_id"].as_str().unwrap().to_string();

    receiver.wait_for_spans(3).await;
    let status = server.shutdown(Duration::from_secs(20)).await;
    assert!(status.success(), "server.py exited with {status}");
    proxy.shutdown().await;

    let spans = receiver.spans();
    assert_eq!(spans.len(), 3, "exactly three spans expected: {spans:#?}");
    assert!(
        spans.iter().all(|s| s.trace_id == trace_id),
        "{sdk_propagator}: all spans in trace {trace_id}: {spans:#?}"
    );
    let client = only(&spans, "py-client");
    assert_eq!(client.parent_span_id, "");
    let hop = only(&spans, "py-server-sidecar");
    assert_eq!(hop.kind, 2, "SERVER");
    assert_eq!(hop.parent_span_id, client.span_id, "{sdk_propagator}");
    let server = only(&spans, "py-server");
    assert_eq!(server.parent_span_id, hop.span_id, "{sdk_propagator}");
    check(&report["body"]["headers"], &trace_id, &hop.span_id);
}

#[tokio::test]
async fn python_b3_client_through_hoptrace_to_python_b3_server_is_one_trace() {
    one_trace_through_hoptrace_with("b3", "b3", |headers, trace_id, hop| {
        assert_eq!(headers["b3"], format!("{trace_id}-{hop}-1"), "{headers}");
        // Translated: W3C out as well.
        assert_eq!(
            headers["traceparent"],
            format!("00-{trace_id}-{hop}-01"),
            "{headers}"
        );
    })
    .await;
}

#[tokio::test]
async fn python_b3multi_client_through_hoptrace_to_python_b3multi_server_is_one_trace() {
    one_trace_through_hoptrace_with("b3multi", "b3multi", |headers, trace_id, hop| {
        assert_eq!(headers["x-b3-traceid"], trace_id, "{headers}");
        assert_eq!(headers["x-b3-spanid"], hop, "{headers}");
        assert_eq!(headers["x-b3-sampled"], "1", "{headers}");
    })
    .await;
}

#[tokio::test]
async fn python_jaeger_client_through_hoptrace_to_python_jaeger_server_is_one_trace() {
    one_trace_through_hoptrace_with("jaeger", "jaeger", |headers, trace_id, hop| {
        // This SDK's Jaeger propagator sets the debug bit on every sampled span it sends
        // (flags 3); hoptrace passes debug on, so the server gets 3 as well.
        assert_eq!(
            headers["uber-trace-id"],
            format!("{trace_id}:{hop}:0:3"),
            "{headers}"
        );
    })
    .await;
}
