//! `hoptrace demo` as a newcomer runs it: the real binary, a small load, the table it prints,
//! and the traces its three sidecars exported to an OTLP receiver (`OTEL_EXPORTER_OTLP_ENDPOINT`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::otlp::{ReceivedSpan, Receiver};

const BIN: &str = env!("CARGO_BIN_EXE_hoptrace");
const DEADLINE: Duration = Duration::from_secs(60);
const REQUESTS: usize = 20;
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

/// Runs `hoptrace demo` to completion (bounded), returning exit success, stdout and stderr.
fn run_demo(args: &[&str], env: &[(&str, String)]) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .arg("demo")
        .args(args)
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hoptrace demo did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.success(), out.join().unwrap(), err.join().unwrap())
}

/// The table's rows: hop → [calls, p50, p99, overhead p50, overhead p99].
fn table(stdout: &str) -> BTreeMap<String, Vec<f64>> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("hop "));
    let header: Vec<&str> = lines
        .next()
        .expect("no table header")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "hop",
            "calls",
            "p50_ms",
            "p99_ms",
            "overhead_p50_ms",
            "overhead_p99_ms"
        ]
    );
    lines
        .take_while(|l| !l.trim().is_empty())
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cells.len(), 6, "row {line:?}");
            let numbers = cells[1..]
                .iter()
                .map(|c| {
                    c.parse::<f64>()
                        .unwrap_or_else(|_| panic!("{c:?} in {line:?}"))
                })
                .collect();
            (cells[0].to_string(), numbers)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_the_table_and_exports_one_trace_per_request() {
    let receiver = Receiver::start().await;
    let endpoint = receiver.grpc_url();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_demo(
            &[
                "--requests",
                "20",
                "--concurrency",
                "4",
                "--exit-after-load",
            ],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)],
        )
    })
    .await
    .unwrap();
    assert!(ok, "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("answers: 20 ok, 0 failed"), "{stdout}");
    assert!(
        stdout.contains("per-hop latency from the spans of 20 traces"),
        "{stdout}"
    );

    let rows = table(&stdout);
    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        ["client->hub", "hub->buzzer", "hub->fizzer"]
    );
    for (hop, row) in &rows {
        let [calls, p50, p99, o50, o99] = row[..] else {
            unreachable!()
        };
        assert_eq!(calls, REQUESTS as f64, "{hop}");
        assert!(0.0 < p50 && p50 <= p99, "{hop}: {row:?}");
        // Overhead is the span minus the app's own time: never more than the span.
        assert!(0.0 < o50 && o50 <= o99 && o99 <= p99, "{hop}: {row:?}");
    }
    // Buzzer sleeps 20 ms or more for multiples of 7 (7 and 14 among 1..=20), so the slowest
    // calls to it (p99: the slowest of 20) take at least that long.
    assert!(rows["hub->buzzer"][2] >= 20.0, "{rows:?}");
    for name in ["hub", "fizzer", "buzzer"] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")) && l.contains("/traces"))
            .unwrap_or_else(|| panic!("no traces page for {name}: {stdout}"));
        assert!(line.contains("http://127.0.0.1:"), "{line}");
        assert!(line.ends_with("/traces?format=html"), "{line}");
    }

    // The sidecars flushed at exit: five spans per request.
    let spans = receiver.wait_for_spans(5 * REQUESTS).await;
    assert_eq!(spans.len(), 5 * REQUESTS);
    let mut traces: BTreeMap<&str, Vec<&ReceivedSpan>> = BTreeMap::new();
    for span in &spans {
        traces.entry(span.trace_id.as_str()).or_default().push(span);
    }
    assert_eq!(traces.len(), REQUESTS, "one trace per request");
    let mut paths = BTreeSet::new();
    for (trace_id, spans) in &traces {
        let of = |service: &str, kind: i32| -> Vec<&ReceivedSpan> {
            spans
                .iter()
                .copied()
                .filter(|s| s.service_name() == Some(service) && s.kind == kind)
                .collect()
        };
        let hub = of("hub", SERVER);
        assert_eq!(hub.len(), 1, "{trace_id}: {spans:#?}");
        let hub = hub[0];
        assert_eq!(hub.parent_span_id, "", "the hub's SERVER span is the root");
        assert_eq!(hub.name, "GET hub");
        assert_eq!(hub.attr_i64("http.response.status_code"), Some(200));
        paths.insert(hub.attr_str("url.path").unwrap().to_string());
        let calls = of("hub", CLIENT);
        assert_eq!(calls.len(), 2, "{trace_id}: {spans:#?}");
        for dep in ["fizzer", "buzzer"] {
            let call = calls
                .iter()
                .find(|s| s.attr_str("http.route") == Some(dep))
                .unwrap_or_else(|| panic!("{trace_id}: no CLIENT span to {dep}"));
            assert_eq!(call.parent_span_id, hub.span_id, "{dep} call's parent");
            assert_eq!(call.name, format!("GET {dep}"));
            assert_eq!(call.attr_str("server.address"), Some(dep));
            let server = of(dep, SERVER);
            assert_eq!(server.len(), 1, "{trace_id}: {spans:#?}");
            assert_eq!(
                server[0].parent_span_id, call.span_id,
                "{dep} SERVER's parent"
            );
            assert_eq!(server[0].name, format!("GET {dep}"));
            assert!(call.start_unix_nano <= server[0].start_unix_nano);
            assert!(server[0].end_unix_nano <= call.end_unix_nano);
        }
    }
    let want: BTreeSet<String> = (1..=REQUESTS).map(|n| format!("/fizzbuzz/{n}")).collect();
    assert_eq!(paths, want);
}

#[test]
fn demo_rejects_a_zero_request_count() {
    let output = Command::new(BIN)
        .args(["demo", "--requests", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--requests"), "{stderr}");
}
