//! One request through the proxy: route, trace, rewrite, forward over a pooled connection,
//! stream the response back. Failures are turned into responses by `ProxyError`, here, once.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body::Body as _;
use hyper_util::rt::TokioIo;
use tracing::{debug, info, warn};

use super::body::{AccessEntry, RequestDone, ResponseBody};
use super::client::{SendError, UpstreamBody};
use super::error::{ProxyError, is_timeout, is_tls};
use super::headers::{Forwarded, is_upgrade_request, remove_hop_by_hop};
use super::hop::Hop;
use super::listener::{ConnInfo, ListenerCtx};
use super::request_body::{BodyFault, RequestBody};
use super::retry::{Replay, is_idempotent, retry_allowed};
use super::route::{RequestInfo, host_without_port};
use super::server::{Ambiguous, ClientBody, OnUpgrade};
use super::snapshot::RouteTarget;
use super::upstream::{InFlight, Upstream};

/// A request's entry point (from `server`). Never fails: every error becomes a response.
pub async fn handle(
    ctx: Arc<ListenerCtx>,
    conn: ConnInfo,
    mut req: Request<ClientBody>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let wall = SystemTime::now();
    // Own the snapshot for the whole request (never hold an ArcSwap guard across .await).
    let snapshot = ctx.shared.load_full();
    normalize_host(&mut req);
    let host_header = req.headers().get(header::HOST).cloned();
    let route = snapshot.tables.get(ctx.index).and_then(|table| {
        table.find(&RequestInfo {
            host: host_header
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .map(host_without_port),
            path: req.uri().path(),
            method: req.method(),
            headers: req.headers(),
        })
    });
    let mut hop = Hop::start(&ctx, &snapshot, route, &req, conn, started, wall);
    let method = req.method().clone();
    let target = snapshot
        .config
        .access_log
        .enabled
        .then(|| req.uri().clone());
    let mut endpoint = None;
    let result = match route {
        _ if req.extensions().get::<Ambiguous>().is_some() => Err(ProxyError::AmbiguousFraming),
        _ if req.method() == Method::CONNECT => Err(ProxyError::ConnectMethod),
        None => Err(ProxyError::NoRoute),
        Some(route) => {
            if let Some(hop) = &hop {
                hop.inject(req.headers_mut());
            }
            forward(
                conn,
                &route.target,
                host_header,
                req,
                hop.as_mut(),
                &mut endpoint,
            )
            .await
        }
    };
    let mut error_type = None;
    let mut response = match result {
        Ok(response) => response,
        Err(err) => {
            error_type = Some(err.kind());
            // Formatted on the stack: an unsampled request's trace costs no allocation here.
            let hex = hop.as_ref().map(|h| h.trace_id().to_hex());
            let trace_id = hex
                .as_ref()
                .and_then(|h| std::str::from_utf8(h).ok())
                .unwrap_or("");
            match &err {
                ProxyError::NoRoute
                | ProxyError::ConnectMethod
                | ProxyError::BadTarget(_)
                | ProxyError::AmbiguousFraming
                | ProxyError::BodyTooLarge { .. }
                | ProxyError::BadRequestBody(_) => {
                    info!(listener = %ctx.name, client = %conn.remote, %method, trace_id, error = %err, "request rejected")
                }
                _ => {
                    warn!(listener = %ctx.name, client = %conn.remote, %method, trace_id, error = %err, "request failed")
                }
            }
            if let Some(hop) = hop.as_mut() {
                hop.failed(&err);
            }
            err.to_response()
        }
    };
    let metrics = match route {
        Some(route) => route.target.metrics.clone(),
        None => match snapshot.no_route.get(ctx.index) {
            Some(metrics) => metrics.clone(),
            None => return response,
        },
    };
    let access = target.map(|target| {
        Box::new(AccessEntry {
            listener: ctx.name.clone(),
            client: conn.remote,
            method,
            target,
            endpoint,
            trace: hop
                .as_ref()
                .and_then(|h| Some((h.trace_id(), h.own_span()?))),
            error_type,
        })
    });
    let done = RequestDone {
        started,
        status: response.status().as_u16(),
        metrics,
        access,
    };
    response.body_mut().record_when_done(done);
    if let Some(tracked) = hop.as_mut().and_then(Hop::take_tracked) {
        response.body_mut().track_until_done(tracked);
    }
    if let Some(mut hop) = hop {
        if !snapshot.config.tracing.capture_response_headers.is_empty() {
            // Captured from the header map, where an HTTP/1.1 upstream's fields are not yet.
            super::body::fields_into_map(&mut response);
        }
        hop.respond(&mut response);
        if let Some(spans) = hop.into_finish() {
            response.body_mut().finish_spans_with(spans);
        }
    }
    response
}

