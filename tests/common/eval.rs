//! The stitching evaluation: five synthetic services on loopback, each behind its own
//! hoptrace (in-process, inbound + outbound listeners), whose apps forward NO trace header:
//!
//! ```text
//! client ─► S1 ─┬─► S2 ─► S4, then S5        S2 also calls S5 from a timer (no parent)
//!               ├─► S3 ─► S4 × 0-3 (sequential, n from the request)
//!               └─► S4 after S1 has responded (fire-and-forget)
//! ```
//! S4 and S5 answer after a log-normal delay (heavy tail). Ground truth: every app tags each
//! call with a fresh nonce (`x-hoptrace-nonce`) and records (call nonce, the nonce of the
//! inbound request that made it). hoptrace records the nonce as a captured header for
//! scoring only: the inference never sees it (`hoptrace::stitch::CallEvidence`).
//!
//! Shared by `tests/integration/stitching.rs` (deterministic: one request at a time, the timer driven by
//! the test) and `benches/stitch_sweep.rs` (the full sweep over concurrency).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::common::otlp::{ReceivedSpan, Receiver};
use crate::common::*;

pub const NONCE: &str = "x-hoptrace-nonce";
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

#[derive(Clone, Debug)]
pub struct Options {
    /// Client workers sending root requests back to back.
    pub concurrency: usize,
    /// Root requests in total.
    pub requests: usize,
    /// Root requests sent one at a time before the measured ones (the model learns).
    pub warmup: usize,
    pub seed: u64,
    /// Nonces random (true) or derived from the parent's nonce (false). The inference never
    /// sees them, so the accuracy must not change.
    pub shuffle_nonces: bool,
    /// Apps copy `traceparent` onto their calls (tier 1).
    pub forward: bool,
    /// Deterministic mode: the next root request starts only after the previous one's
    /// fire-and-forget call has finished, and the timer fires only when the test says.
    pub serialize: bool,
    /// S2's background call to S5, every this long (`None`: only by `System::timer`).
    pub timer: Option<Duration>,
    /// Median and sigma (of the log) of S4/S5's delay, capped at `delay_cap`.
    pub delay_median: Duration,
    pub delay_sigma: f64,
    pub delay_cap: Duration,
    pub min_confidence: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: 1,
            requests: 30,
            warmup: 0,
            seed: 1,
            shuffle_nonces: false,
            forward: false,
            serialize: true,
            timer: None,
            delay_median: Duration::from_micros(500),
            delay_sigma: 1.0,
            delay_cap: Duration::from_millis(50),
            min_confidence: 0.9,
        }
    }
}

