//! Trace context and span data: W3C `traceparent` / `tracestate` parsing and formatting
//! (`context`), the B3, Jaeger and X-Ray formats (`propagation`), the sampling decision (`sampler`), and the plain-data `SpanRecord` the proxy
//! fills in on the request path. Imports nothing else of hoptrace's.

// No panics on the request path (STYLE rule 5).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod context;
pub mod hex;
pub mod propagation;
pub mod sampler;
pub mod span;
pub mod tracestate;
