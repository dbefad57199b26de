//! hoptrace: an HTTP sidecar proxy that records every hop as OpenTelemetry spans.

pub mod config;
