//! `GET /config` on the real binary, and secrets never leaving the process: not in `/config`,
//! not in reload errors, not in any log line at debug level, whether they came from the config
//! (an OTLP API key) or from requests (an `authorization` header, a `token` query value).

use crate::common;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use http::Request;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hoptrace");
const DEADLINE: Duration = Duration::from_secs(30);
const SECRETS: [&str; 4] = ["SECRET-123", "SECRET-456", "SECRET-789", "SECRET-000"];
/// `[admin] reload_token`, the fourth secret: every `POST /reload` must carry it.
const RELOAD_TOKEN: &str = "reload_token = \"SECRET-000-reload-token\"";

/// A `hoptrace run` process at debug level, with everything it writes kept.
struct Proxy {
    child: Child,
    main: SocketAddr,
    admin: SocketAddr,
    /// stderr and stdout as they arrive, whole (not only JSON lines).
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl Proxy {
    fn spawn(config: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "run", "--config"])
            .arg(dir.path().join("config.toml"))
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<Value>();
        let readers = vec![
            keep(child.stderr.take().unwrap(), output.clone(), Some(tx)),
            keep(child.stdout.take().unwrap(), output.clone(), None),
        ];
        let (mut main, mut admin) = (None, None);
        loop {
            let event = rx
                .recv_timeout(DEADLINE)
                .expect("hoptrace did not report its listeners");
            let addr = || event["addr"].as_str().unwrap().parse::<SocketAddr>().ok();
            match event["fields"]["message"]
                .as_str()
                .or(event["message"].as_str())
            {
                Some("listening") => main = addr(),
                Some("admin listening") => admin = addr(),
                Some("hoptrace started") => break,
                _ => {}
            }
        }
        Proxy {
            child,
            main: main.unwrap(),
            admin: admin.unwrap(),
            output,
            readers,
            dir,
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// SIGTERM, then everything the process wrote until it exited.
    async fn terminate(mut self) -> String {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let start = std::time::Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < DEADLINE, "hoptrace did not exit");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        self.output()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends everything from `pipe` to `output` until EOF; JSON lines also go to `events`.
fn keep(
    pipe: impl Read + Send + 'static,
    output: Arc<Mutex<String>>,
    events: Option<mpsc::Sender<Value>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match std::io::BufRead::read_until(&mut reader, b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line);
            output.lock().unwrap().push_str(&text);
            if let (Some(events), Ok(event)) = (&events, serde_json::from_str(&text)) {
                let _ = events.send(event);
            }
        }
    })
}

/// A port that refuses connections (`common::refusing_addr`).
fn closed_port() -> u16 {
    refusing_addr().port()
}

fn config(upstream: SocketAddr, protocol: &str, otlp_headers: &str, reload_token: &str) -> String {
    let collector = closed_port();
    let down = closed_port();
    format!(
        r#"
[service]
name = "secrets-test"
[admin]
bind = "127.0.0.1:0"
{reload_token}
[shutdown]
grace = "1s"
[tracing]
batch_delay = "50ms"
[tracing.otlp]
protocol = "{protocol}"
endpoint = "http://127.0.0.1:{collector}/v1/traces"
timeout = "500ms"
headers = {otlp_headers}
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "gateway"
[[routes]]
listener = "main"
host = "*.example.com"
path_prefix = "/down"
upstream = "down"
[[routes]]
listener = "main"
upstream = "app"
[upstreams.app]
endpoints = ["{upstream}"]
[upstreams.down]
endpoints = ["127.0.0.1:{down}"]
connect_timeout = "250ms"
"#
    )
}

async fn send(client: &TestClient, request: Request<TestBody>) -> u16 {
    client.request(request).await.unwrap().status().as_u16()
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} in {what}:\n{text}");
    }
}