/// RFC 9112 §3.2.2: with an absolute-form target (a request sent to us as an HTTP proxy) or
/// an HTTP/2 `:authority`, the target's authority is the host and replaces `Host`: its host
/// and port only, never its userinfo (`user:pass@`), which must not reach the upstream.
fn normalize_host(req: &mut Request<ClientBody>) {
    if let Some(authority) = req.uri().authority() {
        let host = authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, host)| host);
        if let Ok(value) = HeaderValue::from_str(host) {
            req.headers_mut().insert(header::HOST, value);
        }
    }
}

async fn forward(
    conn: ConnInfo,
    target: &RouteTarget,
    host_header: Option<HeaderValue>,
    mut req: Request<ClientBody>,
    mut hop: Option<&mut Hop>,
    picked: &mut Option<http::uri::Authority>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let upstream = &target.upstream;
    // A protocol switch (WebSocket) is relayed as a byte stream once both sides agree.
    let client_upgrade = if req.version() == Version::HTTP_11 && is_upgrade_request(req.headers()) {
        req.extensions_mut().remove::<OnUpgrade>()
    } else {
        None
    };
    remove_hop_by_hop(req.headers_mut(), client_upgrade.is_some());
    let proto = if conn.tls { "https" } else { "http" };
    // Written with the upstream request's head when it can be (`Forwarded`).
    let forwarded = Forwarded::add(req.headers_mut(), conn.remote.ip(), proto, host_header);

    // A declared length over the limit is refused before anything is sent upstream; a
    // chunked body is cut off when it passes the limit (`RequestBody`).
    let max_body = target.max_request_body;
    if let Some(max) = max_body {
        if declared_length(req.headers()).is_some_and(|len| len > max) {
            return Err(ProxyError::BodyTooLarge { max });
        }
    }
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let client_version = req.version();
    *req.version_mut() = upstream.version();
    let policy = &upstream.config.retry;
    // Only what is safe to send again is retried (RFC 9110 §9.2.2): an idempotent method and
    // no body, so that nothing has to be buffered to replay it.
    let replay = (policy.retries > 0
        && is_idempotent(req.method())
        && req.body().is_end_stream()
        && client_upgrade.is_none())
    .then(|| Replay::of(&req));
    if policy.retries > 0 {
        // Every request to the upstream earns budget, retryable or not.
        upstream.retry_budget.deposit();
    }
    // A request without a body cannot fail on it: nothing to share (no allocation).
    let fault = if req.body().is_end_stream() {
        BodyFault::default()
    } else {
        BodyFault::shared()
    };
    let mut first = Some(req.map(|body| RequestBody::incoming(body, max_body, &fault)));
    let mut attempt: u32 = 0;
    loop {
        let in_flight = InFlight::pick(upstream).ok_or_else(|| ProxyError::NoEndpoint {
            upstream: upstream.name.clone(),
        })?;
        let endpoint = in_flight.endpoint().ok_or_else(|| ProxyError::NoEndpoint {
            upstream: upstream.name.clone(),
        })?;
        *picked = Some(endpoint.authority.clone());
        let mut req = match (first.take(), &replay) {
            (Some(req), _) => req,
            (None, Some(replay)) => replay.request(),
            // Unreachable: a second attempt is only made with a replay.
            (None, None) => {
                return Err(ProxyError::NoEndpoint {
                    upstream: upstream.name.clone(),
                });
            }
        };
        if let Some(hop) = hop.as_deref_mut() {
            if attempt > 0 {
                hop.inject(req.headers_mut());
            }
            hop.attempt(&endpoint.authority, upstream.tls(), &mut req);
        }

        // tokio's clock (the same as std's outside paused tests), so that the deadline
        // needs no second read of it.
        let started = tokio::time::Instant::now();
        let timeout = upstream.config.request_timeout;
        let sent = tokio::time::timeout_at(
            started + timeout,
            upstream
                .client
                .send(in_flight.index(), path.clone(), req, forwarded.as_ref()),
        )
        .await;
        let may_retry = replay.is_some() && attempt < policy.retries;
        let sent = match sent {
            Err(_elapsed) => {
                return Err(ProxyError::Timeout {
                    upstream: upstream.name.clone(),
                    endpoint: endpoint.endpoint.clone(),
                    timeout,
                });
            }
            Ok(Err(_)) if fault.too_large() => {
                return Err(ProxyError::BodyTooLarge {
                    max: max_body.unwrap_or(0),
                });
            }
            Ok(Err(err)) if fault.client_failed() => {
                return Err(ProxyError::BadRequestBody(err.into()));
            }
            Ok(Err(err)) => {
                let err = upstream_error(upstream, &in_flight, err);
                let connect_failed = matches!(
                    err,
                    ProxyError::Connect { .. } | ProxyError::ConnectTimeout { .. }
                );
                if !(may_retry && connect_failed) {
                    return Err(err);
                }
                // A retry goes to an endpoint not in back-off. When every one is (each
                // refused or timed out within `failure_backoff`), it would meet one of them
                // again: the request ends here, 503, without spending budget.
                if !upstream.balancer.any_healthy() {
                    debug!(error = %err, attempt, "every endpoint in back-off; not retrying");
                    if let Some(hop) = hop.as_deref_mut() {
                        hop.retrying(Some(err.kind()));
                    }
                    return Err(ProxyError::NoEndpoint {
                        upstream: upstream.name.clone(),
                    });
                }
                if !retry_allowed(upstream) {
                    return Err(err);
                }
                debug!(error = %err, attempt, "retrying after a connection failure");
                if let Some(hop) = hop.as_deref_mut() {
                    hop.retrying(Some(err.kind()));
                }
                attempt += 1;
                continue;
            }
            Ok(Ok(sent)) => sent,
        };
        endpoint.record_success(started.elapsed());
        let response = sent.response;
        let status = response.status();
        if let Some(hop) = hop.as_deref_mut() {
            hop.attempt_response(status.as_u16(), Some(&sent.meta));
        }
        if may_retry && policy.retry_on.contains(&status.as_u16()) && retry_allowed(upstream) {
            debug!(
                status = status.as_u16(),
                attempt, "retrying after a retry_on status"
            );
            if let Some(hop) = hop.as_deref_mut() {
                hop.retrying(None);
            }
            // The unread body goes with the response: hyper closes that connection rather
            // than return it to the pool half-read.
            drop(response);
            drop(in_flight);
            attempt += 1;
            continue;
        }
        return Ok(respond(
            response,
            client_upgrade,
            client_version,
            in_flight,
            upstream.config.body_timeout,
        ));
    }
}

