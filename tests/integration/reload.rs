//! Hot reload while serving: file changes (also Kubernetes' symlink swap), `POST /reload`;
//! all or nothing, zero failed requests, pools of unchanged upstreams kept.

use crate::common;
use crate::reload_common;

use std::sync::Arc;

use common::otlp::Receiver;
use common::*;
use hoptrace::reload::ReloadOutcome;
use http::Request;
use reload_common::*;

#[tokio::test]
async fn fifty_rewrites_under_load_lose_no_request() {
    let (a, b) = (echo_server("a").await, echo_server("b").await);
    let dir = tempfile::tempdir().unwrap();
    let setup = |route_to| Setup::new(a.addr, b.addr, route_to);
    let (running, path) = start(dir.path(), &config(&setup("a")), true).await;
    let addr = running.listener_addr("main").unwrap();

    // 8 clients keep requests going until every rewrite is applied and checked.
    let load = Load::start(addr, 8);
    for i in 1..=50u64 {
        let target = if i % 2 == 1 { "b" } else { "a" };
        write_atomic(&path, &config(&setup(target)));
        wait_generation(&running, 1 + i).await;
        // After each applied reload, new requests reach the new upstream.
        assert_eq!(served_by(addr).await, target, "reload {i}");
    }
    // Requests keep completing after the last reload, all of them on its upstream.
    load.expect("a");
    load.wait_for_more(200).await;
    let (ok, failed, wrong) = load.stop().await;
    assert_eq!(failed, 0, "failed requests ({ok} ok)");
    assert!(wrong.is_empty(), "answered by the old upstream: {wrong:?}");
    let status = running.reloader().unwrap().status();
    assert_eq!(status.generation, 51, "one generation per applied reload");
    assert_eq!(status.failures, 0);
    assert_eq!(outcomes(&running), [50, 0, 0, 0], "applied only");
    running.shutdown().await;
}

#[tokio::test]
async fn an_invalid_file_is_rejected_and_the_old_config_keeps_serving() {
    let (a, b) = (echo_server("a").await, echo_server("b").await);
    let dir = tempfile::tempdir().unwrap();
    let good = config(&Setup::new(a.addr, b.addr, "a"));
    let (running, path) = start(dir.path(), &good, true).await;
    let addr = running.listener_addr("main").unwrap();
    let reloader = running.reloader().unwrap().clone();
    // Traffic runs through both rejected reloads; every answer must come from a.
    let load = Load::start(addr, 8);
    load.expect("a");
    load.wait_for_more(50).await;

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
    // The error itself, not LoadError's summary line ("config.toml: 1 error").
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("syntax error") && errors[0].ends_with("(line 1)"),
        "{errors:?}"
    );
    assert_eq!(status.generation, 1);
    load.wait_for_more(200).await;

    // A semantic error: every error listed with its key and line, nothing applied.
    let bad = good.replace("upstream = \"a\"", "upstream = \"pay\"");
    let line = 1 + bad.lines().position(|l| l == "upstream = \"pay\"").unwrap();
    write_atomic(&path, &bad);
    wait_until("rejected again", DEADLINE, || {
        let reloader = reloader.clone();
        async move { reloader.failures() == 2 }
    })
    .await;
    let last = reloader.status().last.unwrap();
    let ReloadOutcome::Rejected { errors } = &last.outcome else {
        panic!("{:?}", last.outcome)
    };
    assert_eq!(
        errors,
        &[format!(
            "routes[0].upstream: \"pay\" is not defined (line {line})"
        )]
    );
    load.wait_for_more(200).await;
    let (ok, failed, wrong) = load.stop().await;
    assert_eq!(failed, 0, "failed requests ({ok} ok)");
    assert!(
        wrong.is_empty(),
        "not answered by the old upstream: {wrong:?}"
    );

    // The admin endpoint shows it.
    let admin = running.admin_addr();
    let response = get(&http1_client(), format!("http://{admin}/reload")).await;
    let status = body_json(response).await;
    assert_eq!(status["generation"], 1);
    assert_eq!(status["failures"], 2);
    assert_eq!(status["last"]["outcome"], "rejected");
    assert_eq!(status["last"]["trigger"], "file");
    // And /metrics counts reloads by outcome.
    let series = |outcome: &str| format!("hoptrace_config_reloads_total{{outcome=\"{outcome}\"}}");
    assert_eq!(metric(admin, &series("rejected")).await, Some(2.0));
    assert_eq!(metric(admin, &series("applied")).await, Some(0.0));
    assert_eq!(metric(admin, "hoptrace_config_generation").await, Some(1.0));
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
    let setup = |route_to| Setup::new(a.addr, b.addr, route_to);
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
    // One swap, one reload: neither the new directory nor the temporary link nor the
    // removal of the old directory reloads on its own, and nothing was read half-made.
    assert_eq!(outcomes(&running), [1, 0, 0, 0]);
    assert_eq!(running.reloader().unwrap().failures(), 0);
    running.shutdown().await;
}

#[tokio::test]
async fn post_reload_applies_and_a_listener_change_needs_a_restart() {
    let (a, b) = (echo_server("a").await, echo_server("b").await);
    let dir = tempfile::tempdir().unwrap();
    let setup = |route_to, bind| Setup {
        bind,
        ..Setup::new(a.addr, b.addr, route_to)
    };
    // No watcher: only POST /reload reloads here.
    let (running, path) = start(dir.path(), &config(&setup("a", "127.0.0.1:0")), false).await;
    let addr = running.listener_addr("main").unwrap();
    let admin = running.admin_addr();
    let post = || post_reload(admin);

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
    // Upstream a speaks h2c: one connection carries every request, so the number of
    // connections opened to it is exact (HTTP/1.1 may open a second one while the first is
    // on its way back to the pool).
    let a_def = format!("[upstreams.a]\nendpoints = [\"{}\"]\n", a.addr);
    let two_routes = |slow_route: bool, a_extra: &str| {
        let mut text = config(&Setup::new(a.addr, slow.addr, "a"))
            .replace(&a_def, &format!("{a_def}protocol = \"http2\"\n{a_extra}"));
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
    let (running, path) = start(dir.path(), &two_routes(true, ""), false).await;
    let addr = running.listener_addr("main").unwrap();
    let admin = running.admin_addr();
    let before = running.snapshot();
    let connections_to_a = || {
        metric(
            admin,
            "hoptrace_upstream_connection_attempts_total{upstream=\"a\"}",
        )
    };
    for _ in 0..3 {
        assert_eq!(served_by(addr).await, "a");
    }
    assert_eq!(connections_to_a().await, Some(1.0));

    let in_flight =
        tokio::spawn(async move { get(&http1_client(), format!("http://{addr}/slow/x")).await });
    arrived.notified().await;
    write_atomic(&path, &two_routes(false, ""));
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
    // New requests for /slow now take the only route left, over the connection opened
    // before the reload.
    for _ in 0..3 {
        assert_eq!(served_by(addr).await, "a");
    }
    assert_eq!(connections_to_a().await, Some(1.0), "no new connection");

    // The control: a changed definition of a is a new pool, which must connect again.
    write_atomic(&path, &two_routes(false, "idle_timeout = \"89s\"\n"));
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served_by(addr).await, "a");
    assert_eq!(connections_to_a().await, Some(2.0));
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
            tracing: &tracing(ratio),
            ..Setup::new(a.addr, a.addr, "a")
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
