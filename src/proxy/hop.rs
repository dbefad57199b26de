//! One request's trace: continue the caller's context (read in the configured propagation
//! formats; or, in `restart` mode, start a new trace and link the caller), decide sampling,
//! inject the context the upstream sees in every configured format, add `traceresponse`, and
//! fill in this hop's spans.
//!
//! Which spans a hop records depends on the listener's role: inbound → one SERVER span;
//! outbound → one CLIENT span per upstream attempt; gateway → a SERVER span with the CLIENT
//! span as its child. The upstream's `traceparent` names the innermost of them.
//!
//! Spans end when the response body has been sent to the client, or the stream failed, or
//! the client went away (`SpanFinish`, driven by `ResponseBody`). An unsampled request
//! builds no `SpanRecord` and allocates nothing for tracing but the header values it writes
//! (`traceparent` and the other configured formats upstream, `traceresponse` back; checked by
//! `tests/unsampled_alloc.rs`); unless tail keeping is on, in which case it is recorded and
//! exported only if it fails or is slow (`finish`). With `exporter = "none"` sampled spans
//! are still built: they feed the recent-traces view (`GET /traces`).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};

mod finish;

pub use self::finish::{Outcome, SpanFinish};

use super::body::ResponseBody;
use super::connector::ConnMeta;
use super::error::ProxyError;
use super::listener::{ConnInfo, ListenerCtx};
use super::route::Route;
use super::snapshot::{RouteTarget, Snapshot};
use crate::config::{Config, Propagator, Role, TraceIncoming};
use crate::export::SpanSink;
use crate::stitch::{Inferred, Source, Tracked};
use crate::trace::context::{SpanId, TraceFlags, TraceId, TraceParent};
use crate::trace::propagation::{self, Format, Outgoing, Remote};
use crate::trace::sampler::Sampler;
use crate::trace::span::{
    Attribute, AttributeValue, ConnectionAcquired, SpanKind, SpanLink, SpanRecord,
};

static TRACERESPONSE: HeaderName = HeaderName::from_static("traceresponse");

/// The trace of one request through this hop.
#[derive(Debug)]
pub struct Hop {
    trace_id: TraceId,
    flags: TraceFlags,
    /// Debug sampling asked by the caller (B3, Jaeger); written back in those formats.
    debug: bool,
    /// The trace id came as 64 bits (B3, Jaeger) and is written back so in those formats.
    short_trace_id: bool,
    /// The received `X-Amzn-Trace-Id` when `xray` is configured, for its passed-on fields.
    xray: Option<HeaderValue>,
    tracestate: Option<HeaderValue>,
    server_id: Option<SpanId>,
    client_id: Option<SpanId>,
    config: Arc<Config>,
    recording: Option<Box<Recording>>,
    /// Stitching: this inbound request in the registry, or the call attributed to one.
    tracked: Option<Tracked>,
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
    /// Set for an unsampled request recorded only in case it fails or is slow.
    tail: Option<Tail>,
    /// Outbound: the parent was inferred (or candidates linked) by stitching.
    inferred: Option<Inferred>,
}

/// When an unsampled request's spans are kept anyway (`keep_errors`, `keep_slower_than`).
#[derive(Clone, Copy, Debug)]
struct Tail {
    errors: bool,
    slower_than: Option<std::time::Duration>,
}

