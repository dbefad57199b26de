//! The sampling decision, made once per trace at the hop that starts it and inherited by
//! every hop after it (parent-based).
//!
//! New roots are sampled by trace id with the OpenTelemetry `TraceIdRatioBased` rule (the
//! lower 63 bits of the trace id's last 8 bytes against `ratio × 2^63`), so every hop and
//! every OpenTelemetry SDK with the same ratio decides the same way for the same trace.

use super::context::{TraceFlags, TraceId};

/// How to decide.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampler {
    /// Probability for a trace id to be sampled, 0.0-1.0.
    pub ratio: f64,
    /// A parent's sampled flag decides when there is a parent.
    pub parent_based: bool,
}

impl Sampler {
    /// The flags of this hop's span: the parent's flags (unknown bits kept) with the sampled
    /// bit set by the decision. `parent` is the flags of a parent that made a decision.
    pub fn decide(&self, parent: Option<TraceFlags>, trace_id: &TraceId) -> TraceFlags {
        match parent {
            Some(flags) if self.parent_based => flags,
            Some(flags) => flags.with_sampled(ratio_sampled(self.ratio, trace_id)),
            None => TraceFlags::default().with_sampled(ratio_sampled(self.ratio, trace_id)),
        }
    }
}

/// OpenTelemetry `TraceIdRatioBased`: sampled when the trace id's low 63 bits (of its last 8
/// bytes, big-endian) are below `ratio × 2^63`.
pub fn ratio_sampled(ratio: f64, trace_id: &TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    let low = (trace_id.to_u128() as u64) >> 1;
    low < bound
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::trace::context::{SpanId, TraceParent};

    fn id(low: u64) -> TraceId {
        TraceId(((7u128 << 64) | low as u128).to_be_bytes())
    }

    #[test]
    fn ratio_uses_the_low_bits_like_opentelemetry() {
        assert!(ratio_sampled(0.5, &id(0)));
        assert!(ratio_sampled(0.5, &id((1 << 63) - 2)));
        assert!(!ratio_sampled(0.5, &id(1 << 63)));
        assert!(!ratio_sampled(0.5, &id(u64::MAX)));
        assert!(ratio_sampled(1.0, &id(u64::MAX)));
        assert!(!ratio_sampled(0.0, &id(0)));
        // About the asked fraction of random ids.
        let hits = (0..10_000)
            .filter(|_| ratio_sampled(0.25, &TraceId::random()))
            .count();
        assert!((2_000..3_000).contains(&hits), "{hits}");
    }

    #[test]
    fn parent_decides_and_unknown_flags_are_kept() {
        let sampler = Sampler {
            ratio: 0.0,
            parent_based: true,
        };
        let parent = TraceParent {
            trace_id: id(u64::MAX),
            parent_id: SpanId([1; 8]),
            flags: TraceFlags(0x81),
        };
        assert_eq!(
            sampler.decide(Some(parent.flags), &parent.trace_id),
            TraceFlags(0x81)
        );
        let unsampled = TraceParent {
            flags: TraceFlags(0x80),
            ..parent
        };
        let always = Sampler {
            ratio: 1.0,
            parent_based: true,
        };
        assert_eq!(
            always.decide(Some(unsampled.flags), &parent.trace_id),
            TraceFlags(0x80)
        );
        // Not parent-based: the ratio decides, the other bits stay.
        let ratio_only = Sampler {
            ratio: 1.0,
            parent_based: false,
        };
        assert_eq!(
            ratio_only.decide(Some(unsampled.flags), &parent.trace_id),
            TraceFlags(0x81)
        );
        assert_eq!(sampler.decide(None, &id(0)), TraceFlags(0));
        assert_eq!(always.decide(None, &id(0)), TraceFlags(1));
    }
}
