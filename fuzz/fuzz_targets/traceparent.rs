//! `traceparent` parsing on arbitrary bytes (see `checks::traceparent`).
#![no_main]

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::traceparent(data));
