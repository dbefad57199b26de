//! A listener: accepts TCP connections and serves HTTP/1.1 and HTTP/2 (h2c prior knowledge)
//! on them, each request going to `forward::handle`. On stop it closes the socket and lets
//! open connections finish their requests, up to the grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{debug, info, warn};

use super::conn_end::{self, ActivityIo};
use super::snapshot::Shared;
use super::{forward, framing};
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        // hyper answers 431 when the header section does not fit, or has too many fields.
        .max_buf_size(config.max_header_bytes)
        .max_headers(config.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
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
                    let open = ctx.open_connections.clone();
                    let listener_name = ctx.name.clone();
                    let ctx = ctx.clone();
                    // The framing tracker's verdicts, shared by the connection's bytes and its
                    // requests (`framing`: both Content-Length and Transfer-Encoding → 400).
                    let verdicts = Arc::new(framing::Verdicts::default());
                    let framed = verdicts.clone();
                    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                        if verdicts.next_is_ambiguous() {
                            req.extensions_mut().insert(framing::Ambiguous);
                        }
                        forward::handle(ctx.clone(), conn, req)
                    });
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    let tls = tls.clone();
                    open.inc();
                    let first_byte = config.header_read_timeout;
                    // The task's future is allocated per connection and kept for its life:
                    // the connection future is pinned in place once (not moved into a second
                    // slot), and the TLS path, larger, is boxed so plain connections do not pay
                    // for its size (10,000 idle connections: see BENCHMARKS.md).
                    tokio::spawn(async move {
                        let (served, activity) = match tls {
                            None => {
                                let stream = framing::Framed::new(stream, framed);
                                let (io, activity) = ActivityIo::new(stream);
                                let connection = std::pin::pin!(watcher.watch(
                                    builder.serve_connection_with_upgrades(TokioIo::new(io), service)
                                ));
                                let served =
                                    conn_end::first_byte_within(first_byte, &activity, connection);
                                (served.await, activity)
                            }
                            Some(tls) => Box::pin(async move {
                                match tls.handshake(stream, remote).await {
                                    Some(stream) => {
                                        let stream = framing::Framed::new(stream, framed);
                                        let (io, activity) = ActivityIo::new(stream);
                                        let connection = std::pin::pin!(watcher.watch(
                                            builder.serve_connection_with_upgrades(
                                                TokioIo::new(io),
                                                service,
                                            )
                                        ));
                                        let served = conn_end::first_byte_within(
                                            first_byte, &activity, connection,
                                        );
                                        (served.await, activity)
                                    }
                                    None => (Some(Ok(())), Default::default()),
                                }
                            })
                            .await,
                        };
                        conn_end::log(&listener_name, remote, served, &activity);
                        open.dec();
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
    let open = graceful.count();
    info!(listener = %ctx.name, open_connections = open, "stopped accepting; draining");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(listener = %ctx.name, ?grace, "grace period over; closing remaining connections");
    }
}
