//! Hot reload while serving: file changes (also Kubernetes' symlink swap), `POST /reload`;
//! all or nothing, zero failed requests, pools of unchanged upstreams kept.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::otlp::Receiver;
use common::*;
use hoptrace::reload::ReloadOutcome;
use http::Request;

const DEADLINE: Duration = Duration::from_secs(20);

struct Setup<'a> {
    a: SocketAddr,
    b: SocketAddr,
    /// Which upstream the route uses.
    route_to: &'a str,
    bind: &'a str,
    tracing: &'a str,
}

fn config(s: &Setup<'_>) -> String {
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
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn served_by(addr: SocketAddr) -> String {
    let response = get(&http1_client(), format!("http://{addr}/")).await;
    assert_eq!(response.status(), 200);
    response.headers()["x-upstream"]
        .to_str()
        .unwrap()
        .to_string()
}

async fn wait_generation(running: &hoptrace::app::Running, generation: u64) {
    let reloader = running.reloader().unwrap().clone();
    wait_until(&format!("generation {generation}"), DEADLINE, || {
        let reloader = reloader.clone();
        async move { reloader.status().generation == generation }
    })
    .await;
}

async fn start(dir: &Path, text: &str, watch: bool) -> (hoptrace::app::Running, PathBuf) {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    (
        hoptrace::app::start_from_file(&path, watch).await.unwrap(),
        path,
    )
}

#[tokio::test]
async fn fifty_rewrites_under_load_lose_no_request() {
    let (a, b) = (echo_server("a").await, echo_server("b").await);
    let dir = tempfile::tempdir().unwrap();
    let setup = |route_to| Setup {
        a: a.addr,
        b: b.addr,
        route_to,
        bind: "127.0.0.1:0",
        tracing: "",
    };
    let (running, path) = start(dir.path(), &config(&setup("a")), true).await;
    let addr = running.listener_addr("main").unwrap();

    // 8 clients in a loop, each bounded to 5,000 requests, until the rewrites are done.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let client = http1_client();
            for _ in 0..5_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let request = Request::get(format!("http://{addr}/load"))
                    .body(full(""))
                    .unwrap();
                match client.request(request).await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for i in 1..=50u64 {
        let target = if i % 2 == 1 { "b" } else { "a" };
        write_atomic(&path, &config(&setup(target)));
        wait_generation(&running, 1 + i).await;
        // After each applied reload, new requests reach the new upstream.
        assert_eq!(served_by(addr).await, target, "reload {i}");
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed requests");
    assert!(ok.load(Ordering::Relaxed) > 0);
    let status = running.reloader().unwrap().status();
    assert_eq!(status.generation, 51, "one generation per applied reload");
    assert_eq!(status.failures, 0);
    running.shutdown().await;
}

#[tokio::test]
async fn an_invalid_file_is_rejected_and_the_old_config_keeps_serving() {
    let (a, b) = (echo_server("a").await, echo_server("b").await);
    let dir = tempfile::tempdir().unwrap();
    let good = config(&Setup {
        a: a.addr,
        b: b.addr,
        route_to: "a",
        bind: "127.0.0.1:0",
        tracing: "",
    });
    let (running, path) = start(dir.path(), &good, true).await;
    let addr = running.listener_addr("main").unwrap();
    let reloader = running.reloader().unwrap().clone();

    write_atomic(&path, "[service\nname = \"broken\"\n");
    wait_until("rejected", DEADLINE, || {
        let reloader = reloader.clone();
        async move { reloader.failures() == 1 }
    })
    .await;
    let status = reloader.status();
    let last = status.last.unwrap();
    let ReloadOutcome::Rejected { errors } = &last.outcome else {
        panic!("{:?}", last.outcome)
    };
    assert!(
        errors
            .iter()
            .any(|e| e.contains("syntax error") && e.contains("line 1")),
        "{errors:?}"
    );
    assert_eq!(status.generation, 1);
    assert_eq!(served_by(addr).await, "a");

    // A semantic error: every error listed, nothing applied, the counter at 2.
    write_atomic(
        &path,
        &good.replace("upstream = \"a\"", "upstream = \"pay\""),
    );
    wait_until("rejected again", DEADLINE, || {
        let reloader = reloader.clone();
        async move { reloader.failures() == 2 }
    })
    .await;
    let last = reloader.status().last.unwrap();
    let ReloadOutcome::Rejected { errors } = &last.outcome else {
        panic!("{:?}", last.outcome)
    };
    assert!(
        errors
            .iter()
            .any(|e| e.contains("routes[0].upstream: \"pay\" is not defined")),
        "{errors:?}"
    );
    assert_eq!(served_by(addr).await, "a");

    // The admin endpoint shows it.
    let admin = running.admin_addr();
    let response = get(&http1_client(), format!("http://{admin}/reload")).await;
    let status = body_json(response).await;
    assert_eq!(status["generation"], 1);
    assert_eq!(status["failures"], 2);
    assert_eq!(status["last"]["outcome"], "rejected");
    assert_eq!(status["last"]["trigger"], "file");
    // And /metrics counts reloads by outcome.
    let metrics = body_string(get(&http1_client(), format!("http://{admin}/metrics")).await).await;
    assert!(
        metrics.contains("hoptrace_config_reloads_total{outcome=\"rejected\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hoptrace_config_reloads_total{outcome=\"applied\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hoptrace_config_generation 1"),
        "{metrics}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn a_kubernetes_configmap_symlink_swap_is_applied() {
    let (a, b) = (echo_server("a").await, echo_server("b").await);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // What the kubelet lays out: config.toml → ..data/config.toml, ..data → ..<timestamp>.
    let first = root.join("..2026_11_21_20_00_00.000000001");
    std::fs::create_dir(&first).unwrap();
    let setup = |route_to| Setup {
        a: a.addr,
        b: b.addr,
        route_to,
        bind: "127.0.0.1:0",
        tracing: "",
    };
    std::fs::write(first.join("config.toml"), config(&setup("a"))).unwrap();
    std::os::unix::fs::symlink(first.file_name().unwrap(), root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.toml", root.join("config.toml")).unwrap();
    let path = root.join("config.toml");
    let running = hoptrace::app::start_from_file(&path, true).await.unwrap();
    let addr = running.listener_addr("main").unwrap();
    assert_eq!(served_by(addr).await, "a");

    // The update: a new timestamped directory, then an atomic swap of the ..data symlink.
    let second = root.join("..2026_11_21_20_05_00.000000002");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(second.join("config.toml"), config(&setup("b"))).unwrap();
    std::os::unix::fs::symlink(second.file_name().unwrap(), root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();

    wait_generation(&running, 2).await;
    assert_eq!(served_by(addr).await, "b");
    running.shutdown().await;
}

#[tokio::test]
async fn post_reload_applies_and_a_listener_change_needs_a_restart() {
    let (a, b) = (echo_server("a").await, echo_server("b").await);
    let dir = tempfile::tempdir().unwrap();
    let setup = |route_to, bind| Setup {
        a: a.addr,
        b: b.addr,
        route_to,
        bind,
        tracing: "",
    };
    // No watcher: only POST /reload reloads here.
    let (running, path) = start(dir.path(), &config(&setup("a", "127.0.0.1:0")), false).await;
    let addr = running.listener_addr("main").unwrap();
    let admin = running.admin_addr();
    let post = || async move {
        let request = Request::post(format!("http://{admin}/reload"))
            .body(full(""))
            .unwrap();
        let response = http1_client().request(request).await.unwrap();
        (response.status().as_u16(), body_json(response).await)
    };

    let (status, body) = post().await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("unchanged")),
        "{body}"
    );

    write_atomic(&path, &config(&setup("b", "127.0.0.1:0")));
    let (status, body) = post().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"outcome": "applied", "generation": 2})
    );
    assert_eq!(served_by(addr).await, "b");

    // A new listener address cannot be applied live: nothing changes, not even the route.
    write_atomic(&path, &config(&setup("a", "127.0.0.1:1")));
    let (status, body) = post().await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"outcome": "restart_required", "fields": ["listeners"]})
    );
    assert_eq!(running.reloader().unwrap().status().generation, 2);
    assert_eq!(served_by(addr).await, "b");
    running.shutdown().await;
}

