//! One request's trace: continue or start the W3C context, decide sampling, inject the
//! `traceparent` the upstream sees, add `traceresponse`, and fill in this hop's spans.
//!
//! Which spans a hop records depends on the listener's role: inbound → one SERVER span;
//! outbound → one CLIENT span per upstream attempt; gateway → a SERVER span with the CLIENT
//! span as its child. The upstream's `traceparent` names the innermost of them.
//!
//! Spans end when the response body has been sent to the client, or the stream failed, or
//! the client went away (`SpanFinish`, driven by `ResponseBody`). An unsampled request (or
//! `exporter = "none"`) builds no `SpanRecord`: it only formats the headers it forwards.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{CaptureConnection, capture_connection};

use super::connector::conn_meta;
use super::error::ProxyError;
use super::listener::{ConnInfo, ListenerCtx};
use super::route::Route;
use super::snapshot::{RouteTarget, Snapshot};
use crate::config::{Config, Role};
use crate::export::SpanSink;
use crate::trace::context::{SpanId, TraceFlags, TraceId, TraceParent, extract};
use crate::trace::sampler::Sampler;
use crate::trace::span::{ConnectionAcquired, SpanKind, SpanRecord};

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static TRACERESPONSE: HeaderName = HeaderName::from_static("traceresponse");

/// The trace of one request through this hop.
#[derive(Debug)]
pub struct Hop {
    trace_id: TraceId,
    flags: TraceFlags,
    tracestate: Option<HeaderValue>,
    server_id: Option<SpanId>,
    client_id: Option<SpanId>,
    config: Arc<Config>,
    recording: Option<Box<Recording>>,
    /// Attempts before the current one (`http.request.resend_count`).
    resend_count: u32,
}

/// Only for sampled requests with an enabled sink.
#[derive(Debug)]
struct Recording {
    sink: SpanSink,
    started: Instant,
    /// Built at request start; becomes the SERVER span, and the CLIENT span's template.
    base: SpanRecord,
    has_server: bool,
    client: Option<SpanRecord>,
    client_started: Option<Instant>,
    capture: Option<CaptureConnection>,
}

/// How the response ended, for the spans' status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The whole body was handed to the client.
    Complete,
    /// The upstream's body failed mid-stream.
    UpstreamFailed,
    /// The upstream's body sent nothing for `body_timeout`.
    UpstreamStalled,
    /// The client went away before the body was complete.
    ClientGone,
}

/// Finishes a hop's spans when the response ends (see `ResponseBody`).
#[derive(Debug)]
pub struct SpanFinish {
    recording: Box<Recording>,
}

