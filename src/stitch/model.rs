//! The learned model: what each inbound route calls (templates), when (delay histograms),
//! with which of its values (content), and how often a destination is called with no
//! request in flight (background). Learned only from exact attributions (forwarded context,
//! single candidate); counts halve once they pass `DECAY_AT`, so the model follows changes.
//! Bounded: at most `max_models` routes (least recently used evicted) and `MAX_DESTS`
//! destinations per route.

use std::collections::HashMap;
use std::time::Duration;

use super::evidence::Tokens;
use super::registry::{Entry, Phase};

/// Call indices with their own statistics; later calls share the last.
const K: usize = 4;
/// Delay bins: one per octave of microseconds, 1 µs to ~30 s.
const BINS: usize = 25;
const MAX_DESTS: usize = 16;
/// Counts halve when a total passes this: the model's memory is about this many examples.
const DECAY_AT: f32 = 1000.0;
/// Below this many requests of a route, its template says nothing.
pub const MIN_EXAMPLES: f32 = 20.0;
/// A delay ratio never exceeds this: one piece of evidence alone cannot make a parent sure.
const MAX_DELAY_RATIO: f32 = 10.0;
/// An answered request is a candidate only if its route makes calls after responding at
/// least this often (or nothing is in flight, or its route is not learned yet).
const AFTER_RATE_MIN: f32 = 0.01;
const SKETCH_WIDTH: usize = 2048;

type Hist = [f32; BINS];

#[derive(Debug, Default)]
struct DestModel {
    dest: u64,
    /// Requests that made at least i+1 calls to `dest` while in flight / after answering.
    during: [f32; K],
    after: [f32; K],
    gap_during: [Hist; K],
    gap_after: Hist,
    /// Exact examples, and those where the call shared a token with its parent.
    examples: f32,
    shared: f32,
}

#[derive(Debug, Default)]
struct RouteModel {
    requests: f32,
    used: u64,
    dests: Vec<DestModel>,
}

#[derive(Debug, Default)]
struct Background {
    calls: f32,
    alone: f32,
    used: u64,
}

#[derive(Debug)]
pub struct Model {
    routes: HashMap<u64, RouteModel>,
    background: HashMap<u64, Background>,
    /// Count-min sketch (2 rows) of tokens of inbound requests: how rare a token is.
    sketch: Box<[[f32; SKETCH_WIDTH]; 2]>,
    sketched: f32,
    tick: u64,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            routes: HashMap::new(),
            background: HashMap::new(),
            sketch: Box::new([[0.0; SKETCH_WIDTH]; 2]),
            sketched: 0.0,
            tick: 0,
        }
    }
}

/// One exact example: the call to `dest` in `phase` was the `index`-th of its parent
/// (`route`), `gap` after the parent's last event, sharing a token or not.
#[derive(Clone, Copy, Debug)]
pub struct Example {
    pub route: u64,
    pub dest: u64,
    pub phase: Phase,
    pub index: usize,
    pub gap: Duration,
    pub shared: bool,
}

impl Model {
    /// An inbound request arrived with `tokens` (for token rarity).
    pub fn saw_inbound(&mut self, tokens: &Tokens) {
        for &t in tokens.as_slice() {
            for (row, cells) in self.sketch.iter_mut().enumerate() {
                if let Some(c) = cells.get_mut(cell(t, row)) {
                    *c += 1.0;
                }
            }
        }
        self.sketched += 1.0;
        if self.sketched > 8.0 * DECAY_AT {
            self.sketched /= 2.0;
            self.sketch.iter_mut().flatten().for_each(|c| *c /= 2.0);
        }
    }

    /// An inbound request left the registry: one more request of its route, with the calls
    /// attributed to it. Counts only calls attributed exactly (see `learn`), so under load
    /// the template is an underestimate for every request of the route alike.
    pub fn request_done(&mut self, entry: &Entry, max_models: usize) {
        let route = self.route_mut(entry.evidence.route, max_models);
        route.requests += 1.0;
        if route.requests > DECAY_AT {
            route.requests /= 2.0;
            for d in &mut route.dests {
                d.during.iter_mut().for_each(|c| *c /= 2.0);
                d.after.iter_mut().for_each(|c| *c /= 2.0);
            }
        }
    }

