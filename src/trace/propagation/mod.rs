//! The propagation formats hoptrace reads and writes: W3C trace context (`super::context`),
//! B3 single and multi header, Jaeger `uber-trace-id` and AWS X-Ray `X-Amzn-Trace-Id`.
//!
//! Every format reads into one small type, `Remote`; `extract` tries the configured formats
//! in order and the first valid context wins; `inject` writes every configured format from
//! one `Outgoing` context, so a request that came in with B3 leaves with B3 and `traceparent`
//! naming the same trace. Headers of formats that are not configured are never touched.
//!
//! Each parser is a pure function over the header's bytes: linear in its length, no
//! allocation, no panic on any input.

pub mod b3;
pub mod jaeger;
pub mod xray;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::context::{self, ContextError, SpanId, TRACEPARENT, TRACESTATE, TraceFlags, TraceId};

pub const B3: HeaderName = HeaderName::from_static("b3");
pub const X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
pub const UBER_TRACE_ID: HeaderName = HeaderName::from_static("uber-trace-id");
pub const X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");

/// A propagation format, by its `OTEL_PROPAGATORS` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// `traceparent` + `tracestate`.
    TraceContext,
    /// `b3`.
    B3,
    /// `x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`, `x-b3-sampled`, `x-b3-flags`.
    B3Multi,
    /// `uber-trace-id`.
    Jaeger,
    /// `x-amzn-trace-id`.
    XRay,
}

/// A context read from a request by one format, before this hop's sampling decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remote {
    pub trace_id: TraceId,
    /// The caller's span. `None` only for an X-Ray `Root` without `Parent`.
    pub span_id: Option<SpanId>,
    /// The caller's decision; `None` when it left it to us (B3 without a sampling state,
    /// X-Ray `Sampled=?` or absent).
    pub sampled: Option<bool>,
    /// Debug: sample whatever the ratio says (B3 `d` / `x-b3-flags: 1`, Jaeger flag 0x02).
    pub debug: bool,
    /// The trace id came as 16 hex digits (64-bit B3/Jaeger): B3 and Jaeger write it back so.
    pub short_trace_id: bool,
    /// W3C trace-flags: as received for `traceparent` (unknown bits kept), else the sampled bit.
    pub flags: TraceFlags,
}

/// Why a header of one of the other formats was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{format}: {reason}")]
pub struct Malformed {
    pub format: &'static str,
    pub reason: &'static str,
}

/// A rejected header, of whichever format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    TraceContext(#[from] ContextError),
    #[error(transparent)]
    Other(#[from] Malformed),
}

/// What the configured formats found in a request. Never fails: invalid headers are
/// reported in `error` (the first one) and treated as absent.
#[derive(Clone, Debug, Default)]
pub struct Incoming {
    /// The first valid context in the configured order.
    pub remote: Option<Remote>,
    /// Which format it came from.
    pub format: Option<Format>,
    /// `tracestate`, kept when `traceparent` was valid and names the same trace as `remote`.
    pub tracestate: Option<HeaderValue>,
    /// A B3 sampling state without ids: the caller's decision for a trace starting here.
    pub decision: Option<(bool, bool)>,
    /// The received `X-Amzn-Trace-Id` when `xray` is configured and it is valid, for its
    /// extra fields.
    pub xray: Option<HeaderValue>,
    /// The first rejected header, for logs.
    pub error: Option<ExtractError>,
    /// Every format whose header was present and rejected (a bit per `Format`), for metrics.
    pub invalid: u8,
}

impl Format {
    /// Every format, in the order of their bits in `Incoming::invalid`.
    pub const ALL: [Format; 5] = [
        Format::TraceContext,
        Format::B3,
        Format::B3Multi,
        Format::Jaeger,
        Format::XRay,
    ];

