//! The inbound requests of this service that are in flight, in arrival order, and those
//! answered less than `linger` ago (apps make calls after responding). Bounded by
//! `max_inflight`. What is in flight (tens) is a plain `Vec` scanned linearly; the answered
//! ones (under load a request rate times `linger`: about 1,500 at 30k requests/s) are a
//! queue in the order they were answered, found by id through a map and expired from the
//! front, so no operation scans them. Slots are reused: once the registry has held its
//! peak, registering a request allocates nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::evidence::{InboundEvidence, Tokens};
use crate::trace::context::{SpanId, TraceParent};

/// Most candidates one outbound call considers (`stitching.max_candidates` is 1-64).
pub const MAX_CANDIDATES: usize = 64;

/// Slots reserved at the first registration: more than a sidecar usually has in flight
/// within `linger`, so the registry rarely grows past it (about 80 KiB).
const PREALLOCATED: usize = 256;

/// Distinct destinations remembered per inbound request (calls beyond are still counted
/// under the last slot's neighbours, never lost from the metric).
const MAX_DESTS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The inbound request had not been answered when the call started.
    During,
    /// It had (fire-and-forget after the response).
    After,
}

#[derive(Clone, Copy, Debug, Default)]
struct Calls {
    dest: u64,
    during: u8,
    after: u8,
}

#[derive(Clone, Debug)]
pub struct Entry {
    /// The SERVER span; `parent_id` is the span id the inbound hop injected.
    pub parent: TraceParent,
    pub evidence: InboundEvidence,
    /// For the report: the inbound route's template.
    pub route_name: Option<Arc<str>>,
    /// Latest of: arrival, start or end of a call attributed to it.
    pub last_event: Instant,
    pub ended: Option<Instant>,
    calls: [Calls; MAX_DESTS],
    dests: u8,
}

impl Entry {
    pub fn new(
        parent: TraceParent,
        evidence: InboundEvidence,
        route_name: Option<Arc<str>>,
    ) -> Entry {
        Entry {
            parent,
            last_event: evidence.arrived,
            evidence,
            route_name,
            ended: None,
            calls: Default::default(),
            dests: 0,
        }
    }

    pub fn id(&self) -> SpanId {
        self.parent.parent_id
    }

    pub fn tokens(&self) -> &Tokens {
        &self.evidence.tokens
    }

    pub fn phase(&self) -> Phase {
        if self.ended.is_some() {
            Phase::After
        } else {
            Phase::During
        }
    }

    /// Calls to `dest` already attributed to this request in `phase`.
    pub fn made(&self, dest: u64, phase: Phase) -> usize {
        self.slots()
            .iter()
            .find(|c| c.dest == dest)
            .map_or(0, |c| match phase {
                Phase::During => usize::from(c.during),
                Phase::After => usize::from(c.after),
            })
    }

    /// Time from this request's last event (or its end, after it answered) to `now`.
    pub fn gap(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.ended.unwrap_or(self.last_event))
    }

    /// A call to `dest` starting at `now` is this request's.
    pub fn record_call(&mut self, dest: u64, now: Instant) {
        let phase = self.phase();
        let len = usize::from(self.dests);
        let index = match self.slots().iter().position(|c| c.dest == dest) {
            Some(i) => i,
            None if len < MAX_DESTS => {
                self.dests += 1;
                len
            }
            // Full: share the last slot rather than forget the call.
            None => MAX_DESTS - 1,
        };
        if let Some(slot) = self.calls.get_mut(index) {
            slot.dest = dest;
            match phase {
                Phase::During => slot.during = slot.during.saturating_add(1),
                Phase::After => slot.after = slot.after.saturating_add(1),
            }
        }
        if phase == Phase::During {
            self.last_event = now;
        }
    }

    fn slots(&self) -> &[Calls] {
        self.calls.get(..usize::from(self.dests)).unwrap_or(&[])
    }
}

/// The registry indices of one call's candidates, on the stack: finding a call's parent
/// allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct Candidates {
    indices: [usize; MAX_CANDIDATES],
    len: usize,
}

impl Default for Candidates {
    fn default() -> Self {
        Candidates {
            indices: [0; MAX_CANDIDATES],
            len: 0,
        }
    }
}

