//! Each format against its spec's examples and edge cases; extract order; inject.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use http::{HeaderMap, HeaderValue};

use super::b3::{B3 as B3Found, MultiHeaders, parse_multi, parse_single};
use super::*;

const T128: &str = "80f198ee56343ba864fe8b2a57d3eff7";
const T64: &str = "463ac35c9f6413ad";
const S: &str = "e457b5a2e4d86bd1";
const P: &str = "05e3ac9a4f6e3b90";

fn remote(found: B3Found) -> Remote {
    match found {
        B3Found::Context(r) => r,
        other => panic!("not a context: {other:?}"),
    }
}

#[test]
fn b3_single_spec_examples() {
    let r = remote(parse_single(format!("{T128}-{S}-1-{P}").as_bytes()).unwrap());
    assert_eq!(r.trace_id.to_string(), T128);
    assert_eq!(r.span_id.unwrap().to_string(), S);
    assert_eq!(
        (r.sampled, r.debug, r.short_trace_id),
        (Some(true), false, false)
    );

    let r = remote(parse_single(format!("{T64}-{S}-d").as_bytes()).unwrap());
    assert_eq!(r.trace_id.to_string(), format!("0000000000000000{T64}"));
    assert!(r.short_trace_id && r.debug);
    assert_eq!(r.sampled, Some(true));

    // Deferred: no sampling state.
    let r = remote(parse_single(format!("{T64}-{S}").as_bytes()).unwrap());
    assert_eq!(r.sampled, None);

    assert_eq!(
        parse_single(b"0").unwrap(),
        B3Found::Decision {
            sampled: false,
            debug: false
        }
    );
    assert_eq!(
        parse_single(b"d").unwrap(),
        B3Found::Decision {
            sampled: true,
            debug: true
        }
    );
}

