//! Stitching: the parent of an outbound call that carries no trace context, so that traces
//! join even when the app forwards nothing (DESIGN.md §10).
//!
//! One `Stitcher` per process. Inbound listeners register each request in flight (its SERVER
//! span id, its start, its route and a few hashed tokens: `inbound`); outbound listeners ask
//! for a parent when a call starts (`outbound`), before its `traceparent` is injected, since
//! the trace id decides which trace the downstream subtree joins. Tiers, surest first:
//!
//! 1. forwarded: the call carries a valid `traceparent` (exact when its parent is one of our
//!    SERVER spans; kept as is otherwise);
//! 2. single: exactly one candidate (the only inbound request in flight);
//! 3. model: several, scored by the learned `Model`; the best becomes the parent when its
//!    confidence reaches `min_confidence`;
//! 4. linked: below that, a new trace whose CLIENT span links to the top candidates.
//!
//! Cost per outbound call: one scan over at most `max_candidates` entries under two small
//! mutexes (registry, then model; never held across an await). Candidates, their weights
//! and the links live on the stack, and the registry reuses its slots, so in steady state
//! neither an inbound registration nor an outbound decision allocates (what
//! `tests/unsampled_alloc.rs` checks for unsampled requests). Only learning something new
//! allocates: a route, a destination or a (route, route) pair seen for the first time.

// On the request path: no panics (STYLE rule 5).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod evidence;
mod model;
mod registry;
pub mod report;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use http::{HeaderMap, Uri};

pub use self::evidence::{CallEvidence, InboundEvidence, NONCE_HEADER, Tokens};
use self::model::{Example, Model};
use self::registry::{Candidates, Entry, MAX_CANDIDATES, Registry};
use self::report::Report;
use crate::config::StitchingConfig;
use crate::trace::context::{SpanId, TraceParent};
use crate::trace::span::{Attribute, AttributeValue, SpanLink, SpanRecord};

/// Where an outbound call's parent came from (the metric's `source` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Forwarded,
    Single,
    Model,
    Linked,
    None,
}

impl Source {
    pub const ALL: [Source; 5] = [
        Source::Forwarded,
        Source::Single,
        Source::Model,
        Source::Linked,
        Source::None,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Source::Forwarded => "forwarded",
            Source::Single => "single",
            Source::Model => "model",
            Source::Linked => "linked",
            Source::None => "none",
        }
    }
}

/// Most links on a CLIENT span whose parent was not sure enough: the top candidates, each
/// with its confidence however low (a low one is information too, and a cut-off would make
/// whether a candidate is linked depend on timing noise).
const MAX_LINKS: usize = 4;

/// The top candidates linked instead of a parent (at most `MAX_LINKS`), with their
/// confidence, best first: a fixed array, so a decision allocates nothing.
type Links = [Option<(TraceParent, f64)>; MAX_LINKS];

/// The registry and the learned model of one process.
#[derive(Debug, Default)]
pub struct Stitcher {
    registry: Mutex<Registry>,
    model: Mutex<Model>,
    by_source: [AtomicU64; 5],
    /// Inbound requests not tracked because `max_inflight` were.
    untracked: AtomicU64,
    report: Report,
}

/// What `outbound` decided.
#[derive(Debug, Default)]
pub struct Resolution {
    /// The context the call continues: forwarded, or the inferred parent.
    pub parent: Option<TraceParent>,
    pub source: Option<Source>,
    /// For the CLIENT span: attributes and links of an inferred parent.
    pub inferred: Option<Inferred>,
    pub tracked: Option<Tracked>,
}

/// An inferred parent (single, model) or the candidates linked instead (linked).
#[derive(Debug)]
pub struct Inferred {
    stitcher: Arc<Stitcher>,
    source: Source,
    /// The top candidate's confidence.
    confidence: f64,
    /// The SERVER span made the parent (single, model).
    parent: Option<SpanId>,
    links: Links,
}

/// Tells the registry when an inbound request is answered, or when an attributed call ends
/// (a later call's delay counts from there). Held by the response body.
#[derive(Debug)]
pub struct Tracked {
    stitcher: Arc<Stitcher>,
    kind: TrackedKind,
}

