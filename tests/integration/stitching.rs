//! Stitching: outbound calls that carry no trace context get the inbound request that caused
//! them as parent (or span links when not sure). Real sidecars, real apps that forward no
//! trace header, spans decoded from the wire by a real OTLP receiver. Deterministic: requests
//! run one at a time or are held by gates, so no outcome depends on timing.

use crate::common;
use crate::eval;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::otlp::{ReceivedSpan, Receiver};
use common::*;
use eval::{Options, System};
use http::Request;
use hyper::body::Incoming;

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

/// `hoptrace_outbound_context_total` by source, from a sidecar's `/metrics`.
async fn context_counts(proxy: &hoptrace::app::Running) -> HashMap<String, u64> {
    let url = format!("http://{}/metrics", proxy.admin_addr());
    let text = body_string(get(&http1_client(), url).await).await;
    text.lines()
        .filter_map(|l| l.strip_prefix("hoptrace_outbound_context_total{source=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(source, n)| (source.to_string(), n.trim().parse::<f64>().unwrap() as u64))
        .collect()
}

fn counts(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    let mut all: HashMap<String, u64> = ["forwarded", "single", "model", "linked", "none"]
        .iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    for (k, v) in pairs {
        all.insert(k.to_string(), *v);
    }
    all
}

fn proxy<'a>(system: &'a System, name: &str) -> &'a hoptrace::app::Running {
    &system.proxies.iter().find(|(n, _)| *n == name).unwrap().1
}

#[tokio::test]
async fn forwarded_context_joins_every_call_exactly() {
    let system = System::start(Options {
        forward: true,
        requests: 10,
        ..Options::default()
    })
    .await;
    // Background calls first, with nothing in flight anywhere: no parent is right.
    system.timer().await;
    system.timer().await;
    system.run(0, 10, 1).await;
    let score = system.score(0).await;
    assert_eq!(score.accuracy, 1.0, "{score:#?}");
    assert_eq!(score.traces_right, 1.0, "{score:#?}");
    let forwarded = score.calls - 2;
    assert_eq!(
        score.methods,
        vec![
            ("forwarded".to_string(), forwarded),
            ("none".to_string(), 2)
        ]
    );
    // S1 makes three calls per request (S2, S3, and S4 after responding).
    assert_eq!(
        context_counts(proxy(&system, "s1")).await,
        counts(&[("forwarded", 30)])
    );
    assert_eq!(
        context_counts(proxy(&system, "s2")).await,
        counts(&[("forwarded", 20), ("none", 2)])
    );
}

/// One request at a time: every call has exactly one candidate (the request in flight, or
/// the one that just answered, for the call made after responding), so every edge is right.
/// The same run with random nonces scores the same: the inference never sees them.
#[tokio::test]
async fn one_request_at_a_time_every_edge_is_right_whatever_the_nonces() {
    let mut scores = Vec::new();
    for shuffle_nonces in [false, true] {
        let system = System::start(Options {
            shuffle_nonces,
            ..Options::default()
        })
        .await;
        system.timer().await;
        system.run(0, 25, 1).await;
        let score = system.score(0).await;
        assert_eq!(score.accuracy, 1.0, "{score:#?}");
        assert_eq!(score.traces_right, 1.0, "{score:#?}");
        assert_eq!(score.baseline_none, 1.0 / score.calls as f64);
        assert!(score.methods.contains(&("none".to_string(), 1)));
        assert_eq!(
            context_counts(proxy(&system, "s1")).await,
            counts(&[("single", 75)])
        );

        // The call made after responding names its parent and says it was not contained.
        let spans = system.receiver.spans();
        let audits: Vec<&ReceivedSpan> = spans
            .iter()
            .filter(|s| {
                s.kind == CLIENT
                    && s.attr_str("url.full")
                        .is_some_and(|u| u.contains("/s4/audit/"))
            })
            .collect();
        assert_eq!(audits.len(), 25);
        for audit in audits {
            assert_eq!(
                audit.attr_str("hoptrace.parent.method"),
                Some("single_inflight")
            );
            assert_eq!(audit.attributes["hoptrace.parent.inferred"], true);
            let confidence = audit.attributes["hoptrace.parent.confidence"]
                .as_f64()
                .unwrap();
            assert!((0.9..=1.0).contains(&confidence), "{confidence}");
            assert_eq!(audit.attributes["hoptrace.parent.contains_call"], false);
            let parent = spans
                .iter()
                .find(|s| s.span_id == audit.parent_span_id)
                .unwrap();
            assert_eq!(parent.kind, SERVER);
            assert_eq!(parent.trace_id, audit.trace_id);
            assert_eq!(parent.service_name(), Some("s1"));
        }
        scores.push(score);
    }
    let strip = |s: &eval::Score| (s.calls, s.accuracy, s.methods.clone(), s.traces_right);
    assert_eq!(strip(&scores[0]), strip(&scores[1]));
}