#[tokio::test]
async fn unchanged_upstreams_keep_their_pools_and_removed_ones_finish_in_flight_requests() {
    let a = echo_server("a").await;
    let (arrived, release) = (Gate::default(), Gate::default());
    let (arr, rel) = (arrived.clone(), release.clone());
    let slow = serve(move |_req| {
        let (arr, rel) = (arr.clone(), rel.clone());
        async move {
            arr.notify_one();
            rel.notified().await;
            text(200, "slow but complete")
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let two_routes = |slow_route: bool| {
        let mut text = config(&Setup {
            a: a.addr,
            b: slow.addr,
            route_to: "a",
            bind: "127.0.0.1:0",
            tracing: "",
        });
        if slow_route {
            text.push_str(
                "[[routes]]\nlistener = \"main\"\npath_prefix = \"/slow\"\nupstream = \"b\"\n",
            );
        } else {
            // Upstream b removed entirely.
            text = text.replace(
                &format!("[upstreams.b]\nendpoints = [\"{}\"]\n", slow.addr),
                "",
            );
        }
        text
    };
    let (running, path) = start(dir.path(), &two_routes(true), false).await;
    let addr = running.listener_addr("main").unwrap();
    let before = running.snapshot();

    let in_flight =
        tokio::spawn(async move { get(&http1_client(), format!("http://{addr}/slow/x")).await });
    arrived.notified().await;
    write_atomic(&path, &two_routes(false));
    let outcome = running
        .reloader()
        .unwrap()
        .reload(hoptrace::reload::Trigger::Admin)
        .await;
    assert_eq!(outcome, ReloadOutcome::Applied { generation: 2 });
    let after = running.snapshot();
    // Upstream a did not change: the same object, so the same warm connection pool.
    assert!(Arc::ptr_eq(&before.upstreams["a"], &after.upstreams["a"]));
    assert!(!after.upstreams.contains_key("b"));

    // The request that started on the old snapshot finishes on it.
    release.notify_one();
    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(body_string(response).await, "slow but complete");
    // New requests for /slow now take the only route left.
    assert_eq!(served_by(addr).await, "a");
    running.shutdown().await;
}

#[tokio::test]
async fn a_sampling_change_by_reload_stops_span_export() {
    let receiver = Receiver::start().await;
    let a = echo_server("a").await;
    let dir = tempfile::tempdir().unwrap();
    let tracing = |ratio: &str| {
        format!(
            "sampling_ratio = {ratio}\n[tracing.otlp]\nendpoint = \"{}\"",
            receiver.grpc_url()
        )
    };
    let with_ratio = |ratio: &str| {
        config(&Setup {
            a: a.addr,
            b: a.addr,
            route_to: "a",
            bind: "127.0.0.1:0",
            tracing: &tracing(ratio),
        })
    };
    let (running, path) = start(dir.path(), &with_ratio("1.0"), false).await;
    let addr = running.listener_addr("main").unwrap();
    get(&http1_client(), format!("http://{addr}/before")).await;
    receiver.wait_for_spans(1).await;

    write_atomic(&path, &with_ratio("0.0"));
    let outcome = running
        .reloader()
        .unwrap()
        .reload(hoptrace::reload::Trigger::Admin)
        .await;
    assert_eq!(outcome, ReloadOutcome::Applied { generation: 2 });
    let response = get(&http1_client(), format!("http://{addr}/after")).await;
    assert!(
        response.headers()["traceresponse"]
            .to_str()
            .unwrap()
            .ends_with("-00")
    );
    // A request with a sampled parent is still exported; once it is, the unsampled one
    // before it would have been too (one queue, in order).
    let request = Request::get(format!("http://{addr}/parented"))
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(full(""))
        .unwrap();
    http1_client().request(request).await.unwrap();
    let spans = receiver.wait_for_spans(2).await;
    let paths: Vec<_> = spans
        .iter()
        .map(|s| s.attr_str("url.path").unwrap().to_string())
        .collect();
    assert_eq!(paths, ["/before", "/parented"]);
    running.shutdown().await;
}