impl Hop {
    /// Starts the hop's trace. `None` when the route switched tracing off. `started` and
    /// `wall` are the same moment on the monotonic and the wall clock: spans get their wall
    /// start from `wall` and every later time as a monotonic offset from `started`.
    pub fn start(
        ctx: &ListenerCtx,
        snapshot: &Snapshot,
        route: Option<&Route<RouteTarget>>,
        req: &Request<Incoming>,
        conn: ConnInfo,
        started: Instant,
        wall: SystemTime,
    ) -> Option<Hop> {
        let (role, sink) = (ctx.role, &ctx.sink);
        let (template, sampling_ratio) = match route {
            Some(route) if !route.tracing => return None,
            Some(route) => (Some(route.template.clone()), route.sampling_ratio),
            None => (None, None),
        };
        let tracing = &snapshot.config.tracing;
        let extracted = extract(req.headers());
        let trace_id = extracted
            .parent
            .map_or_else(TraceId::random, |p| p.trace_id);
        let sampler = Sampler {
            ratio: sampling_ratio.unwrap_or(tracing.sampling_ratio),
            parent_based: tracing.parent_based,
        };
        let flags = sampler.decide(extracted.parent.as_ref(), &trace_id);
        // W3C §3.3: tracestate goes with the parent it came with; a new trace starts empty.
        let tracestate = extracted
            .parent
            .and(extracted.tracestate)
            .map(|ts| ts.header_value().clone());
        let server_id = (role != Role::Outbound).then(SpanId::random);
        let client_id = (role != Role::Inbound).then(SpanId::random);

        let recording = (flags.is_sampled() && sink.is_enabled()).then(|| {
            let headers = req.headers();
            let captured = capture(&tracing.capture_request_headers, headers);
            Box::new(Recording {
                sink: sink.clone(),
                started,
                base: SpanRecord {
                    kind: SpanKind::Server,
                    trace_id,
                    span_id: server_id.or(client_id).unwrap_or_else(SpanId::random),
                    parent_span_id: extracted.parent.map(|p| p.parent_id),
                    parent_is_remote: extracted.parent.is_some(),
                    flags,
                    tracestate: tracestate.clone(),
                    start: wall,
                    duration: std::time::Duration::ZERO,
                    method: req.method().clone(),
                    route: template,
                    target: req.uri().clone(),
                    host: headers.get(header::HOST).cloned(),
                    scheme: "http",
                    version: req.version(),
                    client_addr: conn.remote,
                    local_addr: conn.local,
                    user_agent: headers.get(header::USER_AGENT).cloned(),
                    peer: None,
                    status: None,
                    error_type: None,
                    resend_count: 0,
                    connection: None,
                    first_byte: None,
                    request_headers: captured,
                    response_headers: Vec::new(),
                    redact_query_keys: snapshot.redact_query_keys.clone(),
                },
                has_server: role != Role::Outbound,
                client: None,
                client_started: None,
                capture: None,
            })
        });
        Some(Hop {
            trace_id,
            flags,
            tracestate,
            server_id,
            client_id,
            config: snapshot.config.clone(),
            recording,
            resend_count: 0,
        })
    }

    /// The span the upstream's `traceparent` names as its parent.
    fn upstream_parent(&self) -> Option<SpanId> {
        self.client_id.or(self.server_id)
    }

    /// The span this hop reports in `traceresponse`: the one for the request it received.
    pub fn own_span(&self) -> Option<SpanId> {
        self.server_id.or(self.client_id)
    }

    /// Writes the context the upstream continues: one `traceparent` (also when unsampled:
    /// its flag says so) and the incoming `tracestate`, unchanged, or none for a new trace.
    pub fn inject(&self, headers: &mut HeaderMap) {
        if let Some(parent_id) = self.upstream_parent() {
            let parent = TraceParent {
                trace_id: self.trace_id,
                parent_id,
                flags: self.flags,
            };
            headers.insert(TRACEPARENT.clone(), parent.to_header_value());
        }
        match &self.tracestate {
            Some(ts) => {
                headers.insert(TRACESTATE.clone(), ts.clone());
            }
            None => {
                headers.remove(&TRACESTATE);
            }
        }
    }

    /// An upstream attempt begins (CLIENT span start) on `peer`.
    pub fn attempt<B>(&mut self, peer: &Authority, req: &mut Request<B>) {
        let Some(rec) = self.recording.as_mut() else {
            return;
        };
        let Some(client_id) = self.client_id else {
            return;
        };
        let now = Instant::now();
        let mut client = rec.base.clone();
        client.kind = SpanKind::Client;
        client.span_id = client_id;
        if let Some(server_id) = self.server_id {
            // Gateway: the CLIENT span is a child of this hop's SERVER span.
            client.parent_span_id = Some(server_id);
            client.parent_is_remote = false;
        }
        client.start = rec.base.start + now.duration_since(rec.started);
        client.peer = Some(peer.clone());
        client.resend_count = self.resend_count;
        rec.client = Some(client);
        rec.client_started = Some(now);
        rec.capture = Some(capture_connection(req));
    }

    /// Response headers arrived from the upstream.
    pub fn attempt_response(&mut self, status: u16) {
        let Some(rec) = self.recording.as_mut() else {
            return;
        };
        let now = Instant::now();
        let meta = rec.capture.take().as_ref().and_then(conn_meta);
        if let (Some(client), Some(client_started)) = (rec.client.as_mut(), rec.client_started) {
            client.status = Some(status);
            client.first_byte = Some(now.duration_since(client_started));
            client.connection = meta.map(|meta| {
                // A connection established during this attempt is new; else it was pooled.
                if meta.established >= client_started {
                    ConnectionAcquired {
                        at: meta.established.duration_since(client_started),
                        reused: false,
                    }
                } else {
                    ConnectionAcquired {
                        at: std::time::Duration::ZERO,
                        reused: true,
                    }
                }
            });
        }
    }

