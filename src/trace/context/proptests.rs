//! Property tests for `traceparent` and `extract`: `parse(format(x)) == x` for every valid
//! value, and no panic on arbitrary bytes or strings near the valid shape.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use super::*;

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn any_traceparent() -> impl Strategy<Value = TraceParent> {
    (1..=u128::MAX, 1..=u64::MAX, any::<u8>()).prop_map(|(t, s, f)| TraceParent {
        trace_id: TraceId::from_u128(t),
        parent_id: SpanId::from_u64(s),
        flags: TraceFlags(f),
    })
}

proptest! {
    #[test]
    fn format_then_parse_round_trips(tp in any_traceparent()) {
        let formatted = tp.format();
        prop_assert_eq!(TraceParent::parse(&formatted), Ok(tp));
        prop_assert_eq!(TraceParent::parse(tp.to_header_value().as_bytes()), Ok(tp));
    }

    #[test]
    fn parse_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = TraceParent::parse(&bytes);
    }

    #[test]
    fn parse_never_panics_near_the_valid_shape(
        s in "[ \t]?[0-9a-fA-F-]{1,3}-[0-9a-gA-G-]{30,34}-[0-9a-f-]{14,18}-[0-9a-fx-]{0,3}(-[ -~]{0,8})?[ \t]?"
    ) {
        if let Ok(tp) = TraceParent::parse(s.as_bytes()) {
            // Whatever parses must format back to its own version-00 prefix.
            let trimmed = s.trim_matches([' ', '\t']);
            prop_assert_eq!(&tp.format()[3..], &trimmed.as_bytes()[3..55]);
        }
    }

    #[test]
    fn mutated_valid_value_never_panics(at in 0usize..56, byte in any::<u8>(), cut in 0usize..60) {
        let mut bytes = VALID.as_bytes().to_vec();
        if let Some(b) = bytes.get_mut(at) {
            *b = byte;
        }
        bytes.truncate(cut);
        let _ = TraceParent::parse(&bytes);
    }

    #[test]
    fn extract_never_panics(
        tp in "[ -~]{0,70}",
        ts in proptest::collection::vec("[ -~]{0,40}", 0..4),
    ) {
        let mut map = HeaderMap::new();
        map.append(TRACEPARENT, HeaderValue::from_str(&tp).unwrap());
        for line in &ts {
            map.append(TRACESTATE, HeaderValue::from_str(line).unwrap());
        }
        let got = extract(&map);
        prop_assert!(got.parent.is_some() || got.tracestate.is_none());
    }
}
