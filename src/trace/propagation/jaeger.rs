//! Jaeger propagation (<https://www.jaegertracing.io/docs/client-libraries/#propagation-format>):
//! `uber-trace-id: {trace-id}:{span-id}:{parent-span-id}:{flags}`, possibly URL-encoded
//! (`%3A` for `:`). Ids are hex of up to 32 / 16 digits without leading zeros required; a
//! trace id of 16 digits or fewer is a 64-bit id and is written back as 16 digits. Flags:
//! bit 0 sampled, bit 1 debug. `uberctx-*` baggage headers are never touched.

use super::{Malformed, Remote};
use crate::trace::context::{SpanId, TraceFlags, TraceId};
use crate::trace::hex::{self, Case};

/// The longest decoded value that can be valid: 32 + 1 + 16 + 1 + 16 + 1 + 2.
const MAX_DECODED: usize = 69;

/// Jaeger flag bits.
const SAMPLED: u8 = 0x01;
const DEBUG: u8 = 0x02;

const fn bad(reason: &'static str) -> Malformed {
    Malformed {
        format: "jaeger",
        reason,
    }
}

/// Percent-decodes into a stack buffer; anything longer than a valid value is rejected
/// before it is read further.
fn url_decode(value: &[u8], out: &mut [u8; MAX_DECODED]) -> Result<usize, Malformed> {
    let too_long = bad("longer than any valid uber-trace-id");
    let mut len = 0;
    let mut bytes = value.iter();
    while let Some(&b) = bytes.next() {
        let decoded = if b == b'%' {
            let hi = bytes.next().copied().unwrap_or(b'x');
            let lo = bytes.next().copied().unwrap_or(b'x');
            let v = hex::parse_u64(&[hi, lo], Case::Any).ok_or(bad("invalid %-escape"))?;
            v as u8
        } else {
            b
        };
        *out.get_mut(len).ok_or(too_long)? = decoded;
        len += 1;
    }
    Ok(len)
}

/// Parses one `uber-trace-id` value.
pub fn parse(value: &[u8]) -> Result<Remote, Malformed> {
    let mut buf = [0; MAX_DECODED];
    let len = url_decode(crate::trace::context::trim_ows(value), &mut buf)?;
    let decoded = buf.get(..len).unwrap_or_default();
    let mut fields = decoded.splitn(5, |&b| b == b':');
    let mut next = || {
        fields
            .next()
            .ok_or(bad("fewer than 4 ':'-separated fields"))
    };
    let (trace, span, parent, flags) = (next()?, next()?, next()?, next()?);
    if next().is_ok() {
        return Err(bad("more than 4 fields"));
    }
    let trace_id =
        hex::parse_u128(trace, Case::Any).ok_or(bad("trace id is not 1 to 32 hex digits"))?;
    if trace_id == 0 {
        return Err(bad("all-zero trace id"));
    }
    let span_id =
        hex::parse_u64(span, Case::Any).ok_or(bad("span id is not 1 to 16 hex digits"))?;
    if span_id == 0 {
        return Err(bad("all-zero span id"));
    }
    // Deprecated, usually "0"; must still be a number.
    hex::parse_u64(parent, Case::Any).ok_or(bad("parent span id is not 1 to 16 hex digits"))?;
    let flags = (flags.len() <= 2)
        .then(|| hex::parse_u64(flags, Case::Any))
        .flatten()
        .ok_or(bad("flags are not 1 or 2 hex digits"))? as u8;
    let debug = flags & DEBUG != 0;
    let sampled = flags & SAMPLED != 0 || debug;
    Ok(Remote {
        trace_id: TraceId::from_u128(trace_id),
        span_id: Some(SpanId::from_u64(span_id)),
        sampled: Some(sampled),
        debug,
        short_trace_id: trace.len() <= 16,
        flags: TraceFlags::default().with_sampled(sampled),
    })
}

/// Longest value this writes: 32 + 1 + 16 + 3 + 1.
pub const MAX_LEN: usize = 53;

/// `{trace-id}:{span-id}:0:{flags}` (trace id 16 digits if it came in short, else 32).
pub fn format(
    trace_id: TraceId,
    short: bool,
    span_id: SpanId,
    sampled: bool,
    debug: bool,
    out: &mut [u8; MAX_LEN],
) -> usize {
    let mut trace = [0; 32];
    let trace = super::b3::write_trace_id(trace_id, short, &mut trace);
    let flags = (u8::from(sampled || debug) * SAMPLED) | (u8::from(debug) * DEBUG);
    let parts: [&[u8]; 4] = [trace, b":", &span_id.to_hex(), b":0:"];
    let mut len = 0;
    for part in parts.into_iter().chain([&[b'0' + flags][..]]) {
        for (slot, &b) in out.iter_mut().skip(len).zip(part) {
            *slot = b;
        }
        len += part.len();
    }
    len.min(MAX_LEN)
}
