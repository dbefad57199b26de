//! What each fuzz target checks, one function per target, on one input. Kept apart from the
//! libFuzzer entry points so that the main crate's test suite replays the committed corpora
//! through the same checks (`tests/integration/fuzz_corpus.rs`) without libFuzzer or a nightly toolchain.
//!
//! Adding a target: a function here, a file in `fuzz_targets/` calling it, a `[[bin]]` in
//! `Cargo.toml`, a seed directory in `corpus/`, and a line in `tests/integration/fuzz_corpus.rs`.

use hoptrace::config::Config;
use hoptrace::trace::context::{TRACEPARENT, TRACESTATE, TraceParent, extract};
use hoptrace::trace::tracestate::{MAX_LEN, MAX_MEMBERS, TraceState};
use http::{HeaderMap, HeaderValue};

/// `traceparent` on arbitrary bytes: never panics, and whatever parses formats back to a
/// value that parses to the same context.
pub fn traceparent(data: &[u8]) {
    if let Ok(parent) = TraceParent::parse(data) {
        let formatted = parent.format();
        assert_eq!(TraceParent::parse(&formatted), Ok(parent));
        assert!(parent.trace_id.is_valid() && parent.parent_id.is_valid());
    }
}

/// `tracestate` on arbitrary bytes, one header line per `\n`-separated part: never panics,
/// keeps at most 32 members and 512 characters (or what it was given, if shorter), and what
/// it keeps is itself a valid `tracestate` with the same members. Also runs the
/// request-level `extract` with a valid `traceparent`, which must survive any `tracestate`.
pub fn tracestate(data: &[u8]) {
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if let Ok(Some(state)) = TraceState::parse(&lines) {
        assert!(state.len() <= MAX_MEMBERS);
        assert!(state.as_bytes().len() <= MAX_LEN.max(data.len()));
        let again = TraceState::parse(&[state.as_bytes()]);
        assert_eq!(again.map(|s| s.map(|s| s.len())), Ok(Some(state.len())));
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        TRACEPARENT,
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    for line in lines {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(TRACESTATE, value);
        }
    }
    assert!(extract(&headers).parent.is_some());
}

/// Config parsing and validation on arbitrary text: never panics, and a rejected file has
/// at least one error, each with a message.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = Config::from_toml_str(text) {
        assert!(!errors.is_empty());
        assert!(errors.iter().all(|e| !e.to_string().is_empty()));
    }
}

/// The B3 (single and multi header), Jaeger and X-Ray parsers on arbitrary bytes, and the
/// request-level extract over all five formats with the input split on `\n` into the
/// formats' headers: never panics; a context that extracts, injected alone in each format
/// and extracted again by that format, keeps its trace id and span id.
pub fn propagation(data: &[u8]) {
    use hoptrace::trace::propagation::{
        self as p, B3, Format, Outgoing, UBER_TRACE_ID, X_AMZN_TRACE_ID, X_B3_FLAGS,
        X_B3_PARENTSPANID, X_B3_SAMPLED, X_B3_SPANID, X_B3_TRACEID, b3, jaeger, xray,
    };
    let _ = b3::parse_single(data);
    let _ = jaeger::parse(data);
    let _ = xray::parse(data);

    let names = [
        B3,
        X_B3_TRACEID,
        X_B3_SPANID,
        X_B3_SAMPLED,
        X_B3_FLAGS,
        X_B3_PARENTSPANID,
        UBER_TRACE_ID,
        X_AMZN_TRACE_ID,
        TRACEPARENT,
    ];
    let mut headers = HeaderMap::new();
    for (name, part) in names.iter().zip(data.split(|&b| b == b'\n')) {
        if let Ok(value) = HeaderValue::from_bytes(part) {
            headers.append(name.clone(), value);
        }
    }
    let all = [
        Format::TraceContext,
        Format::B3,
        Format::B3Multi,
        Format::Jaeger,
        Format::XRay,
    ];
    let incoming = p::extract(&headers, all);
    let Some(remote) = incoming.remote else {
        return;
    };
    let Some(span_id) = remote.span_id else {
        return;
    };
    for format in all {
        let out = Outgoing {
            trace_id: remote.trace_id,
            span_id,
            flags: remote.flags,
            debug: remote.debug,
            short_trace_id: remote.short_trace_id,
            tracestate: None,
            xray: None,
        };
        let mut written = HeaderMap::new();
        p::inject(&mut written, [format], &out);
        let again = p::extract(&written, [format]).remote;
        let again = again.unwrap_or_else(|| panic!("{format:?}: injected context not read back"));
        assert_eq!(again.trace_id, remote.trace_id, "{format:?}");
        assert_eq!(again.span_id, Some(span_id), "{format:?}");
    }
}
