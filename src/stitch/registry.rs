//! The inbound requests of this service that are in flight, and those answered less than
//! `linger` ago (apps make calls after responding), in arrival order. Bounded by
//! `max_inflight`; a plain `Vec` scanned linearly, since it holds what is in flight (tens).
//! Its slots are reused: expiry keeps the `Vec`'s capacity, so once it has held the peak
//! number of requests in flight, registering one allocates nothing.

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

#[derive(Debug, Default)]
pub struct Registry {
    entries: Vec<Entry>,
}

impl Registry {
    /// Adds `entry` unless `cap` entries are tracked; false when full. The first insert
    /// reserves room for `PREALLOCATED` entries (or `cap`, if fewer).
    pub fn insert(&mut self, entry: Entry, cap: usize) -> bool {
        if self.entries.len() >= cap {
            return false;
        }
        if self.entries.capacity() == 0 {
            self.entries.reserve_exact(cap.min(PREALLOCATED));
        }
        self.entries.push(entry);
        true
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The inbound request with SERVER span `id` answered at `now`.
    pub fn end(&mut self, id: SpanId, now: Instant) {
        if let Some(entry) = self.get_mut(id) {
            entry.ended = Some(now);
        }
    }

    pub fn get_mut(&mut self, id: SpanId) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.id() == id)
    }

    /// Whether the inbound request `id` is still unanswered.
    pub fn is_in_flight(&self, id: SpanId) -> bool {
        self.entries
            .iter()
            .any(|e| e.id() == id && e.ended.is_none())
    }

    /// Removes requests answered more than `linger` ago, handing each to `done`.
    pub fn expire(&mut self, now: Instant, linger: Duration, mut done: impl FnMut(&Entry)) {
        self.entries.retain(|e| match e.ended {
            Some(ended) if now.saturating_duration_since(ended) > linger => {
                done(e);
                false
            }
            _ => true,
        });
    }

    /// Indices of candidates: requests in flight, newest first, then the one answered last
    /// (a call made after responding follows its response at once, so older answered
    /// requests have made theirs already). At most `max` (and `MAX_CANDIDATES`).
    pub fn candidates(&self, max: usize, out: &mut Candidates) {
        out.clear();
        let max = max.min(MAX_CANDIDATES);
        let in_flight = (0..self.entries.len())
            .rev()
            .filter(|&i| self.entries.get(i).is_some_and(|e| e.ended.is_none()));
        for i in in_flight.take(max) {
            out.push(i);
        }
        let answered_last = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((i, e.ended?)))
            .max_by_key(|&(_, ended)| ended)
            .map(|(i, _)| i);
        if let Some(i) = answered_last.filter(|_| out.len() < max) {
            out.push(i);
        }
    }

    pub fn entry(&self, index: usize) -> Option<&Entry> {
        self.entries.get(index)
    }

    pub fn entry_mut(&mut self, index: usize) -> Option<&mut Entry> {
        self.entries.get_mut(index)
    }
}
