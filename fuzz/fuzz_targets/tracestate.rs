//! `tracestate` on arbitrary bytes, one header line per `\n`-separated part: never panics,
//! keeps at most the spec's member count and length limit, and what it keeps is itself a
//! valid `tracestate` with the same members. Also runs the request-level `extract`.
#![no_main]

use hoptrace::trace::context::{TRACEPARENT, TRACESTATE, extract};
use hoptrace::trace::tracestate::{MAX_LEN, MAX_MEMBERS, TraceState};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
    let extracted = extract(&headers);
    assert!(extracted.parent.is_some());
});
