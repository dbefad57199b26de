//! Endpoint selection: round robin or power of two choices (p2c), both skipping endpoints
//! that recently refused connections.
//!
//! Endpoint state is a handful of atomics, read and written without locks on the request path.
//! The races this allows (two requests updating the same EWMA at once) cost a sample, never
//! correctness.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::{Balance, Endpoint};

/// Latency assumed for an endpoint that has not answered yet, so that p2c can compare it
/// with measured ones.
const DEFAULT_RTT: Duration = Duration::from_millis(1);

/// How fast the latency average forgets: weight of the newest sample (peak-EWMA: a slower
/// sample replaces the average at once, faster ones pull it down by this weight).
const EWMA_WEIGHT: f64 = 0.25;

/// Per-endpoint state shared by every request of an upstream.
#[derive(Debug)]
pub struct EndpointState {
    pub endpoint: Endpoint,
    /// `http://host:port` authority, built once.
    pub authority: http::uri::Authority,
    /// Milliseconds since `epoch()` until which this endpoint is skipped; 0 = healthy.
    backoff_until_ms: AtomicU64,
    outstanding: AtomicU64,
    rtt_ewma_ns: AtomicU64,
}

/// Picks endpoints of one upstream.
#[derive(Debug)]
pub struct Balancer {
    policy: Balance,
    endpoints: Box<[EndpointState]>,
    next: AtomicUsize,
}

impl EndpointState {
    pub fn new(endpoint: Endpoint, authority: http::uri::Authority) -> Self {
        EndpointState {
            endpoint,
            authority,
            backoff_until_ms: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
            rtt_ewma_ns: AtomicU64::new(DEFAULT_RTT.as_nanos() as u64),
        }
    }