impl Hop {
    /// Starts the hop's trace. `None` when the route switched tracing off. `started` and
    /// `wall` are the same moment on the monotonic and the wall clock: spans get their wall
    /// start from `wall` and every later time as a monotonic offset from `started`.
    pub fn start<B>(
        ctx: &ListenerCtx,
        snapshot: &Snapshot,
        route: Option<&Route<RouteTarget>>,
        req: &Request<B>,
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
        let incoming = propagation::extract(req.headers(), formats(&tracing.propagators));
        if incoming.invalid != 0 {
            for format in incoming.invalid_formats() {
                ctx.invalid_contexts.invalid(format.name());
            }
        }
        let restart = snapshot
            .config
            .listeners
            .get(ctx.index)
            .is_some_and(|l| l.trace_incoming == TraceIncoming::Restart);
        // Restart: the caller's context is only a link; nothing of it is continued.
        let mut remote = incoming.remote.filter(|_| !restart);
        // Outbound: a call without context may get its parent from the inbound request
        // that caused it (stitching); decided now, before anything is injected.
        let stitched = (role == Role::Outbound).then(|| {
            let forwarded = remote.and_then(|r| {
                Some(TraceParent {
                    trace_id: r.trace_id,
                    parent_id: r.span_id?,
                    flags: r.flags,
                })
            });
            ctx.stitch.outbound(
                &snapshot.config.stitching,
                template.as_ref(),
                req.uri(),
                req.headers(),
                forwarded,
                started,
            )
        });
        let inferred_parent = stitched
            .as_ref()
            .is_some_and(|s| s.source != Some(Source::Forwarded) && s.parent.is_some());
        if let Some(parent) = stitched
            .as_ref()
            .and_then(|s| s.parent)
            .filter(|_| inferred_parent)
        {
            remote = Some(Remote {
                trace_id: parent.trace_id,
                span_id: Some(parent.parent_id),
                sampled: Some(parent.flags.is_sampled()),
                debug: false,
                short_trace_id: false,
                flags: parent.flags,
            });
        }
        let trace_id = remote.map_or_else(TraceId::random, |r| r.trace_id);
        let sampler = Sampler {
            ratio: sampling_ratio.unwrap_or(tracing.sampling_ratio),
            parent_based: tracing.parent_based,
        };
        let flags = match (remote, incoming.decision.filter(|_| !restart)) {
            // Debug (B3 `d`, Jaeger 0x02) asks for sampling whatever the ratio says.
            (Some(r), _) if r.debug => r.flags.with_sampled(true),
            (Some(r), _) if r.sampled.is_some() => sampler.decide(Some(r.flags), &trace_id),
            // The caller deferred the decision (B3 without state, X-Ray `Sampled=?`): ours.
            (Some(r), _) => r
                .flags
                .with_sampled(sampler.decide(None, &trace_id).is_sampled()),
            // A B3 sampling state without ids: the caller's decision for a new trace.
            (None, Some((sampled, debug))) => {
                let flags = TraceFlags::default().with_sampled(sampled || debug);
                sampler.decide(Some(flags), &trace_id)
            }
            (None, None) => sampler.decide(None, &trace_id),
        };
        let debug = remote.is_some_and(|r| r.debug)
            || incoming
                .decision
                .is_some_and(|(_, debug)| debug && !restart);
        // W3C §3.3: tracestate goes with the parent it came with; a new trace starts empty.
        // Restart: the caller's context (with its tracestate) is kept only for the link. An
        // inferred parent is this process's own SERVER span: no tracestate came with it.
        let (tracestate, caller) = match restart {
            false => (
                remote.and(incoming.tracestate).filter(|_| !inferred_parent),
                None,
            ),
            true => (None, incoming.remote.map(|r| (r, incoming.tracestate))),
        };
        let server_id = (role != Role::Outbound).then(SpanId::random);
        let client_id = (role != Role::Inbound).then(SpanId::random);
        let (mut tracked, inferred) = match stitched {
            Some(s) => (s.tracked, s.inferred),
            None => (None, None),
        };
        if let (Role::Inbound, Some(parent_id), true) = (role, server_id, snapshot.stitch_inbound) {
            let injected = TraceParent {
                trace_id,
                parent_id,
                flags,
            };
            tracked = ctx.stitch.inbound(
                &snapshot.config.stitching,
                template.as_ref(),
                req.uri(),
                req.headers(),
                injected,
                started,
            );
        }

        // Tail keeping: an unsampled request is recorded too, and exported only if it turns
        // out to fail or be slow (decided in `SpanFinish::finish`).
        let tail = (!flags.is_sampled()
            && (tracing.keep_errors || tracing.keep_slower_than.is_some()))
        .then_some(Tail {
            errors: tracing.keep_errors,
            slower_than: tracing.keep_slower_than,
        });
        let recording = ((flags.is_sampled() || tail.is_some()) && sink.is_enabled()).then(|| {
            let headers = req.headers();
            let captured = capture(&tracing.capture_request_headers, headers);
            super::boxed(|| Recording {
                sink: sink.clone(),
                started,
                base: SpanRecord {
                    kind: SpanKind::Server,
                    trace_id,
                    span_id: server_id.or(client_id).unwrap_or_else(SpanId::random),
                    parent_span_id: remote.and_then(|r| r.span_id),
                    // An inferred parent is this process's own SERVER span.
                    parent_is_remote: remote.is_some_and(|r| r.span_id.is_some())
                        && !inferred_parent,
                    flags,
                    debug,
                    tracestate: tracestate.clone(),
                    start: wall,
                    duration: std::time::Duration::ZERO,
                    method: req.method().clone(),
                    route: template,
                    target: req.uri().clone(),
                    host: headers.get(header::HOST).cloned(),
                    scheme: if conn.tls { "https" } else { "http" },
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
                    links: caller
                        .and_then(|(r, tracestate)| {
                            Some(SpanLink {
                                trace_id: r.trace_id,
                                span_id: r.span_id?,
                                flags: r.flags,
                                tracestate,
                                remote: true,
                                attributes: vec![Attribute {
                                    key: "hoptrace.link.reason",
                                    value: AttributeValue::Str("restart"),
                                }],
                            })
                        })
                        .into_iter()
                        .collect(),
                    kept_reason: None,
                    attributes: Vec::new(),
                },
                tail,
                has_server: role != Role::Outbound,
                client: None,
                client_started: None,
                inferred: None,
            })
        });
        let mut recording = recording;
        if let Some(rec) = recording.as_ref() {
            // A sampled SERVER span starts now (an unsampled one counts only if kept).
            if rec.has_server && rec.tail.is_none() {
                rec.sink.started(1);
            }
        }
        if let (Some(rec), Some(inferred)) = (recording.as_mut(), inferred) {
            // The CLIENT spans are cloned from `base`.
            inferred.annotate(&mut rec.base);
            rec.inferred = Some(inferred);
        }
        Some(Hop {
            trace_id,
            flags,
            debug,
            short_trace_id: remote.is_some_and(|r| r.short_trace_id),
            xray: incoming.xray.filter(|_| !restart),
            tracestate,
            server_id,
            client_id,
            config: snapshot.config.clone(),
            recording,
            tracked,
            resend_count: 0,
        })
    }