async fn secrets_never_leave_the_process(protocol: &str) {
    let upstream = echo_server("app").await;
    let good = config(
        upstream.addr,
        protocol,
        r#"{ "x-api-key" = "SECRET-123" }"#,
        RELOAD_TOKEN,
    );
    let proxy = Proxy::spawn(&good);
    let (main, admin) = (proxy.main, proxy.admin);
    let client = http1_client();

    // Credentials in requests: an authorization header, a token in the query; forwarded and
    // failed (the `down` upstream refuses connections).
    for (host, path) in [
        ("app.internal", "/orders?token=SECRET-789&page=2"),
        ("pay.example.com", "/down/charge?token=SECRET-789"),
    ] {
        let request = Request::get(format!("http://{main}{path}"))
            .header("host", host)
            .header("authorization", "Bearer SECRET-456")
            .body(full(""))
            .unwrap();
        let status = send(&client, request).await;
        assert!(status == 200 || status == 502, "{host}{path}: {status}");
    }

    let response = get(&client, format!("http://{admin}/config")).await;
    assert_eq!(response.status(), 200);
    let text = body_string(response).await;
    assert_no_secret("GET /config", &text);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["generation"], 1);
    assert_eq!(body["reload"]["generation"], 1);
    assert_eq!(body["reload"]["failures"], 0);
    let c = &body["config"];
    assert_eq!(c["listeners"][0]["bind"], "127.0.0.1:0");
    assert_eq!(c["listeners"][0]["role"], "gateway");
    assert_eq!(c["listeners"][0]["header_read_timeout"], "10s");
    assert_eq!(c["routes"][0]["host"], "*.example.com");
    assert_eq!(c["routes"][0]["path_prefix"], "/down");
    assert_eq!(c["routes"][1]["host"], Value::Null);
    assert_eq!(
        c["upstreams"]["app"]["endpoints"][0],
        upstream.addr.to_string()
    );
    assert_eq!(c["upstreams"]["app"]["balance"], "round_robin");
    assert_eq!(c["upstreams"]["down"]["connect_timeout"], "250ms");
    assert_eq!(c["shutdown"]["grace"], "1s");
    assert_eq!(c["tracing"]["batch_delay"], "50ms");
    assert_eq!(c["tracing"]["otlp"]["protocol"], protocol);
    assert!(
        c["tracing"]["otlp"]["endpoint"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    assert_eq!(
        c["tracing"]["otlp"]["headers"],
        serde_json::json!({"x-api-key": "****"})
    );
    assert_eq!(c["admin"]["reload_token"], "****");

    // POST /reload without the token, and with a wrong one: refused, nothing echoed.
    for authorization in [None, Some("Bearer not-the-reload-token")] {
        let mut request = Request::post(format!("http://{admin}/reload"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = client
            .request(request.body(full("")).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(
            status == 401 || status == 403,
            "{authorization:?}: {status}"
        );
        assert_no_secret("a refused reload", &body_string(response).await);
    }

    // Invalid edits that put a secret in an error's neighbourhood: a bad header name next to
    // it, a value that is not a valid header value, a string left unterminated; the reload
    // token unquoted, too short, of the wrong type, and unterminated.
    let api_key = r#"{ "x-api-key" = "SECRET-123" }"#;
    let bad_edits = [
        (
            r#"{ "x-api-key" = "SECRET-123", "bad name" = "SECRET-123" }"#,
            RELOAD_TOKEN,
        ),
        (r#"{ "x-api-key" = "SECRET-123\n" }"#, RELOAD_TOKEN),
        (r#"{ "x-api-key" = "SECRET-123 }"#, RELOAD_TOKEN),
        (api_key, "reload_token = SECRET-000-reload-token"),
        (api_key, "reload_token = \"SECRET-000\""),
        (api_key, "reload_token = [\"SECRET-000-reload-token\"]"),
        (api_key, "reload_token = \"SECRET-000-reload-token"),
    ];
    for (i, (headers, token)) in bad_edits.into_iter().enumerate() {
        let bad = config(upstream.addr, protocol, headers, token);
        std::fs::write(proxy.dir.path().join("config.toml"), bad).unwrap();
        // The token of the config serving (the good one) is what authorizes a reload.
        let response = client
            .request(
                Request::post(format!("http://{admin}/reload"))
                    .header("authorization", "Bearer SECRET-000-reload-token")
                    .body(full(""))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "edit {i}");
        let text = body_string(response).await;
        assert_no_secret("the reload errors", &text);
        assert!(text.contains("rejected"), "edit {i}: {text}");
    }
    let text = body_string(get(&client, format!("http://{admin}/reload")).await).await;
    assert_no_secret("GET /reload", &text);
    let text = body_string(get(&client, format!("http://{admin}/config")).await).await;
    assert_no_secret("GET /config after rejected reloads", &text);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["generation"], 1);
    // At least: the file watcher may also have tried (and rejected) an edit.
    assert!(body["reload"]["failures"].as_u64().unwrap() >= 7, "{body}");
    assert_eq!(body["reload"]["last"]["outcome"], "rejected");

    // The spans of those requests reached the exporter, whose failures are logged.
    wait_until("a failed export logged", DEADLINE, || {
        let output = proxy.output();
        async move { output.contains("span export failed") }
    })
    .await;

    let output = proxy.terminate().await;
    for expected in [
        "x-api-key",
        "config reload rejected",
        "POST /reload refused",
        "request failed",
        "span export failed",
    ] {
        assert!(
            output.contains(expected),
            "no {expected:?} in the output:\n{output}"
        );
    }
    assert_no_secret("the process output", &output);
}

#[tokio::test]
async fn secrets_never_leave_the_process_grpc() {
    secrets_never_leave_the_process("grpc").await;
}

#[tokio::test]
async fn secrets_never_leave_the_process_http_protobuf() {
    secrets_never_leave_the_process("http/protobuf").await;
}
