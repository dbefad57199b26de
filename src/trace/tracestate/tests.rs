//! `tracestate` against the W3C trace-context Level 1 grammar (§3.3), plus a no-panic property
//! test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use proptest::prelude::*;

use super::*;

fn one(line: &str) -> Result<Option<TraceState>, ContextError> {
    TraceState::parse(&[line.as_bytes()])
}

fn valid(line: &str) -> TraceState {
    one(line)
        .unwrap_or_else(|e| panic!("{line:?}: {e}"))
        .unwrap()
}

#[test]
fn spec_examples_are_valid() {
    let ts = valid("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    assert_eq!(ts.len(), 2);
    assert!(!ts.is_empty());
    assert_eq!(ts.header_value(), "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    assert_eq!(valid("congo=t61rcWkgMzE").len(), 1);
}

#[test]
fn single_line_is_kept_as_received() {
    // Only the outer OWS goes; inner OWS and empty members are forwarded unchanged.
    let ts = valid("  a=1 , ,b=2\t");
    assert_eq!(ts.len(), 2);
    assert_eq!(ts.as_bytes(), b"a=1 , ,b=2");
}

#[test]
fn empty_lists_are_absent() {
    assert_eq!(TraceState::parse(&[]), Ok(None));
    assert_eq!(one(""), Ok(None));
    assert_eq!(one(" \t "), Ok(None));
    assert_eq!(one(" , ,,\t,"), Ok(None));
    assert_eq!(TraceState::parse(&[b"", b" , "]), Ok(None));
}

#[test]
fn empty_members_are_skipped() {
    let ts = valid("a=1,,b=2");
    assert_eq!(ts.len(), 2);
    assert_eq!(valid(",a=1,").len(), 1);
    assert_eq!(valid("a=1 ,\t, b=2").len(), 2);
}

#[test]
fn a_list_over_512_characters_is_cut_per_spec() {
    // §3.3.1.5: members over 128 characters go first, then members from the end.
    let big = format!("big={}", "x".repeat(200));
    let small: Vec<String> = (0..30)
        .map(|i| format!("k{i:02}={}", "v".repeat(20)))
        .collect();
    let line = format!("{},{big},{}", small[..2].join(","), small[2..].join(","));
    assert!(line.len() > MAX_LEN);
    let ts = valid(&line);
    assert!(ts.as_bytes().len() <= MAX_LEN);
    // 24-character members joined by ',': 20 of them fit in 512 (20*24 + 19 = 499).
    assert_eq!(ts.len(), 20);
    assert_eq!(ts.as_bytes(), small[..20].join(",").as_bytes());
    assert!(!ts.as_bytes().windows(4).any(|w| w == b"big="));

    // Spread over lines, the same rule applies to the combined list.
    let lines: Vec<&[u8]> = small.iter().map(|m| m.as_bytes()).collect();
    let ts = TraceState::parse(&lines).unwrap().unwrap();
    assert_eq!(ts.as_bytes(), small[..20].join(",").as_bytes());

    // Only large members: nothing is left, as if there were no tracestate.
    let large: Vec<String> = (0..5)
        .map(|i| format!("l{i}={}", "y".repeat(140)))
        .collect();
    assert_eq!(one(&large.join(",")), Ok(None));

    // Exactly 512 is kept whole, as received.
    let exact = format!("k0={}, k1={}", "z".repeat(249), "z".repeat(255));
    assert_eq!(exact.len(), MAX_LEN);
    assert_eq!(valid(&exact).as_bytes(), exact.as_bytes());
}

#[test]
fn huge_lists_are_parsed_in_one_pass_without_panicking() {
    // A megabyte of members (far over 32): rejected, not scanned quadratically.
    let huge: Vec<String> = (0..100_000).map(|i| format!("k{i}=v")).collect();
    assert_eq!(one(&huge.join(",")), Err(ContextError::TooManyMembers));
    assert_eq!(
        one(&"a=b,".repeat(250_000)),
        Err(ContextError::DuplicateKey)
    );
    // A megabyte of empty members and whitespace: no members at all.
    assert_eq!(one(&", \t".repeat(300_000)), Ok(None));
    // One member with a megabyte-long value: invalid (values are at most 256 characters).
    assert!(one(&format!("k={}", "v".repeat(1 << 20))).is_err());
}

#[test]
fn thirty_two_members_is_the_limit() {
    let members: Vec<String> = (0..33).map(|i| format!("k{i}=v{i}")).collect();
    let ok = members[..32].join(",");
    assert_eq!(valid(&ok).len(), 32);
    let too_many = members.join(",");
    assert_eq!(one(&too_many), Err(ContextError::TooManyMembers));
    assert_eq!(
        ContextError::TooManyMembers.to_string(),
        "tracestate: more than 32 members"
    );
    // Empty members do not count.
    let with_empties = format!("{ok},,, ,");
    assert_eq!(valid(&with_empties).len(), 32);
    // The limit is over the combined list.
    let first = members[..20].join(",");
    let second = members[20..].join(",");
    assert_eq!(
        TraceState::parse(&[first.as_bytes(), second.as_bytes()]),
        Err(ContextError::TooManyMembers)
    );
}

#[test]
fn duplicate_keys_are_invalid() {
    assert_eq!(one("a=1,b=2,a=3"), Err(ContextError::DuplicateKey));
    assert_eq!(one("a@x=1,a@x=2"), Err(ContextError::DuplicateKey));
    assert_eq!(
        TraceState::parse(&[b"a=1", b"a=1"]),
        Err(ContextError::DuplicateKey)
    );
    assert_eq!(
        ContextError::DuplicateKey.to_string(),
        "tracestate: duplicate key"
    );
    // Same tenant, different system (and vice versa) are different keys.
    assert_eq!(valid("a@x=1,a@y=2,b@x=3,a=4").len(), 4);
}

#[test]
fn simple_keys() {
    for key in [
        "a",
        "z",
        "a0",
        "a_-*/",
        "foo/bar",
        &format!("a{}", "b".repeat(255)),
    ] {
        assert_eq!(valid(&format!("{key}=v")).len(), 1, "{key}");
    }
    for key in [
        "",
        "A",
        "aB",
        "0a",
        "_a",
        "a.b",
        "a b",
        "a!",
        "é",
        &format!("a{}", "b".repeat(256)),
    ] {
        assert_eq!(
            one(&format!("{key}=v")),
            Err(ContextError::InvalidKey),
            "{key:?}"
        );
    }
    assert_eq!(
        ContextError::InvalidKey.to_string(),
        "tracestate: invalid key"
    );
}

#[test]
fn multi_tenant_keys() {
    for key in [
        "a@b",
        "0@b",
        "0tenant@system",
        "t_-*/@s0_-*/",
        &format!("t{}@s", "x".repeat(240)),
        &format!("t@s{}", "y".repeat(13)),
    ] {
        assert_eq!(valid(&format!("{key}=v")).len(), 1, "{key}");
    }
    for key in [
        "@b",
        "a@",
        "@",
        "a@0b",
        "a@B",
        "A@b",
        "_a@b",
        "a@b@c",
        &format!("t{}@s", "x".repeat(241)),
        &format!("t@s{}", "y".repeat(14)),
    ] {
        assert_eq!(
            one(&format!("{key}=v")),
            Err(ContextError::InvalidKey),
            "{key:?}"
        );
    }
}

#[test]
fn values() {
    for value in [
        "v",
        "t61rcWkgMzE",
        " leading-space",
        "in ner",
        "!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~",
        &"x".repeat(256),
    ] {
        assert_eq!(valid(&format!("k={value}")).len(), 1, "{value:?}");
    }
    for value in ["", "a=b", "tab\tinside", "\u{7f}", "é", &"x".repeat(257)] {
        assert_eq!(
            one(&format!("k={value}")),
            Err(ContextError::InvalidValue),
            "{value:?}"
        );
    }
    // A trailing space is OWS around the list-member, not part of the value.
    assert_eq!(valid("k=v  ,j=w").len(), 2);
    assert_eq!(one("k= "), Err(ContextError::InvalidValue));
    // Control characters.
    assert_eq!(
        TraceState::parse(&[b"k=a\x01b"]),
        Err(ContextError::InvalidValue)
    );
    assert_eq!(
        ContextError::InvalidValue.to_string(),
        "tracestate: invalid value"
    );
}

#[test]
fn members_need_an_equals_sign() {
    assert_eq!(one("novalue"), Err(ContextError::MissingEquals));
    assert_eq!(one("a=1,b"), Err(ContextError::MissingEquals));
}

#[test]
fn multiple_lines_are_combined_in_order() {
    let ts = TraceState::parse(&[b"rojo=00f067aa0ba902b7", b" ", b"congo=t61rcWkgMzE ", b","])
        .unwrap()
        .unwrap();
    assert_eq!(ts.len(), 2);
    assert_eq!(ts.header_value(), "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    let ts = TraceState::parse(&[b"b=2,a=1", b"c=3"]).unwrap().unwrap();
    assert_eq!(ts.header_value(), "b=2,a=1,c=3");
    // One line with members among empty ones is kept as that line.
    let ts = TraceState::parse(&[b"", b"x=1, y=2", b" , "])
        .unwrap()
        .unwrap();
    assert_eq!(ts.header_value(), "x=1, y=2");
    // An invalid member on any line invalidates the whole list.
    assert_eq!(
        TraceState::parse(&[b"a=1", b"B=2"]),
        Err(ContextError::InvalidKey)
    );
}

#[test]
fn from_header_values_reuses_a_single_line() {
    let mut map = http::HeaderMap::new();
    map.append("tracestate", HeaderValue::from_static("a=1 ,b=2"));
    let ts = TraceState::from_header_values(&map.get_all("tracestate"))
        .unwrap()
        .unwrap();
    assert_eq!(ts.header_value(), "a=1 ,b=2");
    map.append("tracestate", HeaderValue::from_static("c=3"));
    let ts = TraceState::from_header_values(&map.get_all("tracestate"))
        .unwrap()
        .unwrap();
    assert_eq!(ts.header_value(), "a=1 ,b=2,c=3");
    assert_eq!(ts.len(), 3);
}

proptest! {
    #[test]
    fn parse_never_panics_on_bytes(
        lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..4)
    ) {
        let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        if let Ok(Some(ts)) = TraceState::parse(&refs) {
            prop_assert!(ts.len() <= MAX_MEMBERS);
        }
    }

    #[test]
    fn parse_never_panics_near_the_valid_shape(
        lines in proptest::collection::vec("([ \t]?[a-z0-9@A_*/-]{0,6}=[ -~]{0,6}[ \t]?,?){0,40}", 0..3)
    ) {
        let refs: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        if let Ok(Some(ts)) = TraceState::parse(&refs) {
            prop_assert!(!ts.is_empty() && ts.len() <= MAX_MEMBERS);
            // A valid combined value re-parses to the same list.
            let again = TraceState::parse(&[ts.as_bytes()]).unwrap().unwrap();
            prop_assert_eq!(again.len(), ts.len());
        }
    }

    #[test]
    fn long_lists_are_cut_to_a_prefix_of_the_small_members(
        lengths in proptest::collection::vec(1usize..250, 1..32)
    ) {
        // Distinct keys k0, k1, ...; member i's value has the length drawn for it.
        let list: Vec<String> = lengths
            .iter()
            .enumerate()
            .map(|(i, len)| format!("k{i}={}", "v".repeat(*len)))
            .collect();
        let line = list.join(",");
        let ts = TraceState::parse(&[line.as_bytes()]).unwrap();
        let kept = ts.as_ref().map_or(&b""[..], TraceState::as_bytes);
        prop_assert!(kept.len() <= MAX_LEN);
        if line.len() <= MAX_LEN {
            prop_assert_eq!(kept, line.as_bytes());
        } else {
            // §3.3.1.5: large members dropped, then the list cut from the end: the result is
            // the longest prefix of the small members that fits.
            let small: Vec<&String> = list.iter().filter(|m| m.len() <= LARGE_MEMBER).collect();
            let mut expected = String::new();
            for m in small {
                let extra = m.len() + usize::from(!expected.is_empty());
                if expected.len() + extra > MAX_LEN {
                    break;
                }
                if !expected.is_empty() {
                    expected.push(',');
                }
                expected.push_str(m);
            }
            prop_assert_eq!(kept, expected.as_bytes());
        }
    }
}

#[test]
fn large_inputs_are_handled_in_linear_time() {
    // 1 MiB of empty members, and one enormous invalid key: each is a single pass.
    let commas = vec![b','; 1 << 20];
    assert_eq!(TraceState::parse(&[&commas]), Ok(None));
    let mut long_key = vec![b'a'; 1 << 20];
    long_key.extend_from_slice(b"=v");
    assert_eq!(
        TraceState::parse(&[&long_key]),
        Err(ContextError::InvalidKey)
    );
    let long_tp = vec![b'0'; 1 << 20];
    assert_eq!(
        crate::trace::context::TraceParent::parse(&long_tp),
        Err(ContextError::TrailingData)
    );
}