    /// The `OTEL_PROPAGATORS` name.
    pub fn name(self) -> &'static str {
        match self {
            Format::TraceContext => "tracecontext",
            Format::B3 => "b3",
            Format::B3Multi => "b3multi",
            Format::Jaeger => "jaeger",
            Format::XRay => "xray",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl Incoming {
    /// The formats whose header was present and rejected.
    pub fn invalid_formats(&self) -> impl Iterator<Item = Format> + '_ {
        Format::ALL
            .into_iter()
            .filter(|f| self.invalid & f.bit() != 0)
    }
}

/// The one value of a header; `Err` when it is sent more than once (no way to choose).
fn one<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    format: &'static str,
) -> Result<Option<&'h HeaderValue>, Malformed> {
    let mut values = headers.get_all(name).into_iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Malformed {
            format,
            reason: "header sent more than once",
        });
    }
    Ok(first)
}

/// Reads the configured formats in order; the first valid context wins. With only
/// `TraceContext` configured this is exactly `context::extract` (the default's cost).
pub fn extract(headers: &HeaderMap, formats: impl IntoIterator<Item = Format>) -> Incoming {
    let mut incoming = Incoming::default();
    let mut w3c_trace = None;
    for format in formats {
        let found = match format {
            Format::TraceContext => {
                let w3c = context::extract(headers);
                if let Some(e) = w3c.error {
                    incoming.error.get_or_insert(e.into());
                    incoming.invalid |= format.bit();
                }
                let Some(parent) = w3c.parent else { continue };
                let remote = Remote {
                    trace_id: parent.trace_id,
                    span_id: Some(parent.parent_id),
                    sampled: Some(parent.flags.is_sampled()),
                    debug: false,
                    short_trace_id: false,
                    flags: parent.flags,
                };
                w3c_trace = Some(parent.trace_id);
                incoming.tracestate = w3c.tracestate.map(|ts| ts.header_value().clone());
                Ok(Some(remote))
            }
            Format::B3 => one(headers, &B3, "b3").and_then(|v| match v {
                None => Ok(None),
                Some(v) => b3::parse_single(v.as_bytes()).map(|b| decision(&mut incoming, b)),
            }),
            Format::B3Multi => multi(headers)
                .and_then(b3::parse_multi)
                .map(|b| b.and_then(|b| decision(&mut incoming, b))),
            Format::Jaeger => one(headers, &UBER_TRACE_ID, "jaeger")
                .and_then(|v| v.map(|v| jaeger::parse(v.as_bytes())).transpose()),
            Format::XRay => one(headers, &X_AMZN_TRACE_ID, "xray").and_then(|v| {
                let Some(v) = v else { return Ok(None) };
                let remote = xray::parse(v.as_bytes())?;
                // Only a valid header's extra fields are passed on.
                incoming.xray = Some(v.clone());
                Ok(Some(remote))
            }),
        };
        match found {
            Ok(Some(remote)) if incoming.remote.is_none() => {
                incoming.remote = Some(remote);
                incoming.format = Some(format);
            }
            Ok(_) => {}
            Err(e) => {
                incoming.error.get_or_insert(e.into());
                incoming.invalid |= format.bit();
            }
        }
    }
    // W3C §3.3: tracestate belongs to its traceparent's trace; it goes on only when that
    // trace is the one continued.
    if incoming.remote.map(|r| r.trace_id) != w3c_trace {
        incoming.tracestate = None;
    }
    incoming
}

/// A B3 sampling-only header is remembered as a decision, not a context.
fn decision(incoming: &mut Incoming, b3: b3::B3) -> Option<Remote> {
    match b3 {
        b3::B3::Context(remote) => Some(remote),
        b3::B3::Decision { sampled, debug } => {
            incoming.decision.get_or_insert((sampled, debug));
            None
        }
    }
}

