//! The response body hoptrace sends: an upstream's body streamed through, or a short body
//! of hoptrace's own (error responses), plus the hop's spans, which end with the body. An
//! enum rather than a boxed trait object, so the common path allocates nothing.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use std::future::Future as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{Method, Uri};
use tracing::info;

use super::client::UpstreamBody;
use super::h1::RawFields;
use super::hop::{Outcome, SpanFinish};
use super::upstream::InFlight;
use crate::metrics::RouteMetrics;
use crate::stitch::Tracked;
use crate::trace::context::{SpanId, TraceId, TraceParent};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub struct ResponseBody {
    inner: Inner,
    /// Finished when the body ends, fails, or is dropped early (client gone).
    spans: Option<SpanFinish>,
    /// Metrics and access log, recorded at the same moment.
    done: Option<RequestDone>,
    /// Stitching: the inbound request stays "in flight" (or the call open) until this ends.
    tracked: Option<Tracked>,
    bytes: u64,
    /// This hop's `traceresponse`, written with the response head (`server::conn`), or put in
    /// the header map for hyper's HTTP/2 server (`fields_into_map`): no header value built.
    traceresponse: Option<TraceParent>,
}

/// What is recorded once per request, when its response ends.
#[derive(Debug)]
pub struct RequestDone {
    pub started: Instant,
    pub status: u16,
    pub metrics: RouteMetrics,
    /// `None` when `[access_log] enabled = false`. Boxed: the body is moved whole several
    /// times per request, and without an access log this costs nothing.
    pub access: Option<Box<AccessEntry>>,
}

/// The fields of an access log line known before the body ends.
#[derive(Debug)]
pub struct AccessEntry {
    pub listener: Arc<str>,
    pub client: SocketAddr,
    pub method: Method,
    pub target: Uri,
    pub endpoint: Option<Authority>,
    pub trace: Option<(TraceId, SpanId)>,
    pub error_type: Option<&'static str>,
}

impl RequestDone {
    fn finish(self, outcome: Outcome, bytes: u64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.started);
        self.metrics.record(self.status, elapsed.as_secs_f64());
        let Some(entry) = self.access.map(|e| *e) else {
            return;
        };
        let error_type = entry.error_type.or(match outcome {
            Outcome::Complete => None,
            Outcome::UpstreamFailed => Some("upstream_reset"),
            Outcome::UpstreamStalled => Some("timeout"),
            Outcome::ClientGone => Some("client_closed"),
        });
        let trace_id = entry.trace.map(|(t, _)| t.to_string());
        let span_id = entry.trace.map(|(_, s)| s.to_string());
        let endpoint = entry.endpoint.as_ref().map(Authority::as_str);
        // The path without its query: query values may carry credentials.
        info!(
            target: "hoptrace::access",
            listener = %entry.listener,
            client = %entry.client,
            method = %entry.method,
            path = entry.target.path(),
            status = self.status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            bytes,
            upstream = endpoint,
            trace_id,
            span_id,
            // OpenTelemetry's attribute name, as on the span.
            "error.type" = error_type,
            "request"
        );
    }
}

// The upstream variant (with an HTTP/1.1 connection inside) is the common one; boxing it
// would cost an allocation per request to save bytes on hoptrace's own short answers.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Inner {
    /// Streamed from the upstream, frame by frame, as it arrives.
    Upstream {
        body: UpstreamBody,
        /// Keeps the endpoint counted as outstanding (p2c) until the body is done or dropped,
        /// and takes the connection back to the pool if the body was read to its end.
        in_flight: InFlight,
        /// The upstream's `body_timeout`: the longest wait for its next frame.
        idle: Duration,
        /// Armed while waiting for a frame (created on the first wait only).
        stall: Option<Pin<Box<tokio::time::Sleep>>>,
    },
    /// Made by hoptrace; `None` once sent.
    Local(Option<Bytes>),
}

