//! Zipkin B3 propagation (<https://github.com/openzipkin/b3-propagation>): the single `b3`
//! header and the multi-header `x-b3-*` form. Ids are lowercase hex: the trace id 16 or 32
//! digits (a 64-bit id is left-padded and remembered as short), span ids 16 digits, all-zero
//! invalid.

use super::{Malformed, Remote};
use crate::trace::context::{SpanId, TraceFlags, TraceId};
use crate::trace::hex::{self, Case};

/// What a B3 header carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum B3 {
    Context(Remote),
    /// Only a sampling decision (`b3: 0`, `b3: d`, or `x-b3-sampled` alone): the caller's
    /// decision for a trace that starts here.
    Decision {
        sampled: bool,
        debug: bool,
    },
}

const fn bad(reason: &'static str) -> Malformed {
    Malformed {
        format: "b3",
        reason,
    }
}

/// One B3 sampling state: `Some((sampled, debug))`.
fn single_sampling(s: &[u8]) -> Option<(bool, bool)> {
    match s {
        b"0" => Some((false, false)),
        b"1" => Some((true, false)),
        // B3: "d" is debug, which implies sampled.
        b"d" => Some((true, true)),
        _ => None,
    }
}

fn trace_id(s: &[u8]) -> Result<(TraceId, bool), Malformed> {
    if s.len() != 16 && s.len() != 32 {
        return Err(bad("trace id is not 16 or 32 lowercase hex digits"));
    }
    let id = hex::parse_u128(s, Case::Lower)
        .ok_or(bad("trace id is not 16 or 32 lowercase hex digits"))?;
    if id == 0 {
        return Err(bad("all-zero trace id"));
    }
    Ok((TraceId::from_u128(id), s.len() == 16))
}

fn span_id(s: &[u8], what: &'static str) -> Result<SpanId, Malformed> {
    let id = (s.len() == 16)
        .then(|| hex::parse_u64(s, Case::Lower))
        .flatten()
        .ok_or(bad(what))?;
    if id == 0 {
        return Err(bad("all-zero span id"));
    }
    Ok(SpanId::from_u64(id))
}

fn context(trace: (TraceId, bool), span: SpanId, sampling: Option<(bool, bool)>) -> Remote {
    let (trace_id, short_trace_id) = trace;
    let sampled = sampling.map(|(s, _)| s);
    Remote {
        trace_id,
        span_id: Some(span),
        sampled,
        debug: sampling.is_some_and(|(_, d)| d),
        short_trace_id,
        flags: TraceFlags::default().with_sampled(sampled.unwrap_or(false)),
    }
}

/// The single header: `{traceid}-{spanid}[-{sampling}[-{parentspanid}]]`, or `{sampling}`
/// alone. The parent span id is checked but not kept (the caller's span is `spanid`).
pub fn parse_single(value: &[u8]) -> Result<B3, Malformed> {
    let value = crate::trace::context::trim_ows(value);
    if let Some((sampled, debug)) = single_sampling(value) {
        return Ok(B3::Decision { sampled, debug });
    }
    // At most 4 fields; a fifth '-' is an error, found without splitting further.
    let mut fields = value.splitn(5, |&b| b == b'-');
    let trace = trace_id(fields.next().unwrap_or_default())?;
    let span = span_id(
        fields.next().ok_or(bad("no span id"))?,
        "span id is not 16 lowercase hex digits",
    )?;
    let sampling = match fields.next() {
        None => None,
        Some(s) => Some(single_sampling(s).ok_or(bad("sampling state is not 0, 1 or d"))?),
    };
    if let Some(parent) = fields.next() {
        span_id(parent, "parent span id is not 16 lowercase hex digits")?;
    }
    if fields.next().is_some() {
        return Err(bad("more than 4 fields"));
    }
    Ok(B3::Context(context(trace, span, sampling)))
}

/// The values of the `x-b3-*` headers present (one line each). `Ok(None)`: none present.
#[derive(Clone, Copy, Debug, Default)]
pub struct MultiHeaders<'a> {
    pub trace_id: Option<&'a [u8]>,
    pub span_id: Option<&'a [u8]>,
    pub parent_span_id: Option<&'a [u8]>,
    pub sampled: Option<&'a [u8]>,
    pub flags: Option<&'a [u8]>,
}

/// The multi-header form. `x-b3-sampled` is `1`/`0` (and, per the spec, the older
/// `true`/`false`); `x-b3-flags: 1` is debug and implies sampled; other flag values are
/// ignored, as the spec allows.
pub fn parse_multi(h: MultiHeaders<'_>) -> Result<Option<B3>, Malformed> {
    let trim = crate::trace::context::trim_ows;
    let debug = h.flags.map(trim) == Some(b"1");
    let sampled = match h.sampled.map(trim) {
        None => None,
        Some(b"1" | b"true") => Some(true),
        Some(b"0" | b"false") => Some(false),
        Some(_) => return Err(bad("x-b3-sampled is not 1, 0, true or false")),
    };
    let sampling = match (sampled, debug) {
        (_, true) => Some((true, true)),
        (Some(s), false) => Some((s, false)),
        (None, false) => None,
    };
    let Some(trace) = h.trace_id else {
        if h.span_id.is_some() || h.parent_span_id.is_some() {
            return Err(bad("x-b3-spanid without x-b3-traceid"));
        }
        return Ok(sampling.map(|(sampled, debug)| B3::Decision { sampled, debug }));
    };
    let trace = trace_id(trim(trace))?;
    let span = span_id(
        trim(h.span_id.ok_or(bad("x-b3-traceid without x-b3-spanid"))?),
        "x-b3-spanid is not 16 lowercase hex digits",
    )?;
    if let Some(parent) = h.parent_span_id {
        span_id(
            trim(parent),
            "x-b3-parentspanid is not 16 lowercase hex digits",
        )?;
    }
    Ok(Some(B3::Context(context(trace, span, sampling))))
}

/// Longest single header this writes: 32 + 1 + 16 + 1 + 1.
pub const SINGLE_MAX: usize = 51;

/// The trace id as B3 writes it: 16 digits when it came in short, else 32.
pub fn write_trace_id(trace_id: TraceId, short: bool, out: &mut [u8; 32]) -> &[u8] {
    let digits = if short { 16 } else { 32 };
    let out = out.get_mut(..digits).unwrap_or_default();
    hex::write(trace_id.to_u128(), out);
    out
}

/// `{traceid}-{spanid}-{1|0|d}` into a stack buffer; returns the used length.
pub fn format_single(
    trace_id: TraceId,
    short: bool,
    span_id: SpanId,
    sampled: bool,
    debug: bool,
    out: &mut [u8; SINGLE_MAX],
) -> usize {
    let mut trace = [0; 32];
    let trace = write_trace_id(trace_id, short, &mut trace);
    let state = match (debug, sampled) {
        (true, _) => b'd',
        (false, true) => b'1',
        (false, false) => b'0',
    };
    let parts: [&[u8]; 5] = [trace, b"-", &span_id.to_hex(), b"-", &[state]];
    let mut len = 0;
    for part in parts {
        for (slot, &b) in out.iter_mut().skip(len).zip(part) {
            *slot = b;
        }
        len += part.len();
    }
    len.min(SINGLE_MAX)
}