/// The app of route /a calls /x, the app of /b calls /y (learned from one-at-a-time
/// requests). With one of each in flight, the call to /x goes to the /a request (model);
/// with two /a requests in flight and nothing to tell them apart, the call gets a new trace
/// linking both, each with its confidence: never a silent guess. A call unlike what its only
/// candidate's route makes is linked too.
#[tokio::test]
async fn the_model_picks_the_learned_match_and_links_when_unsure() {
    let receiver = Receiver::start().await;
    let leaf = serve(|_req: Request<Incoming>| async { text(200, "leaf") }).await;
    let gates: Arc<Mutex<HashMap<String, Gate>>> = Arc::default();
    let arrived = Arc::new(AtomicUsize::new(0));
    let outbound: Arc<std::sync::OnceLock<std::net::SocketAddr>> = Arc::default();
    let app = {
        let (gates, arrived, outbound) = (gates.clone(), arrived.clone(), outbound.clone());
        serve(move |req: Request<Incoming>| {
            let (gates, arrived, outbound) = (gates.clone(), arrived.clone(), outbound.clone());
            async move {
                let path = req.uri().path().to_string();
                let id = path.rsplit('/').next().unwrap().to_string();
                let gate = gates.lock().unwrap().get(&id).cloned();
                arrived.fetch_add(1, Ordering::SeqCst);
                if let Some(gate) = gate {
                    gate.notified().await;
                }
                let dest = if path.starts_with("/a/") { "x" } else { "y" };
                let blind = req.uri().query() == Some("blind=1");
                let call = if blind { "blind".to_string() } else { id };
                let url = format!("http://{}/{dest}/{call}", outbound.get().unwrap());
                let response = get(&http1_client(), url).await;
                assert_eq!(response.status(), 200);
                body_string(response).await;
                text(200, "done")
            }
        })
        .await
    };
    let toml = format!(
        r#"
[service]
name = "svc"
[admin]
bind = "127.0.0.1:0"
[tracing]
batch_delay = "20ms"
[tracing.otlp]
endpoint = "{}"
[stitching]
# Nothing here is called after responding.
linger = "1ms"
# A delay alone can make a candidate at most 10 times likelier (10/11 < 0.95).
min_confidence = 0.95
[[listeners]]
name = "in"
bind = "127.0.0.1:0"
role = "inbound"
[[routes]]
name = "in"
listener = "in"
upstream = "app"
[upstreams.app]
endpoints = ["{}"]
[[listeners]]
name = "out"
bind = "127.0.0.1:0"
role = "outbound"
[[routes]]
name = "x"
listener = "out"
path_prefix = "/x/"
upstream = "leaf"
[[routes]]
name = "y"
listener = "out"
path_prefix = "/y/"
upstream = "leaf"
[upstreams.leaf]
endpoints = ["{}"]
"#,
        receiver.grpc_url(),
        app.addr,
        leaf.addr
    );
    // Both inbound requests share the route "in"; the model keys on it, so give /a and /b
    // their own inbound routes.
    let toml = toml.replace(
        "[[routes]]\nname = \"in\"\nlistener = \"in\"\nupstream = \"app\"\n",
        "[[routes]]\nname = \"a\"\nlistener = \"in\"\npath_prefix = \"/a/\"\nupstream = \"app\"\n\
         [[routes]]\nname = \"b\"\nlistener = \"in\"\npath_prefix = \"/b/\"\nupstream = \"app\"\n",
    );
    let proxy = start_proxy(&toml).await;
    outbound.set(proxy.listener_addr("out").unwrap()).unwrap();
    let inbound = proxy.listener_addr("in").unwrap();
    let client = http1_client();

    // Learning: one request at a time (single in flight).
    for i in 0..30 {
        for route in ["a", "b"] {
            let response = get(
                &client,
                format!("http://{inbound}/{route}/train-{route}{i:04}"),
            )
            .await;
            assert_eq!(response.status(), 200);
            body_string(response).await;
        }
    }
    let gate = |id: &str| {
        let g = Gate::default();
        gates.lock().unwrap().insert(id.to_string(), g.clone());
        g
    };
    let send = |path: String| {
        let client = client.clone();
        tokio::spawn(async move {
            let response = get(&client, format!("http://{inbound}{path}")).await;
            assert_eq!(response.status(), 200);
            body_string(response).await
        })
    };
    let wait_arrived = |n: usize| {
        let arrived = arrived.clone();
        async move {
            wait_until("requests at the app", Duration::from_secs(10), || {
                let a = arrived.load(Ordering::SeqCst);
                async move { a >= n }
            })
            .await
        }
    };

    // One /a and one /b in flight: the call to /x is the /a request's.
    let (ga, gb) = (gate("pay-0001"), gate("ship-0002"));
    let a = send("/a/pay-0001".to_string());
    let b = send("/b/ship-0002".to_string());
    wait_arrived(62).await;
    ga.notify_one();
    a.await.unwrap();
    gb.notify_one();
    b.await.unwrap();

    // Two /a requests in flight, and a call that shares nothing with either: linked.
    let (g1, g2) = (gate("dup-0003"), gate("dup-0004"));
    let r1 = send("/a/dup-0003?blind=1".to_string());
    let r2 = send("/a/dup-0004?blind=1".to_string());
    wait_arrived(64).await;
    g1.notify_one();
    r1.await.unwrap();
    g2.notify_one();
    r2.await.unwrap();

    // 60 learning requests, 2 × 2 above: each makes one call, so 64 × 2 spans.
    let spans = receiver.wait_for_spans(128).await;
    let server = |path: &str| {
        spans
            .iter()
            .find(|s| s.kind == SERVER && s.attr_str("url.path") == Some(path))
            .unwrap_or_else(|| panic!("no SERVER span for {path}"))
    };
    let client_of = |url_end: &str, parent: Option<&ReceivedSpan>| -> Vec<&ReceivedSpan> {
        spans
            .iter()
            .filter(|s| s.kind == CLIENT && s.attr_str("url.full").unwrap().ends_with(url_end))
            .filter(|s| parent.is_none_or(|p| s.parent_span_id == p.span_id))
            .collect()
    };

    let pay = server("/a/pay-0001");
    let x = client_of("/x/pay-0001", None);
    assert_eq!(x.len(), 1);
    let x = x[0];
    assert_eq!(
        (x.trace_id.as_str(), x.parent_span_id.as_str()),
        (pay.trace_id.as_str(), pay.span_id.as_str())
    );
    assert_eq!(x.attr_str("hoptrace.parent.method"), Some("model"));
    assert_eq!(x.attributes["hoptrace.parent.inferred"], true);
    let confidence = x.attributes["hoptrace.parent.confidence"].as_f64().unwrap();
    assert!((0.95..=1.0).contains(&confidence), "{confidence}");
    assert!(x.links.is_empty());

    let ship = server("/b/ship-0002");
    let y = client_of("/y/ship-0002", Some(ship));
    assert_eq!(
        y[0].attr_str("hoptrace.parent.method"),
        Some("single_inflight")
    );

    let (d3, d4) = (server("/a/dup-0003"), server("/a/dup-0004"));
    let blind = client_of("/x/blind", None);
    assert_eq!(blind.len(), 2);
    // Neither blind call gets a parent: each starts a new trace with links.
    assert!(
        blind.iter().all(|s| s.parent_span_id.is_empty()),
        "{blind:#?}"
    );
    let (linked, second) = if blind[0].links.len() == 2 {
        (blind[0], blind[1])
    } else {
        (blind[1], blind[0])
    };
    assert_ne!(linked.trace_id, d3.trace_id);
    assert_ne!(linked.trace_id, d4.trace_id);
    assert_eq!(linked.attr_str("hoptrace.parent.method"), Some("linked"));
    assert_eq!(linked.attributes["hoptrace.parent.inferred"], false);
    let mut links: Vec<(String, String, f64)> = linked
        .links
        .iter()
        .zip(&linked.link_attributes)
        .map(|((t, s), attrs)| {
            assert_eq!(attrs["hoptrace.link.method"], "model");
            (
                t.clone(),
                s.clone(),
                attrs["hoptrace.link.confidence"].as_f64().unwrap(),
            )
        })
        .collect();
    links.sort_by(|a, b| a.1.cmp(&b.1));
    let mut expected = vec![
        (d3.trace_id.clone(), d3.span_id.clone()),
        (d4.trace_id.clone(), d4.span_id.clone()),
    ];
    expected.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        links
            .iter()
            .map(|(t, s, _)| (t.clone(), s.clone()))
            .collect::<Vec<_>>(),
        expected
    );
    let top = linked.attributes["hoptrace.parent.confidence"]
        .as_f64()
        .unwrap();
    let sum: f64 = links.iter().map(|l| l.2).sum();
    assert!(top < 0.95 && sum <= 1.0 + 1e-9, "{links:?}");
    assert_eq!(links.iter().map(|l| l.2).fold(0.0, f64::max), top);
    // The second came when only dup-0004 was in flight; its route's calls always carry the
    // request's id and this one does not, so even the only candidate is not sure enough.
    assert_eq!(second.attr_str("hoptrace.parent.method"), Some("linked"));
    assert_eq!(
        second.links,
        vec![(d4.trace_id.clone(), d4.span_id.clone())]
    );

    assert_eq!(
        context_counts(&proxy).await,
        counts(&[("single", 61), ("model", 1), ("linked", 2)])
    );
    proxy.shutdown().await;
}