    fn in_backoff(&self, now_ms: u64) -> bool {
        self.backoff_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// The endpoint refused a connection (or timed out connecting): skip it for `backoff`.
    pub fn mark_failed(&self, backoff: Duration) {
        let until = now_ms().saturating_add(backoff.as_millis() as u64);
        self.backoff_until_ms.store(until, Ordering::Relaxed);
    }

    /// A response arrived after `rtt`: the endpoint is healthy and this is its latest latency.
    pub fn record_success(&self, rtt: Duration) {
        self.backoff_until_ms.store(0, Ordering::Relaxed);
        let sample = rtt.as_nanos().min(u64::MAX as u128) as u64;
        let old = self.rtt_ewma_ns.load(Ordering::Relaxed);
        let new = if sample >= old {
            sample
        } else {
            (old as f64 + (sample as f64 - old as f64) * EWMA_WEIGHT) as u64
        };
        self.rtt_ewma_ns.store(new, Ordering::Relaxed);
    }

    /// p2c cost: expected wait if this endpoint takes one more request.
    fn cost(&self) -> u128 {
        let outstanding = self.outstanding.load(Ordering::Relaxed) as u128;
        (outstanding + 1) * self.rtt_ewma_ns.load(Ordering::Relaxed) as u128
    }

    #[cfg(test)]
    pub fn outstanding(&self) -> u64 {
        self.outstanding.load(Ordering::Relaxed)
    }
}

impl Balancer {
    pub fn new(policy: Balance, endpoints: Vec<EndpointState>) -> Self {
        Balancer {
            policy,
            endpoints: endpoints.into_boxed_slice(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn endpoints(&self) -> &[EndpointState] {
        &self.endpoints
    }

    pub fn endpoint(&self, index: usize) -> Option<&EndpointState> {
        self.endpoints.get(index)
    }

    /// Chooses an endpoint and counts it as outstanding until `release(index)`. Endpoints in
    /// back-off are skipped; when every endpoint is in back-off they are all tried anyway
    /// (failing fast on a refused connection beats refusing every request until the back-off
    /// ends). `None` only when there are no endpoints.
    pub fn pick(&self) -> Option<usize> {
        let index = match self.policy {
            Balance::RoundRobin => self.pick_round_robin(),
            Balance::P2c => self.pick_p2c(),
        }?;
        self.endpoints
            .get(index)?
            .outstanding
            .fetch_add(1, Ordering::Relaxed);
        Some(index)
    }

    /// Whether some endpoint is not in back-off (a retry has somewhere new to go).
    pub fn any_healthy(&self) -> bool {
        let now = now_ms();
        self.endpoints.iter().any(|e| !e.in_backoff(now))
    }

    /// Ends what `pick` started: the request no longer occupies the endpoint.
    pub fn release(&self, index: usize) {
        if let Some(e) = self.endpoints.get(index) {
            e.outstanding.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn pick_round_robin(&self) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = now_ms();
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| self.endpoints.get(i).is_some_and(|e| !e.in_backoff(now)))
            .or(Some(start))
    }

    fn pick_p2c(&self) -> Option<usize> {
        let n = self.endpoints.len();
        if n <= 1 {
            return (n == 1).then_some(0);
        }
        let a = fastrand::usize(..n);
        // A second, different index.
        let b = (a + 1 + fastrand::usize(..n - 1)) % n;
        let (ea, eb) = (self.endpoints.get(a)?, self.endpoints.get(b)?);
        let now = now_ms();
        match (ea.in_backoff(now), eb.in_backoff(now)) {
            (false, false) => Some(if eb.cost() < ea.cost() { b } else { a }),
            (false, true) => Some(a),
            (true, false) => Some(b),
            // Both sampled endpoints are in back-off: any healthy one, else either.
            (true, true) => self
                .endpoints
                .iter()
                .position(|e| !e.in_backoff(now))
                .or(Some(a)),
        }
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process's balancer epoch, plus one so that 0 never means "now".
fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn balancer(policy: Balance, n: u16) -> Balancer {
        let eps = (0..n)
            .map(|i| {
                let ep = Endpoint {
                    host: "127.0.0.1".into(),
                    port: 8000 + i,
                };
                let auth = ep.to_string().parse().unwrap();
                EndpointState::new(ep, auth)
            })
            .collect();
        Balancer::new(policy, eps)
    }

    fn port(b: &Balancer, index: usize) -> u16 {
        b.endpoints()[index].endpoint.port
    }

    #[test]
    fn round_robin_cycles_and_skips_backoff() {
        let b = balancer(Balance::RoundRobin, 3);
        let ports: Vec<u16> = (0..6).map(|_| port(&b, b.pick().unwrap())).collect();
        assert_eq!(ports, [8000, 8001, 8002, 8000, 8001, 8002]);
        b.endpoints()[1].mark_failed(Duration::from_secs(60));
        let ports: Vec<u16> = (0..4).map(|_| port(&b, b.pick().unwrap())).collect();
        assert!(!ports.contains(&8001), "{ports:?}");
        // All in back-off: still picks something (a retry checks `any_healthy` first).
        assert!(b.any_healthy());
        for e in b.endpoints() {
            e.mark_failed(Duration::from_secs(60));
        }
        assert!(!b.any_healthy());
        assert!(b.pick().is_some());
        // A success clears the back-off.
        b.endpoints()[1].record_success(Duration::from_millis(1));
        assert_eq!(port(&b, b.pick().unwrap()), 8001);
    }

    #[test]
    fn p2c_prefers_the_less_loaded_endpoint() {
        let b = balancer(Balance::P2c, 2);
        b.endpoints()[0].record_success(Duration::from_millis(50));
        b.endpoints()[1].record_success(Duration::from_micros(100));
        // Fast endpoint keeps winning until its outstanding count makes it costlier.
        let held: Vec<usize> = (0..11).map(|_| b.pick().unwrap()).collect();
        assert!(held.iter().all(|&i| port(&b, i) == 8001), "{held:?}");
        assert_eq!(b.endpoints()[1].outstanding(), 11);
        for i in held {
            b.release(i);
        }
        assert_eq!(b.endpoints()[1].outstanding(), 0);
        // Enough outstanding requests make the slow endpoint the cheaper one:
        // 50 ms * 1 < 0.1 ms * (n + 1) once n >= 500.
        let held: Vec<usize> = (0..600).map(|_| b.pick().unwrap()).collect();
        assert!(held.iter().any(|&i| port(&b, i) == 8000));
    }

    #[test]
    fn p2c_skips_backoff() {
        let b = balancer(Balance::P2c, 2);
        b.endpoints()[0].mark_failed(Duration::from_secs(60));
        for _ in 0..20 {
            assert_eq!(port(&b, b.pick().unwrap()), 8001);
        }
    }

    #[test]
    fn peak_ewma_rises_at_once_and_decays_slowly() {
        let b = balancer(Balance::P2c, 1);
        let e = &b.endpoints()[0];
        e.record_success(Duration::from_millis(100));
        assert_eq!(e.rtt_ewma_ns.load(Ordering::Relaxed), 100_000_000);
        e.record_success(Duration::from_millis(0));
        assert_eq!(e.rtt_ewma_ns.load(Ordering::Relaxed), 75_000_000);
    }
}
