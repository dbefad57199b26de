//! hoptrace: an HTTP sidecar proxy that records every hop as OpenTelemetry spans.

pub mod admin;
pub mod app;
pub mod config;
pub mod demo;
pub mod export;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod stitch;
pub mod text;
pub mod tls;
pub mod trace;

/// Resolves once `stop` holds `true` (or its sender is gone). The guard `wait_for` returns is
/// dropped here, so callers' futures stay `Send`.
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
