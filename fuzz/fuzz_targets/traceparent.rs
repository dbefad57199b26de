//! `traceparent` parsing on arbitrary bytes: never panics, and whatever parses formats back
//! to a value that parses to the same context.
#![no_main]

use hoptrace::trace::context::TraceParent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parent) = TraceParent::parse(data) {
        let formatted = parent.format();
        assert_eq!(TraceParent::parse(&formatted), Ok(parent));
        assert!(parent.trace_id.is_valid() && parent.parent_id.is_valid());
    }
});