    /// The stitching registration, to be held until the response ends.
    pub fn take_tracked(&mut self) -> Option<Tracked> {
        self.tracked.take()
    }

    /// The span the upstream's `traceparent` names as its parent.
    fn upstream_parent(&self) -> Option<SpanId> {
        self.client_id.or(self.server_id)
    }

    /// The span this hop reports in `traceresponse`: the one for the request it received.
    pub fn own_span(&self) -> Option<SpanId> {
        self.server_id.or(self.client_id)
    }

    /// Writes the context the upstream continues in every configured format (also when
    /// unsampled: the flag says so). The incoming `tracestate` goes on unchanged, or none for
    /// a new trace. Headers of formats not configured are left as they came.
    pub fn inject(&self, headers: &mut HeaderMap) {
        let Some(span_id) = self.upstream_parent() else {
            return;
        };
        let out = Outgoing {
            trace_id: self.trace_id,
            span_id,
            flags: self.flags,
            debug: self.debug,
            short_trace_id: self.short_trace_id,
            tracestate: self.tracestate.as_ref(),
            xray: self.xray.as_ref(),
        };
        propagation::inject(headers, formats(&self.config.tracing.propagators), &out);
    }

    /// An upstream attempt begins (CLIENT span start) on `peer`, over TLS if `tls`.
    pub fn attempt<B>(&mut self, peer: &Authority, tls: bool, req: &mut Request<B>) {
        // No CLIENT span (inbound) is known without reading the boxed recording, which is
        // out of cache by now when many requests are in flight.
        let Some(client_id) = self.client_id else {
            return;
        };
        let Some(rec) = self.recording.as_mut() else {
            return;
        };
        let now = Instant::now();
        let mut client = rec.base.clone();
        client.kind = SpanKind::Client;
        client.span_id = client_id;
        if let Some(server_id) = self.server_id {
            // Gateway: the CLIENT span is a child of this hop's SERVER span, which has the links.
            client.parent_span_id = Some(server_id);
            client.parent_is_remote = false;
            client.links = Vec::new();
        }
        client.start = rec.base.start + now.duration_since(rec.started);
        client.peer = Some(peer.clone());
        // `url.full` and `network.protocol.version` say how the request went out.
        client.scheme = if tls { "https" } else { "http" };
        client.version = req.version();
        client.resend_count = self.resend_count;
        rec.client = Some(client);
        rec.client_started = Some(now);
        if rec.tail.is_none() {
            rec.sink.started(1);
        }
    }