/// (call nonce, parent nonce or none for a root / background call, calling service).
type Truth = Arc<Mutex<Vec<(String, Option<String>, &'static str)>>>;

struct App {
    name: &'static str,
    outbound: OnceLock<SocketAddr>,
    client: TestClient,
    truth: Truth,
    opts: Options,
    rng: Mutex<fastrand::Rng>,
    /// Nonces only, so that shuffling them changes nothing else (delays stay the same).
    nonces: Mutex<fastrand::Rng>,
    /// Fire-and-forget calls finished.
    after_done: AtomicUsize,
}

impl App {
    fn nonce(&self, parent: &str, i: usize) -> String {
        if self.opts.shuffle_nonces {
            format!("{:016x}", self.nonces.lock().unwrap().u64(..))
        } else {
            format!("{parent}.{}{i}", self.name)
        }
    }

    /// One call through this service's outbound hoptrace, tagged and recorded.
    async fn call(&self, path: String, parent: Option<&str>, i: usize, traceparent: Option<&str>) {
        let nonce = match parent {
            Some(p) => self.nonce(p, i),
            None => format!("{:016x}", self.nonces.lock().unwrap().u64(..)),
        };
        self.truth
            .lock()
            .unwrap()
            .push((nonce.clone(), parent.map(str::to_string), self.name));
        let addr = self.outbound.get().unwrap();
        let mut req = Request::get(format!("http://{addr}{path}")).header(NONCE, nonce);
        if let (true, Some(tp)) = (self.opts.forward, traceparent) {
            req = req.header("traceparent", tp);
        }
        let response = self
            .client
            .request(req.body(full("")).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{} {path}", self.name);
        response.into_body().collect().await.unwrap();
    }

    fn delay(&self) -> Duration {
        let (a, b) = {
            let mut rng = self.rng.lock().unwrap();
            (rng.f64().max(1e-12), rng.f64())
        };
        // Box-Muller: a standard normal, then log-normal around the median.
        let z = (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos();
        let d = self.opts.delay_median.as_secs_f64() * (self.opts.delay_sigma * z).exp();
        Duration::from_secs_f64(d).min(self.opts.delay_cap)
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// A body that reports when hyper is done with it (the response has been written).
struct Notify {
    inner: Full<Bytes>,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Body for Notify {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(|e| match e {})
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<TestBody> {
    let own = header(&req, NONCE).unwrap_or_default();
    let tp = header(&req, "traceparent");
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.split('/').collect();
    let item = parts.last().copied().unwrap_or("").to_string();
    let own = Some(own.as_str());
    match app.name {
        "s1" => {
            let n: usize = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("n="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            tokio::join!(
                app.call(format!("/s2/check/{item}"), own, 0, tp.as_deref()),
                app.call(format!("/s3/items/{item}?n={n}"), own, 1, tp.as_deref()),
            );
            // After responding: one more call (fire-and-forget).
            let (tx, rx) = tokio::sync::oneshot::channel();
            let (app2, own, tp) = (app.clone(), own.map(str::to_string), tp.clone());
            tokio::spawn(async move {
                let _ = rx.await;
                app2.call(
                    format!("/s4/audit/{item}"),
                    own.as_deref(),
                    2,
                    tp.as_deref(),
                )
                .await;
                app2.after_done.fetch_add(1, Ordering::SeqCst);
            });
            let body = Notify {
                inner: Full::new(Bytes::from_static(b"ok")),
                done: Some(tx),
            };
            Response::new(body.boxed())
        }
        "s2" => {
            app.call(format!("/s4/stock/{item}"), own, 0, tp.as_deref())
                .await;
            app.call(format!("/s5/price/{item}"), own, 1, tp.as_deref())
                .await;
            text(200, "ok")
        }
        "s3" => {
            let n: usize = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("n="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            for i in 0..n {
                app.call(format!("/s4/stock/{item}"), own, i, tp.as_deref())
                    .await;
            }
            text(200, "ok")
        }
        _ => {
            tokio::time::sleep(app.delay()).await;
            text(200, "ok")
        }
    }
}

fn sidecar(
    name: &str,
    receiver: &Receiver,
    app: SocketAddr,
    out: &[(&str, SocketAddr)],
    min_confidence: f64,
) -> String {
    let mut toml = format!(
        r#"
[service]
name = "{name}"
[admin]
bind = "127.0.0.1:0"
[access_log]
enabled = false
[tracing]
batch_delay = "20ms"
queue_size = 65536
capture_request_headers = ["{NONCE}"]
[tracing.otlp]
protocol = "grpc"
endpoint = "{}"
[stitching]
min_confidence = {min_confidence}
report_interval = "0s"
[[listeners]]
name = "in"
bind = "127.0.0.1:0"
role = "inbound"
[[routes]]
name = "{name}-in"
listener = "in"
upstream = "app"
[upstreams.app]
endpoints = ["{app}"]
[[listeners]]
name = "out"
bind = "127.0.0.1:0"
role = "outbound"
"#,
        receiver.grpc_url()
    );
    for (dest, addr) in out {
        toml.push_str(&format!(
            "[[routes]]\nname = \"{dest}\"\nlistener = \"out\"\npath_prefix = \"/{dest}/\"\nupstream = \"{dest}\"\n[upstreams.{dest}]\nendpoints = [\"{addr}\"]\n"
        ));
    }
    toml
}

/// The five services, their sidecars and the OTLP receiver.
pub struct System {
    pub receiver: Receiver,
    pub proxies: Vec<(&'static str, hoptrace::app::Running)>,
    apps: Vec<Arc<App>>,
    _servers: Vec<TestServer>,
    truth: Truth,
    entry: SocketAddr,
    opts: Options,
    timer: Option<tokio::task::JoinHandle<()>>,
    timer_stop: Arc<std::sync::atomic::AtomicBool>,
}

impl System {
    pub async fn start(opts: Options) -> System {
        let receiver = Receiver::start().await;
        let truth: Truth = Arc::default();
        let mut apps = Vec::new();
        let mut servers = Vec::new();
        let mut proxies: Vec<(&'static str, hoptrace::app::Running)> = Vec::new();
        let mut inbound: HashMap<&str, SocketAddr> = HashMap::new();
        let plan: [(&'static str, &[&str]); 5] = [
            ("s5", &[]),
            ("s4", &[]),
            ("s3", &["s4"]),
            ("s2", &["s4", "s5"]),
            ("s1", &["s2", "s3", "s4"]),
        ];
        for (i, (name, dests)) in plan.into_iter().enumerate() {
            let app = Arc::new(App {
                name,
                outbound: OnceLock::new(),
                client: http1_client(),
                truth: truth.clone(),
                opts: opts.clone(),
                rng: Mutex::new(fastrand::Rng::with_seed(opts.seed * 10 + i as u64)),
                nonces: Mutex::new(fastrand::Rng::with_seed(opts.seed * 10 + 100 + i as u64)),
                after_done: AtomicUsize::new(0),
            });
            let handler_app = app.clone();
            let server = serve(move |req| handle(handler_app.clone(), req)).await;
            let out: Vec<(&str, SocketAddr)> = dests.iter().map(|d| (*d, inbound[d])).collect();
            let running = start_proxy(&sidecar(
                name,
                &receiver,
                server.addr,
                &out,
                opts.min_confidence,
            ))
            .await;
            app.outbound
                .set(running.listener_addr("out").unwrap())
                .unwrap();
            inbound.insert(name, running.listener_addr("in").unwrap());
            proxies.push((name, running));
            apps.push(app);
            servers.push(server);
        }
        let entry = inbound["s1"];
        // Stopped by a flag, never aborted: an aborted call would be in the truth without
        // its spans.
        let timer_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let timer = opts.timer.map(|every| {
            let s2 = apps.iter().find(|a| a.name == "s2").unwrap().clone();
            let stop = timer_stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    s2.call("/s5/refresh/cache".to_string(), None, 0, None)
                        .await;
                }
            })
        });
        System {
            receiver,
            proxies,
            apps,
            _servers: servers,
            truth,
            entry,
            opts,
            timer,
            timer_stop,
        }
    }

    fn app(&self, name: &str) -> &Arc<App> {
        self.apps.iter().find(|a| a.name == name).unwrap()
    }

    /// S2's background call to S5, now (deterministic mode).
    pub async fn timer(&self) {
        self.app("s2")
            .call("/s5/refresh/cache".to_string(), None, 0, None)
            .await;
    }

    /// Sends `count` root requests (`concurrency` at a time), numbered from `first`.
    pub async fn run(&self, first: usize, count: usize, concurrency: usize) {
        let next = Arc::new(AtomicUsize::new(first));
        let end = first + count;
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let next = next.clone();
            let client = http1_client();
            let entry = self.entry;
            let truth = self.truth.clone();
            let s1 = self.app("s1").clone();
            let (serialize, seed) = (self.opts.serialize, self.opts.seed);
            workers.push(tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(seed);
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= end {
                        return;
                    }
                    rng.seed(seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
                    let item = format!("{:012x}", rng.u64(..) >> 16);
                    let n = rng.usize(0..4);
                    let nonce = format!("r{seed}-{i}");
                    truth.lock().unwrap().push((nonce.clone(), None, "client"));
                    let req = Request::get(format!("http://{entry}/s1/order/{item}?n={n}"))
                        .header(NONCE, nonce)
                        .body(full(""))
                        .unwrap();
                    let response = client.request(req).await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.into_body().collect().await.unwrap();
                    if serialize {
                        let done = i + 1;
                        wait_until("the fire-and-forget call", Duration::from_secs(10), || {
                            let n = s1.after_done.load(Ordering::SeqCst);
                            async move { n >= done }
                        })
                        .await;
                    }
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
    }

    /// Warm-up (one at a time, not scored), then the measured requests; waits for every
    /// span and scores them.
    pub async fn evaluate(mut self) -> Score {
        let opts = self.opts.clone();
        self.run(0, opts.warmup, 1).await;
        let skip = self.truth.lock().unwrap().len();
        self.run(opts.warmup, opts.requests, opts.concurrency).await;
        if let Some(timer) = self.timer.take() {
            self.timer_stop.store(true, Ordering::SeqCst);
            timer.await.unwrap();
        }
        // Every fire-and-forget call has finished once each root's counter is in.
        let roots = opts.warmup + opts.requests;
        wait_until("fire-and-forget calls", Duration::from_secs(20), || {
            let n = self.app("s1").after_done.load(Ordering::SeqCst);
            async move { n >= roots }
        })
        .await;
        self.score(skip).await
    }

    /// Waits for the spans of everything recorded, then scores the truth from `skip` on.
    pub async fn score(&self, skip: usize) -> Score {
        let truth = self.truth.lock().unwrap().clone();
        let roots = truth.iter().filter(|t| t.2 == "client").count();
        let spans = self.receiver.wait_for_spans(2 * truth.len() - roots).await;
        score(&truth, skip, &spans)
    }

    pub fn truth_len(&self) -> usize {
        self.truth.lock().unwrap().len()
    }
}

/// What one run measured (the issue's list), over calls made by the apps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Score {
    pub calls: usize,
    /// Mean inbound requests in flight at the calling service when a call started.
    pub mean_in_flight: f64,
    /// Calls whose parent (or its absence) is right.
    pub accuracy: f64,
    /// Calls given a parent (not links), and the share of those that are right.
    pub emitted: usize,
    pub precision: f64,
    /// Share of calls with a true parent that got that parent.
    pub coverage: f64,
    /// Root requests whose whole tree is right.
    pub traces_right: f64,
    /// Expected calibration error over inferred decisions (10 bins of confidence).
    pub ece: f64,
    pub baseline_none: f64,
    pub baseline_oldest: f64,
    /// Calls by `hoptrace.parent.method` ("forwarded" and "none" when absent).
    pub methods: Vec<(String, usize)>,
    /// Calls by (predicted right?, method) for diagnosis.
    pub wrong_by_method: Vec<(String, usize)>,
}

fn nonce_of(span: &ReceivedSpan) -> Option<String> {
    span.attributes
        .get(&format!("http.request.header.{NONCE}"))
        .and_then(|v| v.as_array())
        .and_then(|a| a.first())
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

fn service(span: &ReceivedSpan) -> &str {
    span.service_name().unwrap_or("")
}

pub fn score(
    truth: &[(String, Option<String>, &'static str)],
    skip: usize,
    spans: &[ReceivedSpan],
) -> Score {
    let servers: HashMap<&str, &ReceivedSpan> = spans
        .iter()
        .filter(|s| s.kind == SERVER)
        .map(|s| (s.span_id.as_str(), s))
        .collect();
    let clients: HashMap<String, &ReceivedSpan> = spans
        .iter()
        .filter(|s| s.kind == CLIENT)
        .filter_map(|s| Some((nonce_of(s)?, s)))
        .collect();
    let mut by_service: HashMap<&str, Vec<&ReceivedSpan>> = HashMap::new();
    for s in servers.values() {
        by_service.entry(service(s)).or_default().push(s);
    }
    let parent_of: HashMap<&str, Option<&str>> = truth
        .iter()
        .map(|(n, p, _)| (n.as_str(), p.as_deref()))
        .collect();
    fn root_of(parent_of: &HashMap<&str, Option<&str>>, nonce: &str) -> String {
        let mut n = nonce;
        while let Some(Some(p)) = parent_of.get(n) {
            n = p;
        }
        n.to_string()
    }
    let server_nonce = |id: &str| servers.get(id).and_then(|s| nonce_of(s));

    let mut score = Score::default();
    let mut methods: HashMap<String, usize> = HashMap::new();
    let mut wrong: HashMap<String, usize> = HashMap::new();
    let (mut right, mut emitted_right, mut with_parent, mut covered) = (0, 0, 0, 0);
    let (mut none_right, mut oldest_right, mut in_flight_sum) = (0, 0, 0usize);
    let mut bins = [(0usize, 0.0f64, 0usize); 10];
    let mut trace_ok: HashMap<String, bool> = HashMap::new();
    for (nonce, parent, caller) in truth.iter().skip(skip) {
        if *caller == "client" {
            trace_ok.entry(nonce.clone()).or_insert(true);
            continue;
        }
        let client = clients
            .get(nonce)
            .unwrap_or_else(|| panic!("no CLIENT span with nonce {nonce}"));
        score.calls += 1;
        let predicted = (!client.parent_span_id.is_empty())
            .then(|| server_nonce(&client.parent_span_id))
            .flatten();
        let method = client
            .attr_str("hoptrace.parent.method")
            .map(str::to_string)
            .unwrap_or_else(|| {
                if predicted.is_some() {
                    "forwarded"
                } else {
                    "none"
                }
                .to_string()
            });
        *methods.entry(method.clone()).or_default() += 1;
        let ok = predicted.as_deref() == parent.as_deref();
        if ok {
            right += 1;
        } else {
            *wrong.entry(method.clone()).or_default() += 1;
        }
        if predicted.is_some() {
            score.emitted += 1;
            emitted_right += usize::from(ok);
        }
        if parent.is_some() {
            with_parent += 1;
            covered += usize::from(ok);
            let root = root_of(&parent_of, nonce);
            let entry = trace_ok.entry(root).or_insert(true);
            *entry &= ok;
        } else {
            none_right += 1;
        }
        // Baselines, from the spans' times at the calling service.
        let mut in_flight: Vec<&&ReceivedSpan> = by_service
            .get(*caller)
            .map(|v| {
                v.iter()
                    .filter(|s| {
                        s.start_unix_nano <= client.start_unix_nano
                            && client.start_unix_nano < s.end_unix_nano
                    })
                    .collect()
            })
            .unwrap_or_default();
        in_flight_sum += in_flight.len();
        in_flight.sort_by_key(|s| s.start_unix_nano);
        let oldest = in_flight.first().and_then(|s| nonce_of(s));
        oldest_right += usize::from(oldest.as_deref() == parent.as_deref());
        // Calibration: the confidence of the parent or top link, against being right.
        if let Some(confidence) = client
            .attributes
            .get("hoptrace.parent.confidence")
            .and_then(|v| v.as_f64())
        {
            let top = if predicted.is_some() {
                predicted.clone()
            } else {
                client.links.first().and_then(|(_, id)| server_nonce(id))
            };
            let b = ((confidence * 10.0) as usize).min(9);
            bins[b].0 += 1;
            bins[b].1 += confidence;
            bins[b].2 += usize::from(top.as_deref() == parent.as_deref());
        }
    }
    let share = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    score.accuracy = share(right, score.calls);
    score.precision = share(emitted_right, score.emitted);
    score.coverage = share(covered, with_parent);
    score.mean_in_flight = in_flight_sum as f64 / score.calls.max(1) as f64;
    score.baseline_none = share(none_right, score.calls);
    score.baseline_oldest = share(oldest_right, score.calls);
    let traces = trace_ok.len();
    score.traces_right = share(trace_ok.values().filter(|ok| **ok).count(), traces);
    let decided: usize = bins.iter().map(|b| b.0).sum();
    score.ece = bins
        .iter()
        .filter(|b| b.0 > 0)
        .map(|(n, conf, ok)| {
            (*n as f64 / decided as f64) * ((*conf / *n as f64) - (*ok as f64 / *n as f64)).abs()
        })
        .sum();
    let mut methods: Vec<_> = methods.into_iter().collect();
    methods.sort();
    score.methods = methods;
    let mut wrong: Vec<_> = wrong.into_iter().collect();
    wrong.sort();
    score.wrong_by_method = wrong;
    score
}
