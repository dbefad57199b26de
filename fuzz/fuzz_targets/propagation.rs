//! B3, B3 multi, Jaeger and X-Ray parsing on arbitrary bytes (see `checks::propagation`).
#![no_main]

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::propagation(data));
