//! A listener: accepts TCP connections and serves HTTP/1.1 and HTTP/2 (h2c prior knowledge)
//! on them, each request going to `forward::handle`. On stop it closes the socket and lets
//! open connections finish their requests, up to the grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::forward;
use super::server::{self, End, Limits, Settings, serve_connection};
use super::snapshot::Shared;
use crate::config::{ListenerConfig, Role};
use crate::export::SpanSink;
use crate::tls::Acceptor;

/// What every request of a listener shares.
#[derive(Debug)]
pub struct ListenerCtx {
    pub name: Arc<str>,
    pub role: Role,
    /// Position in `Config::listeners`, which is also its route table's index.
    pub index: usize,
    pub shared: Arc<Shared>,
    /// Where finished spans go.
    pub sink: SpanSink,
    /// Open client connections on this listener.
    pub open_connections: prometheus_client::metrics::gauge::Gauge,
    /// Rejected trace-context headers, by format.
    pub invalid_contexts: crate::metrics::ContextMetrics,
    /// The process's in-flight registry: inbound listeners fill it, outbound ones ask it
    /// for the parent of a call without trace context.
    pub stitch: Arc<crate::stitch::Stitcher>,
    /// Connections closed at once because `max_connections` were open.
    pub rejected_connections: prometheus_client::metrics::counter::Counter,
}

/// The connection a request arrived on.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The connection is TLS (`url.scheme` https, `X-Forwarded-Proto: https`).
    pub tls: bool,
}

/// How long to wait after a failed `accept` (e.g. out of file descriptors) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `listener` until `stop` turns true, then drains: waits for in-flight requests on
/// open connections for at most `grace`. With `tls`, each connection is a TLS handshake
/// first; HTTP/1.1 or HTTP/2 then follows from what the client sends (ALPN offers both).
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ListenerCtx>,
    config: &ListenerConfig,
    tls: Option<Acceptor>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let settings = Settings {
        header_read_timeout: config.header_read_timeout,
        limits: Limits {
            max_bytes: config.max_header_bytes,
            max_fields: config.max_headers,
        },
    };
    let tracker = TaskTracker::new();
    let drain = CancellationToken::new();
    // `max_connections`: one permit per open connection. Beyond the limit a connection is
    // accepted and closed at once, so the client fails fast instead of waiting in the
    // kernel's backlog.
    let permits = config.max_connections.map(|n| Arc::new(Semaphore::new(n)));

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let permit = match permits.as_ref().map(|p| p.clone().try_acquire_owned()) {
                        Some(Err(_)) => {
                            ctx.rejected_connections.inc();
                            debug!(listener = %ctx.name, client = %remote, "max_connections open; closing");
                            drop(stream);
                            continue;
                        }
                        Some(Ok(permit)) => Some(permit),
                        None => None,
                    };
                    let local = stream.local_addr().unwrap_or(config.bind);
                    if let Err(err) = stream.set_nodelay(true) {
                        debug!(error = %err, "set_nodelay failed");
                    }
                    let conn = ConnInfo { remote, local, tls: tls.is_some() };
                    let ctx = ctx.clone();
                    let drain = drain.clone();
                    let tls = tls.clone();
                    ctx.open_connections.inc();
                    // The TLS path, larger, is boxed so that plain connections do not pay for
                    // its size (10,000 idle connections: see BENCHMARKS.md).
                    tracker.spawn(async move {
                        let handler = {
                            let ctx = ctx.clone();
                            move |req| forward::handle(ctx.clone(), conn, req)
                        };
                        let end = match tls {
                            None => serve_connection(stream, &settings, &drain, handler).await,
                            Some(tls) => Box::pin(async move {
                                match tls.handshake(stream, remote).await {
                                    Some(stream) => {
                                        serve_connection(stream, &settings, &drain, handler).await
                                    }
                                    None => End::Done,
                                }
                            })
                            .await,
                        };
                        server::log(&ctx.name, remote, &end);
                        ctx.open_connections.dec();
                        drop(permit);
                    });
                }
                Err(err) => {
                    warn!(listener = %ctx.name, error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            _ = crate::stopped(&mut stop) => break,
        }
    }
    // Closing the socket refuses new connections at once.
    drop(listener);
    info!(listener = %ctx.name, open_connections = tracker.len(), "stopped accepting; draining");
    drain.cancel();
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!(listener = %ctx.name, ?grace, "grace period over; closing remaining connections");
    }
}