/// The request's `Content-Length`, when it has exactly one valid one (`server` has already
/// refused requests with conflicting ones).
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The upstream's response as the client gets it: a protocol switch becomes a tunnel, other
/// responses stream their body back in the client's protocol.
fn respond(
    mut response: Response<UpstreamBody>,
    client_upgrade: Option<OnUpgrade>,
    client_version: Version,
    in_flight: InFlight,
    body_timeout: std::time::Duration,
) -> Response<ResponseBody> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            remove_hop_by_hop(response.headers_mut(), true);
            tokio::spawn(tunnel(client_upgrade, upstream_upgrade, in_flight));
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, ResponseBody::empty());
        }
    }
    remove_hop_by_hop(response.headers_mut(), false);
    let (mut parts, body) = response.into_parts();
    // Answer in the client's protocol, whatever the upstream spoke.
    parts.version = client_version;
    Response::from_parts(parts, ResponseBody::upstream(body, in_flight, body_timeout))
}

/// Classifies a client error. A refused or timed-out connect puts the endpoint in back-off.
fn upstream_error(upstream: &Upstream, in_flight: &InFlight, err: SendError) -> ProxyError {
    let Some(state) = in_flight.endpoint() else {
        return ProxyError::NoEndpoint {
            upstream: upstream.name.clone(),
        };
    };
    let endpoint = state.endpoint.clone();
    let name = upstream.name.clone();
    match err {
        SendError::Connect(source) => {
            state.mark_failed(upstream.config.failure_backoff);
            if is_timeout(source.as_ref()) {
                ProxyError::ConnectTimeout {
                    upstream: name,
                    endpoint,
                    timeout: upstream.config.connect_timeout,
                }
            } else if is_tls(source.as_ref()) {
                ProxyError::Tls {
                    upstream: name,
                    endpoint,
                    source,
                }
            } else {
                ProxyError::Connect {
                    upstream: name,
                    endpoint,
                    source,
                }
            }
        }
        SendError::Request(source) if is_tls(source.as_ref()) => ProxyError::Tls {
            upstream: name,
            endpoint,
            source,
        },
        SendError::Request(source) => ProxyError::Reset {
            upstream: name,
            endpoint,
            source,
        },
    }
}

/// Relays bytes both ways between the client and the upstream after a `101 Switching
/// Protocols`, until either side closes.
async fn tunnel(client: OnUpgrade, upstream: hyper::upgrade::OnUpgrade, in_flight: InFlight) {
    let (client, upstream) = tokio::join!(client.upgraded(), upstream);
    let (mut client, upstream) = match (client, upstream) {
        (Some(client), Ok(upstream)) => (client, upstream),
        (None, _) => {
            debug!("protocol upgrade failed: the client connection ended first");
            return;
        }
        (_, Err(err)) => {
            debug!(error = %err, "protocol upgrade failed");
            return;
        }
    };
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => debug!(bytes_up = up, bytes_down = down, "upgraded stream closed"),
        Err(err) => debug!(error = %err, "upgraded stream ended with an error"),
    }
    drop(in_flight);
}
