//! What tracing costs an unsampled request, counted (issue 3: "an unsampled request allocates
//! nothing for tracing beyond the header it forwards").
//!
//! This test binary's global allocator counts the allocations made on the current thread
//! while a measured closure runs. Requests come from a real hyper client to a real hyper
//! server on loopback, so the headers are what hyper hands the proxy; the server runs
//! hoptrace's tracing calls on them exactly as `forward::handle` does: `Hop::start` (context
//! extraction in the configured formats, the sampling decision, stitching's inbound
//! registration or outbound resolution), `inject` (the `traceparent` sent upstream),
//! `respond` (`traceresponse`), and dropping the stitching guard (the registry learns the
//! request ended). After a warm-up (the registry's first insert reserves its slots, the
//! model meets its routes), every step allocates nothing, except one allocation per header
//! value written.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use hoptrace::config::{Config, Role};
use hoptrace::export::recent::RecentTraces;
use hoptrace::metrics::Metrics;
use hoptrace::proxy::route::RequestInfo;
use hoptrace::proxy::{ConnInfo, Hop, ListenerCtx, Shared, Snapshot};
use hoptrace::stitch::{Source, Stitcher, Tracked};
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use common::*;

struct Counting;

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: an allocation during thread teardown must not panic.
    let _ = ACTIVE.try_with(|active| {
        if active.get() {
            COUNT.with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded to `System` unchanged; counting touches only const
// thread-locals without destructors (no allocation, no re-entry).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns what it returned and how many allocations it made on this thread.
fn counted<T>(f: impl FnOnce() -> T) -> (T, u64) {
    COUNT.with(|n| n.set(0));
    ACTIVE.with(|a| a.set(true));
    let out = f();
    ACTIVE.with(|a| a.set(false));
    (out, COUNT.with(Cell::get))
}

/// Allocations of each tracing step of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cost {
    start: u64,
    inject: u64,
    respond: u64,
    end: u64,
}

/// What the test server shares: the snapshot and the two listeners' contexts (one
/// stitcher), the stitching guards of requests held "in flight", the measured costs.
struct Env {
    shared: Arc<Shared>,
    inbound: ListenerCtx,
    outbound: ListenerCtx,
    stitch: Arc<Stitcher>,
    held: Mutex<Vec<Tracked>>,
    /// (flow, round, sampled, cost)
    costs: Mutex<Vec<(String, usize, bool, Cost)>>,
}

const TOML: &str = r#"
[service]
name = "alloc"
[admin]
bind = "127.0.0.1:0"
[tracing]
exporter = "none"
sampling_ratio = 0.0
[stitching]
# The registry holds what is in flight plus what ended within `linger`; at most
# `max_inflight`, which here fits the slots its first insert reserves (256).
linger = "10ms"
max_inflight = 256
[[listeners]]
name = "in"
bind = "127.0.0.1:0"
role = "inbound"
[[listeners]]
name = "out"
bind = "127.0.0.1:0"
role = "outbound"
[[routes]]
listener = "in"
path_prefix = "/in"
upstream = "app"
[[routes]]
listener = "out"
path_prefix = "/out"
upstream = "pay"
[upstreams.app]
endpoints = ["127.0.0.1:9"]
[upstreams.pay]
endpoints = ["127.0.0.1:9"]
"#;

impl Env {
    fn new() -> (Env, hoptrace::export::ExportTask) {
        let config = Arc::new(Config::from_toml_str(TOML).unwrap());
        let metrics = Metrics::new();
        let snapshot = Snapshot::build(config.clone(), 1, None, &metrics).unwrap();
        let shared: Arc<Shared> = Arc::new(ArcSwap::from_pointee(snapshot));
        let recent = Arc::new(RecentTraces::new(10));
        let (sink, task) =
            hoptrace::export::spawn(&config, recent, metrics.export_batch_duration()).unwrap();
        let stitch = Arc::new(Stitcher::new());
        let ctx = |index: usize, name: &str, role| ListenerCtx {
            name: name.into(),
            role,
            index,
            shared: shared.clone(),
            sink: sink.clone(),
            open_connections: metrics.open_connections(name),
            invalid_contexts: metrics.invalid_contexts(name, &["tracecontext"]),
            stitch: stitch.clone(),
            rejected_connections: metrics.rejected_connections(name),
        };
        let env = Env {
            inbound: ctx(0, "in", Role::Inbound),
            outbound: ctx(1, "out", Role::Outbound),
            shared,
            stitch,
            held: Mutex::new(Vec::with_capacity(16)),
            costs: Mutex::new(Vec::with_capacity(4096)),
        };
        (env, task)
    }

    /// The tracing calls of one request, each counted. Returns the `traceparent` the
    /// upstream would receive.
    fn trace(&self, req: &mut Request<Incoming>) -> String {
        let path = req.uri().path().to_owned();
        if path == "/release" {
            let (_, end) = counted(|| self.held.lock().unwrap().clear());
            self.record(
                req,
                false,
                Cost {
                    start: 0,
                    inject: 0,
                    respond: 0,
                    end,
                },
            );
            return String::new();
        }
        let ctx = if path.starts_with("/out") {
            &self.outbound
        } else {
            &self.inbound
        };
        let snapshot = self.shared.load_full();
        let route = snapshot.tables[ctx.index].find(&RequestInfo {
            host: None,
            path: req.uri().path(),
            method: req.method(),
            headers: req.headers(),
        });
        let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let conn = ConnInfo {
            remote: addr,
            local: addr,
            tls: false,
        };
        // Room for the headers written, so that the maps' growth is not counted.
        req.headers_mut().reserve(8);
        let mut response = Response::new(hoptrace::proxy::ResponseBody::empty());
        response.headers_mut().reserve(8);
        let (now, wall) = (Instant::now(), SystemTime::now());

        let (hop, start) = counted(|| Hop::start(ctx, &snapshot, route, req, conn, now, wall));
        let mut hop = hop.expect("tracing is on for every route");
        let (_, inject) = counted(|| hop.inject(req.headers_mut()));
        let ((tracked, finish), respond) = counted(|| {
            hop.respond(&mut response);
            let tracked = hop.take_tracked();
            (tracked, hop.into_finish())
        });
        let sampled = finish.is_some();
        // Never finished: a sampled control request sends no span either.
        drop(finish);
        let end = if path.starts_with("/in/hold") {
            self.held.lock().unwrap().extend(tracked);
            0
        } else {
            counted(|| drop(tracked)).1
        };
        self.record(
            req,
            sampled,
            Cost {
                start,
                inject,
                respond,
                end,
            },
        );
        req.headers()["traceparent"].to_str().unwrap().to_owned()
    }

    fn record(&self, req: &Request<Incoming>, sampled: bool, cost: Cost) {
        let header = |name| req.headers()[name].to_str().unwrap().to_owned();
        let round = header("x-round").parse().unwrap();
        self.costs
            .lock()
            .unwrap()
            .push((header("x-flow"), round, sampled, cost));
    }
}

async fn send(
    client: &TestClient,
    addr: SocketAddr,
    path: &str,
    flow: &str,
    round: usize,
    traceparent: Option<&str>,
) -> String {
    let mut req = Request::get(format!("http://{addr}{path}"))
        .header("x-flow", flow)
        .header("x-round", round.to_string());
    if let Some(tp) = traceparent {
        req = req
            .header("traceparent", tp)
            .header("tracestate", "vendor=abc,other=xyz");
    }
    let response = client.request(req.body(full("")).unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    body_string(response).await
}

fn random_context(flags: &str) -> String {
    format!(
        "00-{:032x}-{:016x}-{flags}",
        fastrand::u128(1..),
        fastrand::u64(1..)
    )
}

const WARMUP: usize = 10;
const ROUNDS: usize = 60;

// current_thread (the default): the server's handler, whose allocations are counted, runs
// on the test's thread.
#[tokio::test]
async fn an_unsampled_request_allocates_only_the_header_values_it_writes() {
    let (env, export) = Env::new();
    let env = Arc::new(env);
    let server_env = env.clone();
    let server = serve(move |mut req: Request<Incoming>| {
        let env = server_env.clone();
        async move {
            let traceparent = env.trace(&mut req);
            let mut response = Response::new(full(traceparent));
            response
                .headers_mut()
                .insert("x-done", HeaderValue::from_static("1"));
            response
        }
    })
    .await;
    let (client, addr) = (http1_client(), server.addr);

    for round in 0..ROUNDS {
        let n = round;
        // Inbound, the caller's context unsampled (with tracestate, passed on).
        let unsampled = random_context("00");
        let path = format!("/in/orders/{n}");
        send(
            &client,
            addr,
            &path,
            "inbound unsampled parent",
            round,
            Some(&unsampled),
        )
        .await;
        // Inbound, no context: a new root, unsampled by the ratio (0).
        send(&client, addr, &path, "inbound new root", round, None).await;

        // Outbound without context while one inbound request is in flight: its parent.
        let parent = send(&client, addr, "/in/hold/a", "hold", round, None).await;
        let call = send(
            &client,
            addr,
            &format!("/out/pay/{n}"),
            "outbound single",
            round,
            None,
        )
        .await;
        assert_eq!(
            call[3..35],
            parent[3..35],
            "the call joins the inbound request's trace"
        );
        assert!(call.ends_with("-00"), "{call}");
        send(&client, addr, "/release", "release", round, None).await;

        // Several in flight: scored; a forwarded context names one of them.
        let mut parents = Vec::new();
        for _ in 0..3 {
            parents.push(send(&client, addr, "/in/hold/b", "hold", round, None).await);
        }
        for _ in 0..2 {
            send(
                &client,
                addr,
                &format!("/out/pay/{n}"),
                "outbound scored",
                round,
                None,
            )
            .await;
        }
        send(
            &client,
            addr,
            "/out/pay",
            "outbound forwarded",
            round,
            Some(&parents[0]),
        )
        .await;
        send(&client, addr, "/release", "release", round, None).await;
    }
    // The control: a sampled request does allocate (its span record), so the counter works.
    send(
        &client,
        addr,
        "/in/x",
        "sampled",
        ROUNDS,
        Some(&random_context("01")),
    )
    .await;

    let costs = env.costs.lock().unwrap().clone();
    // `traceresponse` is written with the response head from the trace context itself.
    let header_values = Cost {
        start: 0,
        inject: 1,
        respond: 0,
        end: 0,
    };
    let mut checked = 0;
    for (flow, round, sampled, cost) in &costs {
        match flow.as_str() {
            "sampled" => {
                assert!(*sampled);
                assert!(cost.start > 0, "the control allocates: {cost:?}");
            }
            _ if *round < WARMUP => {}
            "release" => assert_eq!(cost.end, 0, "round {round}: ending stitching tracking"),
            _ => {
                assert!(!sampled, "{flow}");
                assert_eq!(*cost, header_values, "round {round}: {flow}");
                checked += 1;
            }
        }
    }
    // Per round: 2 inbound, 4 held inbound, 4 outbound.
    assert_eq!(checked, (ROUNDS - WARMUP) * 10);

    // Every stitching tier ran, and no span of an unsampled request reached the sink.
    let by_source = env.stitch.counts();
    let count = |source| by_source.iter().find(|(s, _)| *s == source).unwrap().1;
    assert!(count(Source::Single) >= ROUNDS as u64, "{by_source:?}");
    assert!(count(Source::Forwarded) >= ROUNDS as u64, "{by_source:?}");
    assert!(
        count(Source::Linked) + count(Source::Model) >= 2 * ROUNDS as u64,
        "{by_source:?}"
    );
    // Spans are counted as started when they start: only the sampled controls' were.
    let sampled = costs.iter().filter(|(flow, ..)| flow == "sampled").count() as u64;
    let [started, _, dropped, _] = env.inbound.sink.stats().snapshot();
    assert_eq!((started, dropped), (sampled, 0));
    assert_eq!(env.inbound.sink.queue_depth(), 0);
    export.shutdown(std::time::Duration::from_secs(5)).await;
}
