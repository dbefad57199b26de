//! `tracestate` validation and truncation on arbitrary header lines (see `checks::tracestate`).
#![no_main]

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::tracestate(data));