    /// Learns from an exactly attributed call.
    pub fn learn(&mut self, ex: Example, max_models: usize) {
        let route = self.route_mut(ex.route, max_models);
        let Some(d) = dest_mut(route, ex.dest) else {
            return;
        };
        let i = ex.index.min(K - 1);
        match ex.phase {
            Phase::During => {
                if let Some(c) = d.during.get_mut(i) {
                    *c += 1.0;
                }
                if let Some(h) = d.gap_during.get_mut(i) {
                    observe(h, ex.gap);
                }
            }
            Phase::After => {
                if let Some(c) = d.after.get_mut(i) {
                    *c += 1.0;
                }
                observe(&mut d.gap_after, ex.gap);
            }
        }
        d.examples += 1.0;
        if ex.shared {
            d.shared += 1.0;
        }
        if d.examples > DECAY_AT {
            d.examples /= 2.0;
            d.shared /= 2.0;
        }
    }

    /// A call to `dest` was made; `alone` when no inbound request was a candidate.
    pub fn saw_call(&mut self, dest: u64, alone: bool, max_models: usize) {
        self.tick += 1;
        let tick = self.tick;
        if !self.background.contains_key(&dest) && self.background.len() >= max_models {
            evict(&mut self.background, |b| b.used);
        }
        let b = self.background.entry(dest).or_default();
        b.used = tick;
        b.calls += 1.0;
        if alone {
            b.alone += 1.0;
        }
        if b.calls > DECAY_AT {
            b.calls /= 2.0;
            b.alone /= 2.0;
        }
    }

    /// Share of calls to `dest` made with nothing in flight (smoothed towards 5%).
    pub fn background(&self, dest: u64) -> f32 {
        let (alone, calls) = self
            .background
            .get(&dest)
            .map_or((0.0, 0.0), |b| (b.alone, b.calls));
        (alone + 0.5) / (calls + 10.0)
    }

    /// Whether `entry`'s route has seen enough requests for its model to speak.
    pub fn is_learned(&self, entry: &Entry) -> bool {
        self.routes
            .get(&entry.evidence.route)
            .is_some_and(|r| r.requests >= MIN_EXAMPLES)
    }

    /// Whether an answered request is worth scoring for a call to `dest`.
    pub fn calls_after_answering(&self, entry: &Entry, dest: u64) -> Option<bool> {
        let route = self.routes.get(&entry.evidence.route)?;
        if route.requests < MIN_EXAMPLES {
            return None;
        }
        let after = route
            .dests
            .iter()
            .find(|d| d.dest == dest)
            .map_or(0.0, |d| d.after[0]);
        Some(after / route.requests >= AFTER_RATE_MIN)
    }

    /// How much likelier the call (`dest`, `tokens`, `gap` after the candidate's last event)
    /// is if `entry` made it than under a uniform guess: template × delay × content.
    pub fn likelihood(&self, entry: &Entry, dest: u64, tokens: &Tokens, gap: Duration) -> f32 {
        let Some(route) = self.routes.get(&entry.evidence.route) else {
            return 1.0;
        };
        let d = route.dests.iter().find(|d| d.dest == dest);
        let phase = entry.phase();
        let k = entry.made(dest, phase).min(K - 1);
        let template = if route.requests < MIN_EXAMPLES {
            1.0
        } else {
            let counts = d.map_or([0.0; K], |d| match phase {
                Phase::During => d.during,
                Phase::After => d.after,
            });
            let prev = match k {
                0 => route.requests,
                k => counts.get(k - 1).copied().unwrap_or(0.0),
            };
            let now = counts.get(k).copied().unwrap_or(0.0);
            ((now + 0.5) / (prev + 1.0)).min(1.0)
        };
        let Some(d) = d else {
            return template;
        };
        let hist = match phase {
            Phase::During => d.gap_during.get(k),
            Phase::After => Some(&d.gap_after),
        };
        let delay = hist.map_or(1.0, |h| ratio(h, gap));
        template * delay * self.content(d, entry.tokens(), tokens)
    }

