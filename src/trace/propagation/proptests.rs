//! Property tests for every format: no panic on arbitrary bytes (or bytes near the valid
//! shape), and `parse(format(x)) == x` for arbitrary valid contexts.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use proptest::prelude::*;

use super::b3::{
    B3 as B3Found, MultiHeaders, SINGLE_MAX, format_single, parse_multi, parse_single,
};
use super::*;

/// (trace id, short, span id, sampled, debug) as a valid context of any width.
fn any_context() -> impl Strategy<Value = (TraceId, bool, SpanId, bool, bool)> {
    (
        any::<bool>(),
        1..=u128::MAX,
        1..=u64::MAX,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(short, t, s, sampled, debug)| {
            let t = if short { (t as u64).max(1) as u128 } else { t };
            (
                TraceId::from_u128(t),
                short,
                SpanId::from_u64(s),
                sampled,
                debug,
            )
        })
}

/// Bytes drawn mostly from each format's alphabet, so parsers get past their first check.
fn near(alphabet: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::sample::select(alphabet),
            1 => any::<u8>(),
        ],
        0..120,
    )
}

proptest! {
    #[test]
    fn parsers_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_single(&bytes);
        let _ = jaeger::parse(&bytes);
        let _ = xray::parse(&bytes);
        let _ = parse_multi(MultiHeaders {
            trace_id: Some(&bytes),
            span_id: Some(&bytes),
            parent_span_id: Some(&bytes),
            sampled: Some(&bytes),
            flags: Some(&bytes),
        });
        let _ = xray::passed_on(&bytes).count();
    }

    #[test]
    fn parsers_never_panic_near_the_valid_shape(
        b3 in near(b"0123456789abcdef-d"),
        jaeger in near(b"0123456789abcdefABCDEF:%3A"),
        xray in near(b"0123456789abcdef-;= RootParentSampled?1"),
    ) {
        let _ = parse_single(&b3);
        let _ = jaeger::parse(&jaeger);
        let _ = xray::parse(&xray);
    }

    #[test]
    fn b3_single_round_trips((trace, short, span, sampled, debug) in any_context()) {
        let mut buf = [0; SINGLE_MAX];
        let len = format_single(trace, short, span, sampled, debug, &mut buf);
        let B3Found::Context(r) = parse_single(&buf[..len]).unwrap() else { panic!() };
        prop_assert_eq!(r.trace_id, trace);
        prop_assert_eq!(r.short_trace_id, short);
        prop_assert_eq!(r.span_id, Some(span));
        prop_assert_eq!(r.sampled, Some(sampled || debug));
        prop_assert_eq!(r.debug, debug);
    }

    #[test]
    fn every_format_round_trips_through_headers((trace, short, span, sampled, debug) in any_context()) {
        let out = Outgoing {
            trace_id: trace,
            span_id: span,
            flags: TraceFlags::default().with_sampled(sampled || debug),
            debug,
            short_trace_id: short,
            tracestate: None,
            xray: None,
        };
        let formats = [Format::TraceContext, Format::B3, Format::B3Multi, Format::Jaeger, Format::XRay];
        let mut headers = HeaderMap::new();
        inject(&mut headers, formats, &out);
        for format in formats {
            let got = extract(&headers, [format]);
            let r = got.remote.unwrap();
            prop_assert_eq!(r.trace_id, trace);
            prop_assert_eq!(r.span_id, Some(span));
            prop_assert_eq!(r.sampled, Some(sampled || debug));
            if matches!(format, Format::B3 | Format::B3Multi | Format::Jaeger) {
                prop_assert_eq!(r.debug, debug);
                prop_assert_eq!(r.short_trace_id, short);
            }
        }
    }

    #[test]
    fn jaeger_accepts_any_width_and_case(t in 1..=u128::MAX, s in 1..=u64::MAX, flags in 0u8..=255, upper: bool, encode: bool) {
        let mut value = format!("{t:x}:{s:x}:0:{flags:x}");
        if upper { value = value.to_uppercase(); }
        if encode { value = value.replace(':', "%3A"); }
        let r = jaeger::parse(value.as_bytes()).unwrap();
        prop_assert_eq!(r.trace_id.to_u128(), t);
        prop_assert_eq!(r.span_id.unwrap().to_u64(), s);
        prop_assert_eq!(r.short_trace_id, format!("{t:x}").len() <= 16);
        prop_assert_eq!(r.debug, flags & 2 != 0);
        prop_assert_eq!(r.sampled, Some(flags & 3 != 0));
    }
}
