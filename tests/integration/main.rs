//! The integration tests, one test binary: real upstreams, the real proxy (in-process or
//! the binary), real OTLP receivers and clients on loopback ports. One binary instead of one
//! per file: each links the whole dependency tree (about 45 MiB in a test build), and CI has
//! a small disk. `tests/unsampled_alloc.rs` stays apart: its global allocator counts.

#[path = "../common/certs.rs"]
mod certs;
#[path = "../common/mod.rs"]
mod common;
#[path = "../common/eval.rs"]
mod eval;
#[path = "../common/prom.rs"]
mod prom;
#[path = "../common/reload.rs"]
mod reload_common;
#[path = "../common/tls_client.rs"]
mod tls_client;

mod access_log_text;
mod admin_config;
mod admin_export_metrics;
mod admin_metrics;
mod admin_ready;
mod admin_traces;
mod binary;
mod collector_memory;
mod config_files;
mod demo;
mod deploy;
mod error_spans;
mod errors;
mod export_retry;
mod faults;
mod fuzz_corpus;
mod hostile;
mod logs;
mod otlp_receiver;
mod propagation;
mod proxy_http;
mod python_interop;
mod reload;
mod reload_settings;
mod reload_watch;
mod retries;
mod routing;
mod shutdown;
mod span_redaction;
mod stitching;
mod streaming;
mod tls;
mod tracing_chain;
mod tracing_context;
mod tracing_export;
mod tracing_tls;
mod websocket;
mod zipkin_export;