    /// The current attempt is given up for a retry: its CLIENT span ends now, with
    /// `error_type` when it failed without a response. The next `attempt` records a new CLIENT
    /// span with its own span id (call `inject` again so the upstream sees it as parent).
    pub fn retrying(&mut self, error_type: Option<&'static str>) {
        self.resend_count = self.resend_count.saturating_add(1);
        if self.client_id.is_some() {
            self.client_id = Some(SpanId::random());
        }
        let Some(rec) = self.recording.as_mut() else {
            return;
        };
        if let Some(mut client) = rec.client.take() {
            let now = Instant::now();
            client.duration = now.duration_since(rec.client_started.unwrap_or(rec.started));
            client.error_type = client.error_type.or(error_type);
            rec.sink.try_send(client);
        }
        rec.capture = None;
    }

    /// The request failed with `err` (before any upstream response).
    pub fn failed(&mut self, err: &ProxyError) {
        let Some(rec) = self.recording.as_mut() else {
            return;
        };
        let kind = err.kind();
        rec.base.error_type = Some(kind);
        if rec.client.is_none() && !rec.has_server {
            // Outbound: the failure (no route, bad request) is still this hop's span.
            let mut client = rec.base.clone();
            client.kind = SpanKind::Client;
            rec.client_started = Some(rec.started);
            rec.client = Some(client);
        }
        if let Some(client) = rec.client.as_mut() {
            client.error_type = Some(kind);
        }
    }

    /// Adds `traceresponse` and the trace-id header, records status and captured headers.
    pub fn respond<B>(&mut self, response: &mut Response<B>) {
        let tracing = &self.config.tracing;
        if let Some(rec) = self.recording.as_mut() {
            rec.base.status = Some(response.status().as_u16());
            rec.base.response_headers =
                capture(&tracing.capture_response_headers, response.headers());
            if let Some(client) = rec.client.as_mut() {
                client.response_headers = rec.base.response_headers.clone();
            }
        }
        if tracing.traceresponse {
            if let Some(span_id) = self.own_span() {
                let value = TraceParent {
                    trace_id: self.trace_id,
                    parent_id: span_id,
                    flags: self.flags,
                };
                response
                    .headers_mut()
                    .insert(TRACERESPONSE.clone(), value.to_header_value());
            }
        }
        if let Some(name) = &tracing.trace_id_header {
            if let Ok(value) = HeaderValue::from_bytes(&self.trace_id.to_hex()) {
                response.headers_mut().insert(name.clone(), value);
            }
        }
    }

    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// Hands the spans to the response body, which finishes them when it ends.
    pub fn into_finish(self) -> Option<SpanFinish> {
        self.recording.map(|recording| SpanFinish { recording })
    }
}

/// The values of the allow-listed headers, every value of each, in list order.
fn capture(names: &[HeaderName], headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    names
        .iter()
        .flat_map(|name| {
            headers
                .get_all(name)
                .iter()
                .map(move |v| (name.clone(), v.clone()))
        })
        .collect()
}

impl SpanFinish {
    pub fn finish(self, outcome: Outcome) {
        let Recording {
            sink,
            started,
            mut base,
            has_server,
            client,
            client_started,
            ..
        } = *self.recording;
        let now = Instant::now();
        let error = match outcome {
            Outcome::Complete => None,
            Outcome::UpstreamFailed => Some("upstream_reset"),
            Outcome::UpstreamStalled => Some("timeout"),
            Outcome::ClientGone => Some("client_closed"),
        };
        if let Some(mut client) = client {
            client.duration = now.duration_since(client_started.unwrap_or(started));
            if client.error_type.is_none() {
                client.error_type = error;
            }
            sink.try_send(client);
        }
        if has_server {
            base.duration = now.duration_since(started);
            if base.error_type.is_none() {
                base.error_type = error;
            }
            sink.try_send(base);
        }
    }
}