    /// Response headers arrived from the upstream, over the connection `meta` describes
    /// (the client copies each connection's `ConnMeta` into its responses' extensions).
    pub fn attempt_response(&mut self, status: u16, meta: Option<&ConnMeta>) {
        // Inbound: no CLIENT span, and no need to touch the recording (see `attempt`).
        if self.client_id.is_none() {
            return;
        }
        let Some(rec) = self.recording.as_mut() else {
            return;
        };
        if let (Some(client), Some(client_started)) = (rec.client.as_mut(), rec.client_started) {
            let now = Instant::now();
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
    }

    /// The request failed with `err` (before any upstream response).
    pub fn failed(&mut self, err: &ProxyError) {
        let Some(rec) = self.recording.as_mut() else {
            return;
        };
        let kind = err.kind();
        rec.base.error_type = Some(kind);
        if rec.client.is_none() && !rec.has_server {
            // Outbound: the failure (no route, bad request, no healthy endpoint left for a
            // retry) is still this hop's span: the attempt that was not sent, from now when
            // earlier attempts have their own spans.
            let mut client = rec.base.clone();
            client.kind = SpanKind::Client;
            client.span_id = self.client_id.unwrap_or(client.span_id);
            client.resend_count = self.resend_count;
            let started = match self.resend_count {
                0 => rec.started,
                _ => Instant::now(),
            };
            client.start = rec.base.start + started.duration_since(rec.started);
            rec.client_started = Some(started);
            rec.client = Some(client);
            if rec.tail.is_none() {
                rec.sink.started(1);
            }
        }
        if let Some(client) = rec.client.as_mut() {
            client.error_type = Some(kind);
        }
    }

    /// Adds `traceresponse` (replacing one from further on; written with the head, see
    /// `ResponseBody::set_traceresponse`) and the trace-id header, records status and
    /// captured headers.
    pub fn respond(&mut self, response: &mut Response<ResponseBody>) {
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
                // An upstream's (hyper's responses carry theirs in the map; an HTTP/1.1
                // upstream's is left out when the head is written).
                response.headers_mut().remove(&TRACERESPONSE);
                response.body_mut().set_traceresponse(value);
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
    pub fn into_finish(mut self) -> Option<SpanFinish> {
        self.recording
            .take()
            .map(|recording| SpanFinish { recording })
    }
}

impl Drop for Hop {
    /// The request was dropped before its response existed (the client went away, or the
    /// connection was cut at shutdown): its spans end now, as `client_closed`, rather than
    /// vanish uncounted.
    fn drop(&mut self) {
        if let Some(recording) = self.recording.take() {
            SpanFinish { recording }.finish(Outcome::ClientGone, Instant::now());
        }
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

/// The configured propagators as trace formats (a fixed mapping: no allocation).
fn formats(list: &[Propagator]) -> impl Iterator<Item = Format> + '_ {
    list.iter().map(|p| match p {
        Propagator::TraceContext => Format::TraceContext,
        Propagator::B3 => Format::B3,
        Propagator::B3Multi => Format::B3Multi,
        Propagator::Jaeger => Format::Jaeger,
        Propagator::XRay => Format::XRay,
    })
}
