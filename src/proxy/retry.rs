//! Retries: which requests may be sent again, and the budget that keeps retries from
//! multiplying load on an upstream that is already failing.
//!
//! The budget follows linkerd's and Finagle's: over a sliding window of `WINDOW_SECS`
//! seconds, retries may add at most `ratio` of the requests sent in that window, plus
//! `min_per_second` retries per second whatever the traffic (so that an upstream with little
//! traffic can still retry). A retry the budget does not allow is not made: the failed
//! attempt's answer goes to the client, and the refusal is counted.

use std::sync::Mutex;
use std::time::Instant;

use http::{HeaderMap, Method, Request, Version};
use tracing::debug;

use super::request_body::RequestBody;
use super::upstream::Upstream;

use crate::config::RetryConfig;

/// Length of the budget's sliding window, in one-second slots.
pub const WINDOW_SECS: u64 = 10;

/// RFC 9110 §9.2.2: methods whose intended effect is the same however often they are sent.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// One upstream's retry budget (shared by all its requests; carried over a reload with the
/// upstream when its config is unchanged).
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: u64,
    origin: Instant,
    window: Mutex<[Slot; WINDOW_SECS as usize]>,
}

/// Counts of one second of the window.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// Seconds since `origin` this slot counts; a slot of an older second is stale.
    second: u64,
    requests: u64,
    retries: u64,
}

impl RetryBudget {
    pub fn new(config: &RetryConfig) -> RetryBudget {
        RetryBudget {
            ratio: config.budget_ratio.0,
            min_per_second: u64::from(config.budget_min_per_second),
            origin: Instant::now(),
            window: Mutex::new([Slot::default(); WINDOW_SECS as usize]),
        }
    }

    /// A request (first attempt) was sent.
    pub fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        self.withdraw_at(Instant::now())
    }

    fn deposit_at(&self, now: Instant) {
        self.with_slot(now, |_, slot| slot.requests += 1);
    }

    fn withdraw_at(&self, now: Instant) -> bool {
        self.with_slot(now, |window, slot| {
            let (requests, retries) = window;
            let allowed = (self.min_per_second * WINDOW_SECS) as f64 + self.ratio * requests as f64;
            if (retries as f64) < allowed {
                slot.retries += 1;
                true
            } else {
                false
            }
        })
    }

    /// Runs `f` with the window's totals (requests, retries) before this call and the slot of
    /// `now`, cleared first if it held an older second.
    fn with_slot<R>(&self, now: Instant, f: impl FnOnce((u64, u64), &mut Slot) -> R) -> R {
        let second = now.saturating_duration_since(self.origin).as_secs();
        // A poisoned lock only means another request panicked mid-update of plain counters.
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let live = |s: &&Slot| second.saturating_sub(s.second) < WINDOW_SECS;
        let totals = window
            .iter()
            .filter(live)
            .filter(|s| s.second <= second)
            .fold((0, 0), |(q, r), s| (q + s.requests, r + s.retries));
        let index = usize::try_from(second % WINDOW_SECS).unwrap_or(0);
        let mut scratch = Slot::default();
        let slot = window.get_mut(index).unwrap_or(&mut scratch);
        if slot.second != second {
            // The totals above may have counted this slot only if it was live, i.e. current.
            *slot = Slot {
                second,
                ..Slot::default()
            };
        }
        f(totals, slot)
    }
}

/// Takes a retry from the upstream's budget, counting it, or counts the refusal.
pub fn retry_allowed(upstream: &Upstream) -> bool {
    if upstream.retry_budget.withdraw() {
        upstream.retry_metrics.retries.inc();
        true
    } else {
        upstream.retry_metrics.budget_exhausted.inc();
        debug!(upstream = %upstream.name, "retry budget spent; not retrying");
        false
    }
}

/// What is needed to send a body-less request again.
pub struct Replay {
    method: Method,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    pub fn of<B>(req: &Request<B>) -> Replay {
        Replay {
            method: req.method().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        }
    }

    pub fn request(&self) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::empty());
        *req.method_mut() = self.method.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::time::Duration;

    use super::*;
    use crate::config::Fraction;

    fn budget(ratio: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget::new(&RetryConfig {
            retries: 2,
            retry_on: vec![503],
            budget_ratio: Fraction(ratio),
            budget_min_per_second: min_per_second,
        })
    }

    #[test]
    fn retries_are_at_most_the_ratio_of_requests() {
        let b = budget(0.2, 0);
        let t = b.origin;
        for _ in 0..100 {
            b.deposit_at(t);
        }
        let granted = (0..100).filter(|_| b.withdraw_at(t)).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn the_minimum_allows_retries_without_traffic() {
        let b = budget(0.0, 1);
        let t = b.origin;
        // 1 per second over a 10 s window: 10 retries.
        let granted = (0..50).filter(|_| b.withdraw_at(t)).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn the_window_slides() {
        let b = budget(0.5, 0);
        let t = b.origin;
        for _ in 0..10 {
            b.deposit_at(t);
        }
        assert_eq!((0..10).filter(|_| b.withdraw_at(t)).count(), 5);
        // Nine seconds later those requests and retries still count.
        let later = t + Duration::from_secs(9);
        assert!(!b.withdraw_at(later));
        // Once they left the window, nothing is allowed without new requests...
        let gone = t + Duration::from_secs(WINDOW_SECS);
        assert!(!b.withdraw_at(gone));
        // ...and new requests earn retries again.
        for _ in 0..4 {
            b.deposit_at(gone);
        }
        assert_eq!((0..10).filter(|_| b.withdraw_at(gone)).count(), 2);
    }

    #[test]
    fn idempotent_methods() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(is_idempotent(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT"] {
            assert!(!is_idempotent(&m.parse().unwrap()), "{m}");
        }
    }
}