/// `hoptrace_stitch_tracked` from a sidecar's `/metrics`.
async fn tracked(proxy: &hoptrace::app::Running) -> u64 {
    let url = format!("http://{}/metrics", proxy.admin_addr());
    let text = body_string(get(&http1_client(), url).await).await;
    let line = text
        .lines()
        .find(|l| l.starts_with("hoptrace_stitch_tracked "))
        .unwrap_or_else(|| panic!("no hoptrace_stitch_tracked in\n{text}"));
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<f64>()
        .unwrap() as u64
}

/// A request in flight is registered only where an outbound listener could ask for it: an
/// inbound-only sidecar pays nothing for stitching.
#[tokio::test]
async fn inbound_requests_are_registered_only_when_an_outbound_listener_exists() {
    for with_outbound in [false, true] {
        let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel::<()>();
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let gate = release.clone();
        let app = serve(move |_req: Request<Incoming>| {
            let (entered_tx, gate) = (entered_tx.clone(), gate.clone());
            async move {
                entered_tx.send(()).unwrap();
                gate.acquire().await.unwrap().forget();
                text(200, "ok")
            }
        })
        .await;
        let mut config = simple_config("inbound", app.addr, "http1");
        if with_outbound {
            config.push_str(
                "[[listeners]]\nname = \"out\"\nbind = \"127.0.0.1:0\"\nrole = \"outbound\"\n\
                 [[routes]]\nlistener = \"out\"\nupstream = \"app\"\n",
            );
        }
        let proxy = start_proxy(&config).await;
        let url = format!("http://{}/", proxy.listener_addr("main").unwrap());
        let request = tokio::spawn(async move { get(&http1_client(), url).await.status() });
        tokio::time::timeout(Duration::from_secs(10), entered.recv())
            .await
            .unwrap()
            .unwrap();
        // Held in the app: in flight.
        assert_eq!(tracked(&proxy).await, u64::from(with_outbound), "{config}");
        release.add_permits(1);
        assert_eq!(request.await.unwrap(), 200);
    }
}
