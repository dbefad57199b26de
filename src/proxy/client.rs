//! The upstream client: hoptrace's own HTTP/1.1 connections (`h1`), hyper's for HTTP/2 and
//! for protocol upgrades, and a pool of them per endpoint.
//!
//! Why not hyper-util's pooled `Client`: per request it hashes a pool key, races a pool
//! checkout against a lazily built connect future and boxes both, and, for HTTP/1.1, spawns a
//! task that waits for the connection to be ready again before it goes back to the pool. Here
//! the balancer has already picked the endpoint, so a pool is a vector found by the endpoint's
//! index, and an HTTP/1.1 connection goes back when the response body that carries it has
//! been read to its end (handed to the request's `InFlight`), with nothing spawned.
//!
//! - HTTP/1.1: one request at a time per connection, written and read by the request's own
//!   task (`h1`: no connection task, no channel). Idle connections are kept per endpoint,
//!   newest first, at most `max_idle_per_endpoint` of them, each for at most `idle_timeout`;
//!   one the upstream has closed (or sent anything on) is passed over when taken.
//!   A request asking for a protocol upgrade (WebSocket) goes over a new hyper connection of
//!   its own, which the upgrade then takes over.
//! - HTTP/2: one shared connection per endpoint carries every request; a new one is made (by
//!   one request, the others wait for it) when it has closed. With `max_idle_per_endpoint = 0`
//!   every request has its own connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::ServiceExt as _;
use tracing::debug;

use super::connector::{ConnMeta, Tagged, TaggingConnector};
use super::h1;
pub use super::h1::Conn;
use super::headers::{Forwarded, is_upgrade_request};
use super::request_body::RequestBody;
use crate::config::Protocol;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection: the TCP connect or the TLS handshake failed or timed out.
    #[error("connect failed: {0}")]
    Connect(#[source] BoxError),
    /// The connection failed while the request went out or before the response head came.
    #[error("request failed: {0}")]
    Request(#[source] BoxError),
}

/// A response head, and what it came over.
#[derive(Debug)]
pub struct Sent {
    pub response: Response<UpstreamBody>,
    pub meta: ConnMeta,
}

/// An upstream's response body: over one of hoptrace's HTTP/1.1 connections, which it
/// carries until it ends, or over hyper's (HTTP/2, upgrades).
#[derive(Debug)]
pub enum UpstreamBody {
    H1(h1::Body),
    Hyper(Incoming),
}

impl UpstreamBody {
    /// Once the body has ended: its connection, to hand back (`Client::release`), if it can
    /// carry another request.
    pub fn take_reusable(&mut self) -> Option<Conn> {
        match self {
            UpstreamBody::H1(body) => body.take_reusable(),
            UpstreamBody::Hyper(_) => None,
        }
    }

    /// An HTTP/1.1 response's head fields, which are not in its `HeaderMap` (`h1::RawFields`).
    pub fn take_raw(&mut self) -> Option<h1::RawFields> {
        match self {
            UpstreamBody::H1(body) => body.take_raw(),
            UpstreamBody::Hyper(_) => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::H1(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BoxError::from))),
            UpstreamBody::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BoxError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H1(body) => body.is_end_stream(),
            UpstreamBody::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::H1(body) => body.size_hint(),
            UpstreamBody::Hyper(body) => body.size_hint(),
        }
    }
}

#[derive(Debug)]
pub struct Client {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    connector: TaggingConnector,
    protocol: Protocol,
    scheme: Scheme,
    idle_timeout: Duration,
    max_idle: usize,
    /// By endpoint index, as in the upstream's balancer.
    pools: Box<[Pool]>,
    reaper: AtomicBool,
}