#[test]
fn b3_single_rejects_what_the_spec_does_not_allow() {
    for bad in [
        String::new(),
        "2".into(),
        "true".into(),
        format!("{}-{S}-1", T128.to_uppercase()),
        format!("{T128}-{}-1", S.to_uppercase()),
        format!("{}-{S}-1", &T128[..31]),
        format!("{T64}0-{S}-1"),
        format!("{T128}-{S}-"),
        format!("{T128}-{S}-x"),
        format!("{T128}-{S}-1-{P}-extra"),
        format!("{T128}-{S}-1-zz"),
        format!("{}-{S}-1", "0".repeat(32)),
        format!("{T128}-{}-1", "0".repeat(16)),
        T128.to_string(),
        format!("{T128}-{S}-true"),
    ] {
        assert!(parse_single(bad.as_bytes()).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn b3_multi_spec_rules() {
    let h = |t: Option<&'static str>,
             s: Option<&'static str>,
             smp: Option<&'static str>,
             f: Option<&'static str>| {
        parse_multi(MultiHeaders {
            trace_id: t.map(str::as_bytes),
            span_id: s.map(str::as_bytes),
            parent_span_id: None,
            sampled: smp.map(str::as_bytes),
            flags: f.map(str::as_bytes),
        })
    };
    let r = remote(h(Some(T64), Some(S), Some("1"), None).unwrap().unwrap());
    assert!(r.short_trace_id);
    assert_eq!(r.sampled, Some(true));
    // Older tracers sent true/false; the spec says accept them.
    let r = remote(
        h(Some(T128), Some(S), Some("false"), None)
            .unwrap()
            .unwrap(),
    );
    assert_eq!(r.sampled, Some(false));
    // Debug implies sampled.
    let r = remote(h(Some(T128), Some(S), None, Some("1")).unwrap().unwrap());
    assert_eq!((r.sampled, r.debug), (Some(true), true));
    assert_eq!(h(None, None, None, None).unwrap(), None);
    assert_eq!(
        h(None, None, Some("0"), None).unwrap(),
        Some(B3Found::Decision {
            sampled: false,
            debug: false
        })
    );
    assert!(h(Some(T128), None, Some("1"), None).is_err());
    assert!(h(None, Some(S), Some("1"), None).is_err());
    assert!(h(Some(T128), Some(S), Some("yes"), None).is_err());
}

#[test]
fn jaeger_examples_and_edges() {
    let r = jaeger::parse(format!("{T128}:{S}:0:1").as_bytes()).unwrap();
    assert_eq!(r.trace_id.to_string(), T128);
    assert_eq!(
        (r.sampled, r.debug, r.short_trace_id),
        (Some(true), false, false)
    );
    // No leading zeros needed; URL-encoded; debug flag.
    let r = jaeger::parse(b"abc%3A1f%3a0%3A3").unwrap();
    assert_eq!(r.trace_id.to_u128(), 0xabc);
    assert_eq!(r.span_id.unwrap().to_u64(), 0x1f);
    assert!(r.short_trace_id && r.debug);
    let r = jaeger::parse(format!("{T64}:{S}:{P}:00").as_bytes()).unwrap();
    assert_eq!(r.sampled, Some(false));
    for bad in [
        "",
        "1:2:3",
        "1:2:3:4:5",
        "0:1:0:1",
        "1:0:0:1",
        "1:1:0:100",
        "g:1:0:1",
        "1:1::1",
        "%zz:1:0:1",
        "1%3:1:0:1",
    ] {
        assert!(jaeger::parse(bad.as_bytes()).is_err(), "{bad:?} accepted");
    }
    let long = format!("{}:{S}:0:1", "1".repeat(33));
    assert!(jaeger::parse(long.as_bytes()).is_err());
    assert!(jaeger::parse(&vec![b'%'; 10_000]).is_err());
}

#[test]
fn xray_examples_and_edges() {
    let v = b"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    let r = xray::parse(v).unwrap();
    assert_eq!(r.trace_id.to_string(), "5759e988bd862e3fe1be46a994272793");
    assert_eq!(r.span_id.unwrap().to_string(), "53995c3f42cd8ad8");
    assert_eq!(r.sampled, Some(true));
    // Any order, spaces, unknown fields; Sampled=? defers.
    let r = xray::parse(
        b"Self=1-67891233-abcdef012345678912345678; Sampled=?; Root=1-5759e988-bd862e3fe1be46a994272793;Lineage=a87bd80c:0",
    )
    .unwrap();
    assert_eq!((r.span_id, r.sampled), (None, None));
    for bad in [
        &b""[..],
        b"Parent=53995c3f42cd8ad8",
        b"Root=2-5759e988-bd862e3fe1be46a994272793",
        b"Root=1-5759e98-bd862e3fe1be46a994272793",
        b"Root=1-5759E988-bd862e3fe1be46a994272793",
        b"Root=1-5759e988-bd862e3fe1be46a99427279",
        b"Root=1-00000000-000000000000000000000000",
        b"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0000000000000000",
        b"Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=yes",
        b"Root=1-5759e988-bd862e3fe1be46a994272793;Root=1-5759e988-bd862e3fe1be46a994272793",
        b"Root=1-5759e988-bd862e3fe1be46a994272793;junk",
    ] {
        assert!(
            xray::parse(bad).is_err(),
            "{:?} accepted",
            String::from_utf8_lossy(bad)
        );
    }
    let out = xray::format(
        r.trace_id,
        SpanId::from_u64(0xab),
        false,
        Some(b"Self=1-1-1;Root=1-5759e988-bd862e3fe1be46a994272793;Lineage=a87bd80c:0;Foo=bar"),
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=00000000000000ab;Sampled=0;Lineage=a87bd80c:0;Foo=bar"
    );
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

const ALL: &[Format] = &[
    Format::TraceContext,
    Format::B3,
    Format::B3Multi,
    Format::Jaeger,
    Format::XRay,
];

#[test]
fn first_valid_format_in_the_configured_order_wins() {
    let tp = format!("00-{T128}-{S}-01");
    let h = headers(&[
        ("traceparent", &tp),
        ("tracestate", "a=1"),
        ("b3", &format!("{T64}-{P}-0")),
    ]);
    let got = extract(&h, [Format::B3, Format::TraceContext]);
    assert_eq!(got.format, Some(Format::B3));
    assert_eq!(got.remote.unwrap().span_id.unwrap().to_string(), P);
    // tracestate belonged to another trace.
    assert_eq!(got.tracestate, None);
    let got = extract(&h, [Format::TraceContext, Format::B3]);
    assert_eq!(got.format, Some(Format::TraceContext));
    assert_eq!(got.tracestate.unwrap(), "a=1");

    // An invalid first format falls through to the next and is reported.
    let h = headers(&[
        ("b3", "nonsense"),
        ("uber-trace-id", &format!("{T128}:{S}:0:1")),
    ]);
    let got = extract(&h, ALL.iter().copied());
    assert_eq!(got.format, Some(Format::Jaeger));
    assert!(matches!(got.error, Some(ExtractError::Other(m)) if m.format == "b3"));
    assert_eq!(got.invalid_formats().collect::<Vec<_>>(), [Format::B3]);
    let h = headers(&[
        ("b3", "nonsense"),
        ("traceparent", "00-zz"),
        ("x-b3-spanid", S),
    ]);
    let got = extract(&h, ALL.iter().copied());
    assert_eq!(
        got.invalid_formats().map(Format::name).collect::<Vec<_>>(),
        ["tracecontext", "b3", "b3multi"]
    );

    // An invalid X-Ray header's fields are not kept for passing on.
    let h = headers(&[("x-amzn-trace-id", "Root=1-junk;Lineage=a:1")]);
    assert!(extract(&h, [Format::XRay]).xray.is_none());
    let h = headers(&[(
        "x-amzn-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Lineage=a:1",
    )]);
    assert!(extract(&h, [Format::XRay]).xray.is_some());

    // A header sent twice is invalid.
    let h = headers(&[("b3", &format!("{T64}-{S}")), ("b3", &format!("{T64}-{S}"))]);
    assert!(extract(&h, ALL.iter().copied()).remote.is_none());

    // Not configured: not read.
    let h = headers(&[("uber-trace-id", &format!("{T128}:{S}:0:1"))]);
    assert!(extract(&h, [Format::TraceContext]).remote.is_none());
}

#[test]
fn inject_writes_every_configured_format_in_its_width() {
    let mut h = headers(&[
        ("x-b3-parentspanid", P),
        ("x-b3-sampled", "1"),
        ("uberctx-user", "alice"),
        ("baggage", "k=v"),
    ]);
    let xray_in = HeaderValue::from_static("Root=1-5759e988-bd862e3fe1be46a994272793;Lineage=x:1");
    let out = Outgoing {
        trace_id: TraceId::from_u128(0x463a_c35c_9f64_13ad),
        span_id: SpanId::from_u64(0xe457_b5a2_e4d8_6bd1),
        flags: TraceFlags(1),
        debug: true,
        short_trace_id: true,
        tracestate: None,
        xray: Some(&xray_in),
    };
    inject(&mut h, ALL.iter().copied(), &out);
    assert_eq!(h["traceparent"], format!("00-0000000000000000{T64}-{S}-01"));
    assert_eq!(h["b3"], format!("{T64}-{S}-d"));
    assert_eq!(h["x-b3-traceid"], T64);
    assert_eq!(h["x-b3-spanid"], S);
    assert_eq!(h["x-b3-flags"], "1");
    assert!(h.get("x-b3-sampled").is_none() && h.get("x-b3-parentspanid").is_none());
    assert_eq!(h["uber-trace-id"], format!("{T64}:{S}:0:3"));
    assert_eq!(
        h["x-amzn-trace-id"],
        format!("Root=1-00000000-00000000{T64};Parent={S};Sampled=1;Lineage=x:1")
    );
    assert_eq!(h["uberctx-user"], "alice");
    assert_eq!(h["baggage"], "k=v");

    // Round trip: what was injected extracts to the same context, in every format.
    for format in ALL {
        let got = extract(&h, [*format]);
        let r = got
            .remote
            .unwrap_or_else(|| panic!("{format:?}: {:?}", got.error));
        assert_eq!(r.trace_id, out.trace_id, "{format:?}");
        assert_eq!(r.span_id, Some(out.span_id), "{format:?}");
        assert_eq!(r.sampled, Some(true), "{format:?}");
    }
}