impl Candidates {
    pub fn as_slice(&self) -> &[usize] {
        self.indices.get(..self.len).unwrap_or(&[])
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Adds `index`; ignored when full (callers never push more than `MAX_CANDIDATES`).
    fn push(&mut self, index: usize) {
        if let Some(slot) = self.indices.get_mut(self.len) {
            *slot = index;
            self.len += 1;
        }
    }

    /// Keeps the candidates for which `keep` holds, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let mut kept = 0;
        for i in 0..self.len {
            let Some(&index) = self.indices.get(i) else {
                break;
            };
            if keep(index) {
                if let Some(slot) = self.indices.get_mut(kept) {
                    *slot = index;
                }
                kept += 1;
            }
        }
        self.len = kept;
    }
}

/// Hashes a span id by its own bytes: the ids are this process's own random SERVER span ids,
/// so no one can choose them to collide, and SipHash would only add cost.
#[derive(Clone, Copy, Debug, Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    /// The array's length prefix: the same for every id.
    fn write_usize(&mut self, _: usize) {}
}

type IdMap<V> = HashMap<SpanId, V, std::hash::BuildHasherDefault<IdHasher>>;

/// `Candidates` index of the request answered last (others index `in_flight`).
const ANSWERED_LAST: usize = usize::MAX;

#[derive(Debug, Default)]
pub struct Registry {
    /// Unanswered, in arrival order: what is in flight (tens).
    in_flight: Vec<Entry>,
    /// Answered less than `linger` ago, in the order they were answered: expiry pops from
    /// the front. Under load these are the many (a request rate times `linger`), so they are
    /// found through `answered_ids`, never scanned; a queue keeps them dense (a map of whole
    /// entries would hold many more empty slots).
    answered: VecDeque<Entry>,
    /// Each answered request's sequence number: its index is that minus `expired`.
    answered_ids: IdMap<u64>,
    /// Answered requests expired so far: the sequence number of `answered`'s front.
    expired: u64,
}

impl Registry {
    /// Adds `entry` unless `cap` entries are tracked; false when full. The first insert
    /// reserves room for `PREALLOCATED` entries (or `cap`, if fewer).
    pub fn insert(&mut self, entry: Entry, cap: usize) -> bool {
        if self.len() >= cap {
            return false;
        }
        if self.in_flight.capacity() == 0 {
            let reserve = cap.min(PREALLOCATED);
            self.in_flight.reserve_exact(reserve);
            self.answered.reserve_exact(reserve);
            self.answered_ids.reserve(reserve);
        }
        self.in_flight.push(entry);
        true
    }

    pub fn len(&self) -> usize {
        self.in_flight.len() + self.answered.len()
    }

    /// The inbound request with SERVER span `id` answered at `now`.
    pub fn end(&mut self, id: SpanId, now: Instant) {
        let Some(i) = self.in_flight.iter().position(|e| e.id() == id) else {
            return;
        };
        let mut entry = self.in_flight.remove(i);
        entry.ended = Some(now);
        let seq = self.expired + self.answered.len() as u64;
        self.answered.push_back(entry);
        self.answered_ids.insert(id, seq);
    }

    /// The answered request `id`'s index in `answered`.
    fn answered_index(&self, id: SpanId) -> Option<usize> {
        let seq = self.answered_ids.get(&id)?;
        usize::try_from(seq.checked_sub(self.expired)?).ok()
    }

    pub fn get_mut(&mut self, id: SpanId) -> Option<&mut Entry> {
        match self.in_flight.iter().position(|e| e.id() == id) {
            Some(i) => self.in_flight.get_mut(i),
            None => {
                let i = self.answered_index(id)?;
                self.answered.get_mut(i)
            }
        }
    }

    /// Whether the inbound request `id` is still unanswered.
    pub fn is_in_flight(&self, id: SpanId) -> bool {
        self.in_flight.iter().any(|e| e.id() == id)
    }

    /// Removes requests answered more than `linger` ago, handing each to `done`. Requests
    /// are answered in time order, so only the expired ones are looked at.
    pub fn expire(&mut self, now: Instant, linger: Duration, mut done: impl FnMut(&Entry)) {
        while let Some(ended) = self.answered.front().and_then(|e| e.ended) {
            if now.saturating_duration_since(ended) <= linger {
                break;
            }
            if let Some(entry) = self.answered.pop_front() {
                self.answered_ids.remove(&entry.id());
                self.expired += 1;
                done(&entry);
            }
        }
    }