#[derive(Debug)]
struct Pool {
    authority: Authority,
    /// `Host` for a request that came without one: the authority without a default port.
    host: Option<HeaderValue>,
    /// HTTP/1.1: idle connections, the most recently used last.
    idle: Mutex<Vec<Idle>>,
    /// HTTP/2: the shared connection. An async lock, held while a new one is made.
    shared: tokio::sync::Mutex<Option<H2>>,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

#[derive(Debug)]
struct H2 {
    sender: http2::SendRequest<RequestBody>,
    meta: ConnMeta,
    used: Instant,
}

impl Client {
    /// A client for the endpoints `authorities` (in the balancer's order).
    pub fn new(
        connector: TaggingConnector,
        protocol: Protocol,
        scheme: Scheme,
        idle_timeout: Duration,
        max_idle: usize,
        authorities: impl IntoIterator<Item = Authority>,
    ) -> Client {
        let pools = authorities
            .into_iter()
            .map(|authority| Pool {
                host: host_value(&authority, &scheme),
                authority,
                idle: Mutex::new(Vec::new()),
                shared: tokio::sync::Mutex::new(None),
            })
            .collect();
        Client {
            shared: Arc::new(Shared {
                connector,
                protocol,
                scheme,
                idle_timeout,
                max_idle,
                pools,
                reaper: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req` (its URI is the origin-form target) with the `forwarded` fields to
    /// endpoint `index` and waits for the response head.
    pub async fn send(
        &self,
        index: usize,
        path: PathAndQuery,
        mut req: Request<RequestBody>,
        forwarded: Option<&Forwarded>,
    ) -> Result<Sent, SendError> {
        let shared = &self.shared;
        let pool = shared.pool(index)?;
        let upgrade = is_upgrade_request(req.headers());
        if let Some(forwarded) = forwarded.filter(|_| upgrade || shared.protocol != Protocol::Http1)
        {
            // Hyper's connections write the header map only.
            forwarded.insert_into(req.headers_mut());
        }
        match shared.protocol {
            Protocol::Http1 => {
                *req.uri_mut() = Uri::from(path);
                if !req.headers().contains_key(header::HOST) {
                    if let Some(host) = &pool.host {
                        req.headers_mut().insert(header::HOST, host.clone());
                    }
                }
                // Boxed: every async fn level that holds this future while awaiting it
                // doubles its size (rustc keeps the argument and the awaited copy apart);
                // unboxed, a request's future was 40 KB, copied whole into its box per
                // request (`server::conn`), now 5.6 KB.
                if upgrade {
                    // Boxed, as rare: its size would otherwise count for every request's future.
                    return Box::pin(shared.send_upgrade(pool, req)).await;
                }
                Box::into_pin(super::boxed(|| shared.send_h1(pool, req, forwarded))).await
            }
            Protocol::Http2 => {
                // HTTP/2 sends the scheme and authority as pseudo-headers.
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(shared.scheme.clone());
                parts.authority = Some(pool.authority.clone());
                parts.path_and_query = Some(path);
                *req.uri_mut() =
                    Uri::from_parts(parts).map_err(|err| SendError::Connect(Box::new(err)))?;
                // Boxed: the request's future (moved whole, per request, into hyper's slot)
                // would otherwise be as large as this path's for HTTP/1.1 requests too.
                Box::pin(shared.send_h2(pool, req)).await
            }
        }
    }

    /// Takes back the connection of a response whose body was read to its end.
    pub fn release(&self, index: usize, conn: Conn) {
        if self.shared.max_idle == 0 {
            return;
        }
        self.shared.put(index, conn);
        self.start_reaper();
    }

    /// Idle connections per endpoint, for tests.
    #[cfg(test)]
    fn idle_counts(&self) -> Vec<usize> {
        self.shared
            .pools
            .iter()
            .map(|p| lock(&p.idle).len())
            .collect()
    }

    /// Closes idle connections past `idle_timeout`, every `idle_timeout`, while the client
    /// exists. Started with the first pooled connection (inside the runtime).
    fn start_reaper(&self) {
        if self.shared.reaper.swap(true, Ordering::Relaxed) {
            return;
        }
        let every = self.shared.idle_timeout.max(Duration::from_millis(100));
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                shared.evict_expired();
            }
        });
    }
}

impl Shared {
    fn pool(&self, index: usize) -> Result<&Pool, SendError> {
        self.pools
            .get(index)
            .ok_or_else(|| SendError::Connect(format!("no endpoint with index {index}").into()))
    }

    async fn send_h1(
        &self,
        pool: &Pool,
        req: Request<RequestBody>,
        forwarded: Option<&Forwarded>,
    ) -> Result<Sent, SendError> {
        let conn = match self.take_idle(pool) {
            Some(conn) => conn,
            None => h1::Conn::new(Box::pin(self.connect(pool)).await?),
        };
        let meta = conn.meta();
        match conn.send(req, forwarded).await {
            Ok(response) => Ok(Sent {
                response: response.map(UpstreamBody::H1),
                meta,
            }),
            Err(err) => Err(SendError::Request(Box::new(err))),
        }
    }

    /// The newest idle connection still open: the others taken on the way are closed (the
    /// upstream closed them, or they are past `idle_timeout`).
    fn take_idle(&self, pool: &Pool) -> Option<Conn> {
        let mut idle = lock(&pool.idle);
        while let Some(mut entry) = idle.pop() {
            if entry.since.elapsed() < self.idle_timeout && entry.conn.is_open_and_idle() {
                return Some(entry.conn);
            }
            debug!("pooled connection closed or expired; not used");
        }
        None
    }

    fn put(&self, index: usize, conn: Conn) {
        let Some(pool) = self.pools.get(index) else {
            return;
        };
        let mut idle = lock(&pool.idle);
        if idle.len() < self.max_idle {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    fn evict_expired(&self) {
        for pool in self.pools.iter() {
            lock(&pool.idle).retain_mut(|entry| {
                entry.since.elapsed() < self.idle_timeout && entry.conn.is_open_and_idle()
            });
            if let Ok(mut shared) = pool.shared.try_lock() {
                if shared
                    .as_ref()
                    .is_some_and(|h2| h2.used.elapsed() >= self.idle_timeout)
                {
                    *shared = None;
                }
            }
        }
    }

    async fn connect(&self, pool: &Pool) -> Result<Tagged, SendError> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(pool.authority.clone());
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
        let uri = Uri::from_parts(parts).map_err(|err| SendError::Connect(Box::new(err)))?;
        self.connector
            .clone()
            .oneshot(uri)
            .await
            .map_err(SendError::Connect)
    }

    /// A protocol upgrade (WebSocket) over a new hyper connection, which the upgrade takes
    /// over from hyper once both sides agree (`hyper::upgrade::on`); never pooled.
    async fn send_upgrade(
        &self,
        pool: &Pool,
        req: Request<RequestBody>,
    ) -> Result<Sent, SendError> {
        let io = self.connect(pool).await?;
        let meta = io.meta();
        let (mut sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|err| SendError::Request(err.into()))?;
        tokio::spawn(async move {
            if let Err(err) = conn.with_upgrades().await {
                debug!(error = %err, "upstream connection failed");
            }
        });
        let response = sender
            .send_request(req)
            .await
            .map_err(|err| SendError::Request(err.into()))?;
        Ok(Sent {
            response: response.map(UpstreamBody::Hyper),
            meta,
        })
    }

    async fn send_h2(&self, pool: &Pool, mut req: Request<RequestBody>) -> Result<Sent, SendError> {
        loop {
            let (mut sender, meta, reused) = self.h2_sender(pool).await?;
            match sender.try_send_request(req).await {
                Ok(response) => {
                    return Ok(Sent {
                        response: response.map(UpstreamBody::Hyper),
                        meta,
                    });
                }
                Err(mut err) => match err.take_message() {
                    Some(unsent) if reused => {
                        debug!(error = %err.error(), "shared connection closed; sending on a new one");
                        req = unsent;
                    }
                    _ => return Err(SendError::Request(err.into_error().into())),
                },
            }
        }
    }

    /// The endpoint's shared HTTP/2 connection, made when there is none or it has closed;
    /// `true` when it had carried requests before.
    async fn h2_sender(
        &self,
        pool: &Pool,
    ) -> Result<(http2::SendRequest<RequestBody>, ConnMeta, bool), SendError> {
        if self.max_idle == 0 {
            let (sender, meta) = self.connect_h2(pool).await?;
            return Ok((sender, meta, false));
        }
        let mut slot = pool.shared.lock().await;
        if let Some(h2) = slot.as_mut() {
            if !h2.sender.is_closed() {
                h2.used = Instant::now();
                return Ok((h2.sender.clone(), h2.meta, true));
            }
        }
        *slot = None;
        let (sender, meta) = self.connect_h2(pool).await?;
        *slot = Some(H2 {
            sender: sender.clone(),
            meta,
            used: Instant::now(),
        });
        Ok((sender, meta, false))
    }

    async fn connect_h2(
        &self,
        pool: &Pool,
    ) -> Result<(http2::SendRequest<RequestBody>, ConnMeta), SendError> {
        let io = self.connect(pool).await?;
        let meta = io.meta();
        let (mut sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|err| SendError::Request(err.into()))?;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                debug!(error = %err, "upstream connection failed");
            }
        });
        sender
            .ready()
            .await
            .map_err(|err| SendError::Request(err.into()))?;
        Ok((sender, meta))
    }
}

/// `host[:port]` as a `Host` header: the port only when it is not the scheme's default.
fn host_value(authority: &Authority, scheme: &Scheme) -> Option<HeaderValue> {
    let default = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    let text = match authority.port_u16() {
        Some(port) if port == default => authority.host(),
        _ => authority.as_str(),
    };
    HeaderValue::from_str(text).ok()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::metrics::ConnectMetrics;
    use http_body_util::BodyExt as _;
    use hyper_util::client::legacy::connect::HttpConnector;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    #[test]
    fn host_header_drops_only_the_default_port() {
        let http = Scheme::HTTP;
        let https = Scheme::HTTPS;
        let value = |a: &str, s: &Scheme| host_value(&a.parse().unwrap(), s).unwrap();
        assert_eq!(value("svc:80", &http), "svc");
        assert_eq!(value("svc:8080", &http), "svc:8080");
        assert_eq!(value("svc:443", &https), "svc");
        assert_eq!(value("svc:80", &https), "svc:80");
        assert_eq!(value("[::1]:80", &http), "[::1]");
        assert_eq!(value("svc", &http), "svc");
    }

    /// A raw HTTP/1.1 upstream on loopback: answers each request head with `ok` and the
    /// `Host` it got; with `one_per_connection` it closes the socket after the first answer
    /// (without saying so, as an upstream whose keep-alive timer fired does).
    async fn upstream(one_per_connection: bool) -> (Authority, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        let n = socket.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                            let text = String::from_utf8_lossy(&head[..end]).to_lowercase();
                            let host = text
                                .lines()
                                .find_map(|l| l.strip_prefix("host: "))
                                .unwrap_or("-")
                                .to_owned();
                            head.drain(..end + 4);
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{host}",
                                host.len()
                            );
                            socket.write_all(answer.as_bytes()).await.unwrap();
                            if one_per_connection {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (authority, accepted)
    }

    fn client(authority: Authority) -> Client {
        Client::new(
            TaggingConnector::new(HttpConnector::new(), ConnectMetrics::default(), None),
            Protocol::Http1,
            Scheme::HTTP,
            Duration::from_secs(90),
            4,
            [authority],
        )
    }

    fn get() -> Request<RequestBody> {
        Request::builder().body(RequestBody::empty()).unwrap()
    }

    /// Sends a GET, reads the whole body, hands the connection back; returns the body.
    async fn round_trip(client: &Client) -> String {
        let sent = client
            .send(0, PathAndQuery::from_static("/x"), get(), None)
            .await
            .unwrap();
        let mut body = sent.response.into_body();
        let mut text = Vec::new();
        while let Some(frame) = body.frame().await {
            text.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        if let Some(conn) = body.take_reusable() {
            client.release(0, conn);
        }
        String::from_utf8(text).unwrap()
    }

    #[tokio::test]
    async fn a_connection_goes_back_to_its_pool_when_its_body_has_been_read() {
        let (authority, accepted) = upstream(false).await;
        let client = client(authority.clone());
        // The request had no Host: the endpoint's authority is sent.
        assert_eq!(round_trip(&client).await, authority.as_str());
        assert_eq!(client.idle_counts(), [1]);
        for _ in 0..3 {
            round_trip(&client).await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection carried all four"
        );

        // A response dropped before its body was read: its connection is not pooled again.
        let sent = client
            .send(0, PathAndQuery::from_static("/"), get(), None)
            .await
            .unwrap();
        assert_eq!(client.idle_counts(), [0]);
        drop(sent);
        round_trip(&client).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_upstream_closed_is_not_used_again() {
        let (authority, accepted) = upstream(true).await;
        let client = client(authority);
        round_trip(&client).await;
        // The connection's task sees the upstream's close (before or after it was pooled).
        tokio::time::timeout(Duration::from_secs(10), async {
            while lock(&client.shared.pools[0].idle)
                .iter_mut()
                .any(|idle| idle.conn.is_open_and_idle())
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        round_trip(&client).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn no_pooling_with_max_idle_zero() {
        let (authority, accepted) = upstream(false).await;
        let mut client = client(authority);
        Arc::get_mut(&mut client.shared).unwrap().max_idle = 0;
        round_trip(&client).await;
        round_trip(&client).await;
        assert_eq!(client.idle_counts(), [0]);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