    /// Shared rare token: P(share | parent) / P(share by chance); none shared: P(no share).
    fn content(&self, d: &DestModel, parent: &Tokens, call: &Tokens) -> f32 {
        if d.examples < 5.0 {
            return 1.0;
        }
        let p = (d.shared + 0.5) / (d.examples + 1.0);
        let chance = call
            .shared(parent)
            .map(|t| self.frequency_among_others(t))
            .fold(None, |min: Option<f32>, f| {
                Some(min.map_or(f, |m| m.min(f)))
            });
        match chance {
            Some(chance) => (p / chance.max(1e-4)).clamp(1.0 - p, 1000.0),
            None => 1.0 - p,
        }
    }

    /// Estimated share of the other inbound requests carrying token `t`, `t` being a token
    /// of a tracked candidate: how likely a candidate that is not the parent shares it by
    /// chance. The candidate's own request was counted when it arrived (`saw_inbound`), so
    /// one occurrence is its own, not chance.
    fn frequency_among_others(&self, t: u64) -> f32 {
        let count = self
            .sketch
            .iter()
            .enumerate()
            .map(|(row, cells)| cells.get(cell(t, row)).copied().unwrap_or(0.0))
            .fold(f32::MAX, f32::min);
        ((count - 1.0).max(0.0) + 0.5) / (self.sketched + 1.0)
    }

    fn route_mut(&mut self, route: u64, max_models: usize) -> &mut RouteModel {
        self.tick += 1;
        if !self.routes.contains_key(&route) && self.routes.len() >= max_models {
            evict(&mut self.routes, |r| r.used);
        }
        let model = self.routes.entry(route).or_default();
        model.used = self.tick;
        model
    }
}

fn dest_mut(route: &mut RouteModel, dest: u64) -> Option<&mut DestModel> {
    let index = match route.dests.iter().position(|d| d.dest == dest) {
        Some(i) => i,
        None if route.dests.len() < MAX_DESTS => {
            route.dests.push(DestModel {
                dest,
                ..DestModel::default()
            });
            route.dests.len() - 1
        }
        None => return None,
    };
    route.dests.get_mut(index)
}

/// Removes the least recently used value.
fn evict<V>(map: &mut HashMap<u64, V>, used: impl Fn(&V) -> u64) {
    if let Some(key) = map.iter().min_by_key(|(_, v)| used(v)).map(|(k, _)| *k) {
        map.remove(&key);
    }
}

fn cell(token: u64, row: usize) -> usize {
    let h = if row == 0 {
        token
    } else {
        token.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15
    };
    (h % SKETCH_WIDTH as u64) as usize
}

fn bin(gap: Duration) -> usize {
    let micros = u64::try_from(gap.as_micros()).unwrap_or(u64::MAX);
    ((u64::BITS - (micros + 1).leading_zeros()) as usize).min(BINS - 1)
}

fn observe(h: &mut Hist, gap: Duration) {
    if let Some(c) = h.get_mut(bin(gap)) {
        *c += 1.0;
    }
    if h.iter().sum::<f32>() > DECAY_AT {
        h.iter_mut().for_each(|c| *c /= 2.0);
    }
}

/// Density of `gap`'s bin (smoothed with its neighbours) over the uniform density.
fn ratio(h: &Hist, gap: Duration) -> f32 {
    let total: f32 = h.iter().sum();
    if total < 5.0 {
        return 1.0;
    }
    let b = bin(gap);
    let at = |i: usize| h.get(i).copied().unwrap_or(0.0);
    let near = at(b) + 0.5 * (at(b.wrapping_sub(1)) + at(b + 1));
    let alpha = 0.1;
    let density = (near + alpha) / (2.0 * total + alpha * BINS as f32);
    (density * BINS as f32).clamp(0.01, MAX_DELAY_RATIO)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_octaves_of_microseconds() {
        assert_eq!(bin(Duration::ZERO), 1);
        assert_eq!(bin(Duration::from_micros(1)), 2);
        assert_eq!(bin(Duration::from_micros(1000)), 10);
        assert_eq!(bin(Duration::from_secs(3600)), BINS - 1);
    }

    #[test]
    fn the_delay_ratio_is_bounded() {
        let mut h = [0.0; BINS];
        for _ in 0..100 {
            observe(&mut h, Duration::from_micros(100));
        }
        assert_eq!(ratio(&h, Duration::from_micros(100)), MAX_DELAY_RATIO);
        assert!(ratio(&h, Duration::from_secs(1)) < 0.1);
    }
}