    /// Indices of candidates: requests in flight, newest first, then the one answered last
    /// (a call made after responding follows its response at once, so older answered
    /// requests have made theirs already). At most `max` (and `MAX_CANDIDATES`).
    pub fn candidates(&self, max: usize, out: &mut Candidates) {
        out.clear();
        let max = max.min(MAX_CANDIDATES);
        for i in (0..self.in_flight.len()).rev().take(max) {
            out.push(i);
        }
        if out.len() < max && !self.answered.is_empty() {
            out.push(ANSWERED_LAST);
        }
    }

    pub fn entry(&self, index: usize) -> Option<&Entry> {
        match index {
            ANSWERED_LAST => self.answered.back(),
            i => self.in_flight.get(i),
        }
    }

    pub fn entry_mut(&mut self, index: usize) -> Option<&mut Entry> {
        match index {
            ANSWERED_LAST => self.answered.back_mut(),
            i => self.in_flight.get_mut(i),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::trace::context::{TraceFlags, TraceId};

    fn entry(n: u8, arrived: Instant) -> Entry {
        let parent = TraceParent {
            trace_id: TraceId([n; 16]),
            parent_id: SpanId([n; 8]),
            flags: TraceFlags(1),
        };
        let evidence = InboundEvidence {
            route: 0,
            tokens: Tokens::default(),
            arrived,
        };
        Entry::new(parent, evidence, None)
    }

    fn ids(registry: &Registry, max: usize) -> Vec<u8> {
        let mut out = Candidates::default();
        registry.candidates(max, &mut out);
        out.as_slice()
            .iter()
            .map(|&i| registry.entry(i).unwrap().id().0[0])
            .collect()
    }

    #[test]
    fn candidates_are_in_flight_newest_first_then_the_one_answered_last() {
        let t0 = Instant::now();
        let mut registry = Registry::default();
        for n in 1..=5 {
            assert!(registry.insert(entry(n, t0), 100));
        }
        registry.end(SpanId([2; 8]), t0 + Duration::from_millis(1));
        registry.end(SpanId([4; 8]), t0 + Duration::from_millis(2));
        assert_eq!(ids(&registry, 8), [5, 3, 1, 4]);
        // The limit counts the answered one too.
        assert_eq!(ids(&registry, 2), [5, 3]);
        assert!(registry.is_in_flight(SpanId([3; 8])));
        assert!(!registry.is_in_flight(SpanId([4; 8])));
        // Answered ones are still found by id (a forwarded call after the response).
        let answered = registry.get_mut(SpanId([2; 8])).unwrap();
        assert!(answered.ended.is_some());
        assert_eq!(registry.len(), 5);
    }

    #[test]
    fn expiry_hands_over_what_was_answered_more_than_linger_ago_in_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut registry = Registry::default();
        for n in 1..=200 {
            assert!(registry.insert(entry(n, t0), 1000));
        }
        // Answered in reverse order of arrival, one per millisecond; 1 stays in flight.
        for (i, n) in (2..=200u8).rev().enumerate() {
            registry.end(SpanId([n; 8]), t0 + ms(i as u64));
        }
        let mut done = Vec::new();
        // At 150 ms with a 50 ms linger: those answered at 0..=99 ms (200 down to 101).
        registry.expire(t0 + ms(150), ms(50), |e| done.push(e.id().0[0]));
        assert_eq!(done, (101..=200).rev().collect::<Vec<u8>>());
        assert_eq!(registry.len(), 100);
        assert!(registry.get_mut(SpanId([150; 8])).is_none());
        assert!(registry.get_mut(SpanId([100; 8])).is_some());
        // The one in flight never expires, however old.
        registry.expire(t0 + ms(10_000), ms(50), |_| {});
        assert_eq!(registry.len(), 1);
        assert_eq!(ids(&registry, 8), [1]);
    }

    #[test]
    fn a_full_registry_refuses_and_counts_answered_ones_until_they_expire() {
        let t0 = Instant::now();
        let mut registry = Registry::default();
        assert!(registry.insert(entry(1, t0), 2));
        assert!(registry.insert(entry(2, t0), 2));
        registry.end(SpanId([1; 8]), t0);
        assert!(!registry.insert(entry(3, t0), 2));
        registry.expire(
            t0 + Duration::from_secs(1),
            Duration::from_millis(50),
            |_| {},
        );
        assert!(registry.insert(entry(3, t0), 2));
    }
}