#[derive(Clone, Copy, Debug)]
enum TrackedKind {
    Inbound(SpanId),
    Call(SpanId),
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut registry = self.stitcher.registry();
        match self.kind {
            TrackedKind::Inbound(id) => registry.end(id, now),
            TrackedKind::Call(parent) => {
                if let Some(entry) = registry.get_mut(parent).filter(|e| e.ended.is_none()) {
                    entry.last_event = now;
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding it cannot leave the registry or model unusable: keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Stitcher {
    pub fn new() -> Stitcher {
        Stitcher::default()
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// Outbound calls by source since start, in `Source::ALL` order.
    pub fn counts(&self) -> [(Source, u64); 5] {
        let mut out = Source::ALL.map(|s| (s, 0));
        for ((_, n), c) in out.iter_mut().zip(&self.by_source) {
            *n = c.load(Ordering::Relaxed);
        }
        out
    }

    /// Inbound requests not tracked because the registry was full.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    /// Inbound requests tracked now (in flight, and answered within `linger`).
    pub fn tracked(&self) -> usize {
        self.registry().len()
    }

    pub fn report(&self) -> &Report {
        &self.report
    }

    fn count(&self, source: Source) {
        if let Some(c) = self.by_source.get(source as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An inbound request starts: `parent` is the context injected into it (our SERVER
    /// span). The returned guard marks it answered when dropped.
    #[allow(clippy::too_many_arguments)]
    pub fn inbound(
        self: &Arc<Self>,
        config: &StitchingConfig,
        route: Option<&Arc<str>>,
        uri: &Uri,
        headers: &HeaderMap,
        parent: TraceParent,
        now: Instant,
    ) -> Option<Tracked> {
        if !config.enabled {
            return None;
        }
        let evidence = InboundEvidence {
            route: evidence::route_key(route.map(|r| &**r)),
            tokens: evidence::tokens(uri, headers, &config.content_headers),
            arrived: now,
        };
        let entry = Entry::new(parent, evidence, route.cloned());
        let mut registry = self.registry();
        let mut model = lock(&self.model);
        registry.expire(now, config.linger, |e| {
            model.request_done(e, config.max_models)
        });
        model.saw_inbound(&evidence.tokens);
        drop(model);
        if !registry.insert(entry, config.max_inflight) {
            self.untracked.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Tracked {
            stitcher: self.clone(),
            kind: TrackedKind::Inbound(parent.parent_id),
        })
    }

    /// An outbound call starts, carrying `forwarded` (its valid `traceparent`, if any).
    pub fn outbound(
        self: &Arc<Self>,
        config: &StitchingConfig,
        route: Option<&Arc<str>>,
        uri: &Uri,
        headers: &HeaderMap,
        forwarded: Option<TraceParent>,
        now: Instant,
    ) -> Resolution {
        if !config.enabled {
            let source = if forwarded.is_some() {
                Source::Forwarded
            } else {
                Source::None
            };
            self.count(source);
            return Resolution {
                parent: forwarded,
                source: Some(source),
                ..Resolution::default()
            };
        }
        let call = CallEvidence {
            dest: evidence::route_key(route.map(|r| &**r)),
            tokens: evidence::tokens(uri, headers, &config.content_headers),
            at: now,
        };
        let resolution = self.decide(config, &call, forwarded);
        if let Some(source) = resolution.source {
            self.count(source);
            if source != Source::Forwarded {
                self.report.record(
                    resolution
                        .inferred
                        .as_ref()
                        .and_then(|i| i.parent_route.clone()),
                    route.cloned(),
                );
            }
        }
        Resolution {
            inferred: resolution.inferred.map(|i| Inferred {
                stitcher: self.clone(),
                source: i.source,
                confidence: i.confidence,
                parent: i.parent,
                links: i.links,
            }),
            tracked: resolution.tracked.map(|kind| Tracked {
                stitcher: self.clone(),
                kind,
            }),
            parent: resolution.parent,
            source: resolution.source,
        }
    }

    /// The decision, under the registry and model locks.
    fn decide(
        &self,
        config: &StitchingConfig,
        call: &CallEvidence,
        forwarded: Option<TraceParent>,
    ) -> Decision {
        let (now, dest) = (call.at, call.dest);
        let mut registry = self.registry();
        let mut model = lock(&self.model);
        registry.expire(now, config.linger, |e| {
            model.request_done(e, config.max_models)
        });

        if let Some(parent) = forwarded {
            model.saw_call(dest, false, config.max_models);
            let tracked = registry.get_mut(parent.parent_id).map(|entry| {
                model.learn(example(entry, call), config.max_models);
                entry.record_call(dest, now);
                TrackedKind::Call(parent.parent_id)
            });
            return Decision {
                parent: Some(parent),
                source: Some(Source::Forwarded),
                tracked,
                ..Decision::default()
            };
        }

        let mut candidates = Candidates::default();
        registry.candidates(config.max_candidates, &mut candidates);
        let any_in_flight = candidates
            .as_slice()
            .iter()
            .any(|&i| registry.entry(i).is_some_and(|e| e.ended.is_none()));
        // The request answered last is a candidate when nothing is in flight, or when its
        // route makes calls after answering (such calls often start before the answer is
        // seen, and are then learned as made during the request: hence not required alone).
        candidates.retain(|i| match registry.entry(i) {
            Some(e) if e.ended.is_some() => {
                !any_in_flight || model.calls_after_answering(e, dest) == Some(true)
            }
            Some(_) => true,
            None => false,
        });
        model.saw_call(dest, candidates.is_empty(), config.max_models);

        let [only] = candidates.as_slice() else {
            return if candidates.is_empty() {
                Decision {
                    source: Some(Source::None),
                    ..Decision::default()
                }
            } else {
                score(&mut registry, &model, config, call, candidates.as_slice())
            };
        };
        // The only candidate is the parent, unless its route's learned model finds the call
        // unlikely for it (a background call while one request is in flight): then it is
        // scored like any other, against "none of them", and linked if not sure.
        let Some(entry) = registry.entry(*only) else {
            return Decision::default();
        };
        let confidence = if model.is_learned(entry) {
            posterior(&model, call, entry)
        } else {
            1.0
        };
        if confidence < config.min_confidence {
            return score(&mut registry, &model, config, call, candidates.as_slice());
        }
        let Some(entry) = registry.entry_mut(*only) else {
            return Decision::default();
        };
        model.learn(example(entry, call), config.max_models);
        entry.record_call(dest, now);
        Decision {
            parent: Some(entry.parent),
            source: Some(Source::Single),
            inferred: Some(Choice {
                source: Source::Single,
                confidence,
                parent: Some(entry.id()),
                parent_route: entry.route_name.clone(),
                links: [None; MAX_LINKS],
            }),
            tracked: Some(TrackedKind::Call(entry.id())),
        }
    }

    /// Whether the inbound request `id` is still unanswered.
    fn in_flight(&self, id: SpanId) -> bool {
        self.registry().is_in_flight(id)
    }
}

#[derive(Debug, Default)]
struct Decision {
    parent: Option<TraceParent>,
    source: Option<Source>,
    inferred: Option<Choice>,
    tracked: Option<TrackedKind>,
}

#[derive(Debug)]
struct Choice {
    source: Source,
    confidence: f64,
    parent: Option<SpanId>,
    parent_route: Option<Arc<str>>,
    links: Links,
}

fn example(entry: &Entry, call: &CallEvidence) -> Example {
    let phase = entry.phase();
    Example {
        route: entry.evidence.route,
        dest: call.dest,
        phase,
        index: entry.made(call.dest, phase),
        gap: entry.gap(call.at),
        shared: call.tokens.shared(entry.tokens()).next().is_some(),
    }
}

/// One candidate's posterior against "none of them".
fn posterior(model: &Model, call: &CallEvidence, entry: &Entry) -> f64 {
    let background = f64::from(model.background(call.dest));
    let l = f64::from(model.likelihood(entry, call.dest, &call.tokens, entry.gap(call.at)));
    let w = (1.0 - background) * l;
    w / (w + background)
}

/// Tier 3: each candidate's posterior, against "none of them" (background calls).
fn score(
    registry: &mut Registry,
    model: &Model,
    config: &StitchingConfig,
    call: &CallEvidence,
    candidates: &[usize],
) -> Decision {
    let background = f64::from(model.background(call.dest));
    let prior = (1.0 - background) / candidates.len() as f64;
    // (candidate order, registry index, weight), on the stack.
    let mut buf = [(0usize, 0usize, 0.0f64); MAX_CANDIDATES];
    let mut n = 0;
    for &i in candidates {
        let Some(e) = registry.entry(i) else { continue };
        let l = model.likelihood(e, call.dest, &call.tokens, e.gap(call.at));
        if let Some(slot) = buf.get_mut(n) {
            *slot = (n, i, prior * f64::from(l));
            n += 1;
        }
    }
    let weights = buf.get_mut(..n).unwrap_or_default();
    let total: f64 = background + weights.iter().map(|(_, _, w)| w).sum::<f64>();
    // Heaviest first; equal weights keep the candidates' order (newest first), as a
    // stable sort would, without the buffer a stable sort may allocate.
    weights.sort_unstable_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    let confidence = |w: f64| if total > 0.0 { w / total } else { 0.0 };
    let Some(&(_, best, best_weight)) = weights.first() else {
        return Decision::default();
    };
    let top = confidence(best_weight);
    if top >= config.min_confidence {
        let Some(entry) = registry.entry_mut(best) else {
            return Decision::default();
        };
        entry.record_call(call.dest, call.at);
        return Decision {
            parent: Some(entry.parent),
            source: Some(Source::Model),
            inferred: Some(Choice {
                source: Source::Model,
                confidence: top,
                parent: Some(entry.id()),
                parent_route: entry.route_name.clone(),
                links: [None; MAX_LINKS],
            }),
            tracked: Some(TrackedKind::Call(entry.id())),
        };
    }
    let mut links = [None; MAX_LINKS];
    let top_links = weights
        .iter()
        .map(|&(_, i, w)| (i, confidence(w)))
        .take(MAX_LINKS)
        .filter_map(|(i, c)| Some((registry.entry(i)?.parent, c)));
    for (slot, link) in links.iter_mut().zip(top_links) {
        *slot = Some(link);
    }
    Decision {
        parent: None,
        source: Some(Source::Linked),
        inferred: Some(Choice {
            source: Source::Linked,
            confidence: top,
            parent: None,
            parent_route: None,
            links,
        }),
        tracked: None,
    }
}

impl Inferred {
    /// Adds the `hoptrace.parent.*` attributes and, when not sure, the links.
    pub fn annotate(&self, span: &mut SpanRecord) {
        let attr = |key, value| Attribute { key, value };
        let inferred = self.source != Source::Linked;
        let method = match self.source {
            Source::Single => "single_inflight",
            Source::Model => "model",
            _ => "linked",
        };
        span.attributes.extend([
            attr("hoptrace.parent.inferred", AttributeValue::Bool(inferred)),
            attr("hoptrace.parent.method", AttributeValue::Str(method)),
            attr(
                "hoptrace.parent.confidence",
                AttributeValue::F64(self.confidence),
            ),
        ]);
        span.links
            .extend(self.links.iter().flatten().map(|(p, c)| SpanLink {
                trace_id: p.trace_id,
                span_id: p.parent_id,
                flags: p.flags,
                tracestate: None,
                remote: false,
                attributes: vec![
                    attr("hoptrace.link.confidence", AttributeValue::F64(*c)),
                    attr("hoptrace.link.method", AttributeValue::Str("model")),
                ],
            }));
    }

    /// When the call ends: an inferred parent that was answered before the call ended did
    /// not contain it (fire-and-forget after the response).
    pub fn check_contained(&self, span: &mut SpanRecord) {
        if let Some(parent) = self.parent {
            if !self.stitcher.in_flight(parent) {
                span.attributes.push(Attribute {
                    key: "hoptrace.parent.contains_call",
                    value: AttributeValue::Bool(false),
                });
            }
        }
    }
}
