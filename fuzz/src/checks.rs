//! What each fuzz target checks, one function per target, on one input. Kept apart from the
//! libFuzzer entry points so that the main crate's test suite replays the committed corpora
//! through the same checks (`tests/fuzz_corpus.rs`) without libFuzzer or a nightly toolchain.
//!
//! Adding a target: a function here, a file in `fuzz_targets/` calling it, a `[[bin]]` in
//! `Cargo.toml`, a seed directory in `corpus/`, and a line in `tests/fuzz_corpus.rs`.

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
