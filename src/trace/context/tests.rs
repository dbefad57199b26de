//! `traceparent` and `extract` against the W3C trace-context Level 1 examples and rules.
//! Property tests are in `proptests.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;
use http::{HeaderMap, HeaderValue};

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn parse(s: &str) -> Result<TraceParent, ContextError> {
    TraceParent::parse(s.as_bytes())
}

fn spec_example() -> TraceParent {
    TraceParent {
        trace_id: TraceId::from_u128(0x4bf92f3577b34da6a3ce929d0e0e4736),
        parent_id: SpanId::from_u64(0x00f067aa0ba902b7),
        flags: TraceFlags(0x01),
    }
}

#[test]
fn parses_the_spec_example() {
    let tp = parse(VALID).unwrap();
    assert_eq!(tp, spec_example());
    assert!(tp.flags.is_sampled());
    assert_eq!(tp.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(tp.parent_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(&tp.format()[..], VALID.as_bytes());
    assert_eq!(tp.to_header_value(), HeaderValue::from_static(VALID));
    assert_eq!(tp.to_string(), VALID);
}

#[test]
fn unsampled_spec_example() {
    let tp = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
    assert!(!tp.flags.is_sampled());
}

#[test]
fn unknown_flag_bits_are_kept() {
    let tp = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09").unwrap();
    assert_eq!(tp.flags, TraceFlags(0x09));
    assert!(tp.flags.is_sampled());
    assert!(tp.format().ends_with(b"-09"));
    let tp = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe").unwrap();
    assert_eq!(tp.flags, TraceFlags(0xfe));
    assert!(!tp.flags.is_sampled());
}

#[test]
fn surrounding_ows_is_trimmed() {
    assert_eq!(parse(&format!(" \t{VALID}\t ")), Ok(spec_example()));
}

#[test]
fn rejects_uppercase_hex() {
    use ContextError::*;
    let cases = [
        (
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            InvalidVersion,
        ),
        (
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            InvalidTraceId,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            InvalidParentId,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            InvalidFlags,
        ),
        (
            "FF-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            InvalidVersion,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(parse(input), Err(want), "{input}");
    }
}

#[test]
fn rejects_wrong_lengths() {
    use ContextError::*;
    let cases = [
        ("", TraceParentTooShort),
        ("0", TraceParentTooShort),
        ("00", TraceParentTooShort),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            TraceParentTooShort,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-",
            TraceParentTooShort,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            TraceParentTooShort,
        ),
        // trace-id one short, parent-id one long: the separators land in the wrong places.
        (
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            InvalidSeparator,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e47366-0f067aa0ba902b7-01",
            InvalidSeparator,
        ),
        (
            "000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            TrailingData,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-010",
            TrailingData,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0100",
            TrailingData,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(parse(input), Err(want), "{input:?}");
    }
}

#[test]
fn rejects_version_ff() {
    assert_eq!(
        parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        Err(ContextError::VersionFf)
    );
    assert_eq!(
        ContextError::VersionFf.to_string(),
        "traceparent: version ff is invalid"
    );
}

#[test]
fn rejects_all_zero_ids() {
    assert_eq!(
        parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Err(ContextError::ZeroTraceId)
    );
    assert_eq!(
        parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
        Err(ContextError::ZeroParentId)
    );
    assert_eq!(
        ContextError::ZeroTraceId.to_string(),
        "traceparent: all-zero trace-id"
    );
}

#[test]
fn rejects_bad_separators() {
    for input in [
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "00 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7 01",
    ] {
        assert_eq!(parse(input), Err(ContextError::InvalidSeparator), "{input}");
    }
}

#[test]
fn rejects_non_hex() {
    use ContextError::*;
    let cases = [
        (
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            InvalidVersion,
        ),
        (
            "-0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            InvalidVersion,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",
            InvalidTraceId,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b.-01",
            InvalidParentId,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            InvalidFlags,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7- 1",
            InvalidFlags,
        ),
        (
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            InvalidTraceId,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(parse(input), Err(want), "{input}");
    }
    // Non-ASCII bytes (obs-text) where hex belongs.
    let mut bytes = VALID.as_bytes().to_vec();
    bytes[10] = 0xe9;
    assert_eq!(TraceParent::parse(&bytes), Err(InvalidTraceId));
}

#[test]
fn higher_versions_parse_the_version_00_prefix() {
    let want = spec_example();
    let base = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(parse(&format!("01-{base}")), Ok(want));
    assert_eq!(parse(&format!("cc-{base}")), Ok(want));
    assert_eq!(parse(&format!("fe-{base}")), Ok(want));
    assert_eq!(parse(&format!("01-{base}-")), Ok(want));
    assert_eq!(
        parse(&format!("cc-{base}-what-the-future-will-be-like")),
        Ok(want)
    );
    assert_eq!(
        parse(&format!("01-{base}x")),
        Err(ContextError::ExtraFieldSeparator)
    );
    assert_eq!(
        parse(&format!("01-{base}0-xyz")),
        Err(ContextError::ExtraFieldSeparator)
    );
    assert_eq!(
        parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
        Err(ContextError::TraceParentTooShort)
    );
    // Higher versions still forbid all-zero ids.
    assert_eq!(
        parse("01-00000000000000000000000000000000-00f067aa0ba902b7-01-x"),
        Err(ContextError::ZeroTraceId)
    );
}

#[test]
fn version_00_with_extra_chars_is_invalid() {
    assert_eq!(parse(&format!("{VALID}-")), Err(ContextError::TrailingData));
    assert_eq!(
        parse(&format!("{VALID}-extra")),
        Err(ContextError::TrailingData)
    );
}

#[test]
fn ids_and_flags_helpers() {
    for _ in 0..1000 {
        assert!(TraceId::random().is_valid());
        assert!(SpanId::random().is_valid());
    }
    assert!(!TraceId([0; 16]).is_valid());
    assert!(!SpanId([0; 8]).is_valid());
    let id = TraceId::from_u128(0x0102030405060708090a0b0c0d0e0f10);
    assert_eq!(id.to_u128(), 0x0102030405060708090a0b0c0d0e0f10);
    assert_eq!(&id.to_hex(), b"0102030405060708090a0b0c0d0e0f10");
    let span = SpanId::from_u64(0xabcdef0123456789);
    assert_eq!(span.to_u64(), 0xabcdef0123456789);
    assert_eq!(&span.to_hex(), b"abcdef0123456789");
    assert_eq!(TraceFlags(0x08).with_sampled(true), TraceFlags(0x09));
    assert_eq!(TraceFlags(0x09).with_sampled(false), TraceFlags(0x08));
    assert_eq!(TraceFlags::default().0, 0);
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

#[test]
fn extract_nothing() {
    let got = extract(&headers(&[("tracestate", "a=1")]));
    assert_eq!(got.parent, None);
    assert_eq!(got.tracestate, None);
    assert_eq!(got.error, None);
}

#[test]
fn extract_valid_parent_and_state() {
    let got = extract(&headers(&[
        ("traceparent", VALID),
        ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
    ]));
    assert_eq!(got.parent, Some(spec_example()));
    let ts = got.tracestate.unwrap();
    assert_eq!(ts.len(), 2);
    assert_eq!(ts.header_value(), "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    assert_eq!(got.error, None);
}

#[test]
fn extract_combines_tracestate_lines() {
    let got = extract(&headers(&[
        ("traceparent", VALID),
        ("tracestate", "rojo=00f067aa0ba902b7"),
        ("tracestate", "congo=t61rcWkgMzE"),
    ]));
    let ts = got.tracestate.unwrap();
    assert_eq!(ts.len(), 2);
    assert_eq!(ts.header_value(), "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
}

#[test]
fn extract_two_traceparent_headers_is_invalid() {
    let got = extract(&headers(&[
        ("traceparent", VALID),
        ("traceparent", VALID),
        ("tracestate", "a=1"),
    ]));
    assert_eq!(got.parent, None);
    assert_eq!(got.tracestate, None);
    assert_eq!(got.error, Some(ContextError::MultipleTraceParent));
    assert_eq!(
        ContextError::MultipleTraceParent.to_string(),
        "traceparent: more than one header"
    );
}

#[test]
fn extract_invalid_traceparent_drops_tracestate() {
    let got = extract(&headers(&[
        (
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "a=1"),
    ]));
    assert_eq!(got.parent, None);
    assert_eq!(got.tracestate, None);
    assert_eq!(got.error, Some(ContextError::InvalidTraceId));
    let got = extract(&headers(&[("traceparent", ""), ("tracestate", "a=1")]));
    assert_eq!(got.parent, None);
    assert_eq!(got.tracestate, None);
    assert_eq!(got.error, Some(ContextError::TraceParentTooShort));
}

#[test]
fn extract_valid_parent_with_invalid_tracestate_keeps_parent() {
    let got = extract(&headers(&[
        ("traceparent", VALID),
        ("tracestate", "a=1"),
        ("tracestate", "a=2"),
    ]));
    assert_eq!(got.parent, Some(spec_example()));
    assert_eq!(got.tracestate, None);
    assert_eq!(got.error, Some(ContextError::DuplicateKey));
}

#[test]
fn extract_empty_tracestate_is_absent() {
    let got = extract(&headers(&[("traceparent", VALID), ("tracestate", " , ")]));
    assert_eq!(got.parent, Some(spec_example()));
    assert_eq!(got.tracestate, None);
    assert_eq!(got.error, None);
}