fn multi(headers: &HeaderMap) -> Result<b3::MultiHeaders<'_>, Malformed> {
    let get =
        |name: &HeaderName| one(headers, name, "b3multi").map(|v| v.map(HeaderValue::as_bytes));
    Ok(b3::MultiHeaders {
        trace_id: get(&X_B3_TRACEID)?,
        span_id: get(&X_B3_SPANID)?,
        parent_span_id: get(&X_B3_PARENTSPANID)?,
        sampled: get(&X_B3_SAMPLED)?,
        flags: get(&X_B3_FLAGS)?,
    })
}

/// The context the upstream continues: this hop's span as its parent.
#[derive(Clone, Copy, Debug)]
pub struct Outgoing<'a> {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
    pub debug: bool,
    pub short_trace_id: bool,
    /// `tracestate` to send on, or none (a new trace starts without one).
    pub tracestate: Option<&'a HeaderValue>,
    /// The received `X-Amzn-Trace-Id`, whose extra fields are passed on.
    pub xray: Option<&'a HeaderValue>,
}

/// Writes every configured format. Headers of a configured format are always replaced (also
/// when another format won the extract), so the upstream sees one consistent parent.
pub fn inject(
    headers: &mut HeaderMap,
    formats: impl IntoIterator<Item = Format>,
    out: &Outgoing<'_>,
) {
    let sampled = out.flags.is_sampled();
    for format in formats {
        match format {
            Format::TraceContext => {
                let parent = context::TraceParent {
                    trace_id: out.trace_id,
                    parent_id: out.span_id,
                    flags: out.flags,
                };
                headers.insert(TRACEPARENT, parent.to_header_value());
                match out.tracestate {
                    Some(ts) => headers.insert(TRACESTATE, ts.clone()),
                    None => headers.remove(TRACESTATE),
                };
            }
            Format::B3 => {
                let mut buf = [0; b3::SINGLE_MAX];
                let len = b3::format_single(
                    out.trace_id,
                    out.short_trace_id,
                    out.span_id,
                    sampled,
                    out.debug,
                    &mut buf,
                );
                insert(headers, B3, buf.get(..len));
            }
            Format::B3Multi => {
                for name in [X_B3_PARENTSPANID, X_B3_SAMPLED, X_B3_FLAGS] {
                    headers.remove(name);
                }
                let mut trace = [0; 32];
                let trace = b3::write_trace_id(out.trace_id, out.short_trace_id, &mut trace);
                insert(headers, X_B3_TRACEID, Some(trace));
                insert(headers, X_B3_SPANID, Some(&out.span_id.to_hex()));
                // B3: debug implies sampled, and then X-B3-Sampled is not sent.
                if out.debug {
                    headers.insert(X_B3_FLAGS, HeaderValue::from_static("1"));
                } else {
                    let state = if sampled { "1" } else { "0" };
                    headers.insert(X_B3_SAMPLED, HeaderValue::from_static(state));
                }
            }
            Format::Jaeger => {
                let mut buf = [0; jaeger::MAX_LEN];
                let len = jaeger::format(
                    out.trace_id,
                    out.short_trace_id,
                    out.span_id,
                    sampled,
                    out.debug,
                    &mut buf,
                );
                insert(headers, UBER_TRACE_ID, buf.get(..len));
            }
            Format::XRay => {
                let value = xray::format(
                    out.trace_id,
                    out.span_id,
                    sampled,
                    out.xray.map(HeaderValue::as_bytes),
                );
                insert(headers, X_AMZN_TRACE_ID, Some(&value));
            }
        }
    }
}

/// Replaces `name` with `value`. The formatters write only visible ASCII (passed-on X-Ray
/// fields came from a valid header value), so the conversion cannot fail in practice; if
/// it did, the header is removed rather than left stale.
fn insert(headers: &mut HeaderMap, name: HeaderName, value: Option<&[u8]>) {
    match value.and_then(|v| HeaderValue::from_bytes(v).ok()) {
        Some(v) => {
            headers.insert(name, v);
        }
        None => {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