/// Moves an upstream HTTP/1.1 response's head fields, and this hop's `traceresponse`, into
/// the response's `HeaderMap`, for whatever reads the fields there (hyper's HTTP/2 server,
/// captured response headers). Fields already in the map were set by the proxy: they
/// replace the upstream's of that name, as `traceresponse` does.
pub fn fields_into_map(response: &mut http::Response<ResponseBody>) {
    let traceresponse = response.body_mut().traceresponse.take();
    if let Some(raw) = response.body_mut().take_raw_fields() {
        // Usually empty: what the proxy set goes with the body (`traceresponse`).
        let added = std::mem::take(response.headers_mut());
        let headers = response.headers_mut();
        headers.reserve(raw.len() + added.len() + usize::from(traceresponse.is_some()));
        raw.append_to(headers);
        for name in added.keys() {
            headers.remove(name);
        }
        for (name, value) in &added {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(value) = traceresponse {
        let name = http::HeaderName::from_static("traceresponse");
        response.headers_mut().insert(name, value.to_header_value());
    }
}

impl ResponseBody {
    /// An upstream's body; a wait of more than `idle` for its next frame aborts it.
    pub fn upstream(body: UpstreamBody, in_flight: InFlight, idle: Duration) -> ResponseBody {
        ResponseBody {
            inner: Inner::Upstream {
                body,
                in_flight,
                idle,
                stall: None,
            },
            spans: None,
            done: None,
            tracked: None,
            bytes: 0,
            traceresponse: None,
        }
    }

    pub fn text(text: &'static str) -> ResponseBody {
        ResponseBody {
            inner: Inner::Local(Some(Bytes::from_static(text.as_bytes()))),
            spans: None,
            done: None,
            tracked: None,
            bytes: 0,
            traceresponse: None,
        }
    }

    pub fn empty() -> ResponseBody {
        ResponseBody {
            inner: Inner::Local(None),
            spans: None,
            done: None,
            tracked: None,
            bytes: 0,
            traceresponse: None,
        }
    }

    /// An upstream HTTP/1.1 response's head fields, which are not in the response's
    /// `HeaderMap` until `fields_into_map` puts them there (`h1::RawFields`).
    pub fn take_raw_fields(&mut self) -> Option<RawFields> {
        match &mut self.inner {
            Inner::Upstream { body, .. } => body.take_raw(),
            Inner::Local(_) => None,
        }
    }

    /// This hop's `traceresponse`, to be written with the response head.
    pub fn set_traceresponse(&mut self, value: TraceParent) {
        self.traceresponse = Some(value);
    }

    pub fn traceresponse(&self) -> Option<TraceParent> {
        self.traceresponse
    }

    /// The spans end when this body does.
    pub fn finish_spans_with(&mut self, spans: SpanFinish) {
        self.spans = Some(spans);
    }

    /// Tells stitching when the response ends.
    pub fn track_until_done(&mut self, tracked: Tracked) {
        self.tracked = Some(tracked);
    }

    /// Metrics and the access log line when the response ends.
    pub fn record_when_done(&mut self, done: RequestDone) {
        self.done = Some(done);
    }

    /// An upstream body read to its end hands its connection to the pool.
    fn reuse_connection(&mut self) {
        if let Inner::Upstream {
            body, in_flight, ..
        } = &mut self.inner
        {
            if let Some(conn) = body.take_reusable() {
                in_flight.reuse(conn);
            }
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if outcome == Outcome::Complete {
            self.reuse_connection();
        }
        // One clock read for the spans and the access log / duration metric.
        let now = Instant::now();
        if let Some(spans) = self.spans.take() {
            spans.finish(outcome, now);
        }
        if let Some(done) = self.done.take() {
            done.finish(outcome, self.bytes, now);
        }
        // Stitching: the inbound request is answered, or the attributed call has ended.
        drop(self.tracked.take());
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.reuse_connection();
        if self.spans.is_some() || self.done.is_some() || self.tracked.is_some() {
            // hyper drops a body it never needed to poll (empty, HEAD): that is complete.
            let outcome = if self.is_end_stream() {
                Outcome::Complete
            } else {
                Outcome::ClientGone
            };
            self.finish(outcome);
        }
    }
}

/// The upstream's body failed, or stalled past `body_timeout`.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Upstream(BoxError),
    #[error("upstream body stalled for more than {0:?}")]
    Stalled(Duration),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Upstream {
                body, idle, stall, ..
            } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(frame) => {
                    *stall = None;
                    Poll::Ready(frame.map(|f| f.map_err(BodyError::Upstream)))
                }
                Poll::Pending => {
                    let deadline = tokio::time::Instant::now() + *idle;
                    let timer =
                        stall.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            let idle = *idle;
                            this.finish(Outcome::UpstreamStalled);
                            return Poll::Ready(Some(Err(BodyError::Stalled(idle))));
                        }
                        Poll::Pending => Poll::Pending,
                    }
                }
            },
            Inner::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        };
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.bytes += data.len() as u64;
            }
        }
        match &polled {
            Poll::Ready(None) => this.finish(Outcome::Complete),
            Poll::Ready(Some(Err(_))) => this.finish(Outcome::UpstreamFailed),
            // The last frame: end the spans before handing it over, so that whoever
            // receives it (a parent hop) can only end after this hop did.
            Poll::Ready(Some(Ok(_))) if this.is_end_stream() => this.finish(Outcome::Complete),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream { body, .. } => body.is_end_stream(),
            Inner::Local(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream { body, .. } => body.size_hint(),
            Inner::Local(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
