//! Config parsing and validation on arbitrary text: never panics, and every error names a
//! message (the path may be empty only for whole-file errors such as syntax).
#![no_main]

use hoptrace::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = Config::from_toml_str(text) {
        assert!(!errors.to_string().is_empty());
    }
});
