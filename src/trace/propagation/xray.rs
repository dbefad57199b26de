//! AWS X-Ray propagation (<https://docs.aws.amazon.com/xray/latest/devguide/xray-concepts.html#xray-concepts-tracingheader>):
//! `X-Amzn-Trace-Id: Root=1-{8 hex time}-{24 hex};Parent={16 hex};Sampled={0|1|?}`.
//! The W3C trace id is the time and random parts concatenated (32 digits). Fields are
//! `;`-separated `key=value` pairs in any order; other fields (`Lineage`, application data)
//! are passed on, `Self` (the previous hop's own segment, added by load balancers) is not.
//! A `Root` without `Parent` (what an ALB sends when it starts a trace) keeps the trace id
//! with no parent span.

use super::{Malformed, Remote};
use crate::trace::context::{SpanId, TraceFlags, TraceId, trim_ows};
use crate::trace::hex::{self, Case};

const fn bad(reason: &'static str) -> Malformed {
    Malformed {
        format: "xray",
        reason,
    }
}

/// The `key=value` members of a header value, OWS-trimmed; empty members are skipped.
fn members(value: &[u8]) -> impl Iterator<Item = Result<(&[u8], &[u8]), Malformed>> {
    value
        .split(|&b| b == b';')
        .map(trim_ows)
        .filter(|m| !m.is_empty())
        .map(|m| {
            let eq = m
                .iter()
                .position(|&b| b == b'=')
                .ok_or(bad("field without '='"))?;
            let (key, value) = m.split_at(eq);
            Ok((trim_ows(key), trim_ows(value.get(1..).unwrap_or_default())))
        })
}

/// `1-{8 hex}-{24 hex}` → the 128-bit trace id.
fn root(s: &[u8]) -> Result<TraceId, Malformed> {
    let invalid = bad("Root is not 1-{8 hex}-{24 hex}");
    let [b'1', b'-', rest @ ..] = s else {
        return Err(invalid);
    };
    let (time, rest) = rest.split_first_chunk::<8>().ok_or(invalid)?;
    let [b'-', random @ ..] = rest else {
        return Err(invalid);
    };
    if random.len() != 24 {
        return Err(invalid);
    }
    let time = hex::parse_u128(time, Case::Lower).ok_or(invalid)?;
    let random = hex::parse_u128(random, Case::Lower).ok_or(invalid)?;
    let id = time << 96 | random;
    if id == 0 {
        return Err(bad("all-zero trace id"));
    }
    Ok(TraceId::from_u128(id))
}

/// Parses one `X-Amzn-Trace-Id` value. `Root` is required; `Parent` and `Sampled` are
/// optional (`Sampled` absent or `?`: the caller left the decision to us); each at most once.
pub fn parse(value: &[u8]) -> Result<Remote, Malformed> {
    let (mut trace_id, mut parent, mut sampled) = (None, None, None);
    for member in members(value) {
        let (key, value) = member?;
        match key {
            b"Root" if trace_id.is_some() => return Err(bad("Root given twice")),
            b"Root" => trace_id = Some(root(value)?),
            b"Parent" if parent.is_some() => return Err(bad("Parent given twice")),
            b"Parent" => {
                let id = (value.len() == 16)
                    .then(|| hex::parse_u64(value, Case::Lower))
                    .flatten()
                    .ok_or(bad("Parent is not 16 lowercase hex digits"))?;
                if id == 0 {
                    return Err(bad("all-zero Parent"));
                }
                parent = Some(SpanId::from_u64(id));
            }
            b"Sampled" if sampled.is_some() => return Err(bad("Sampled given twice")),
            b"Sampled" => {
                sampled = Some(match value {
                    b"1" => Some(true),
                    b"0" => Some(false),
                    b"?" => None,
                    _ => return Err(bad("Sampled is not 0, 1 or ?")),
                })
            }
            _ => {}
        }
    }
    let trace_id = trace_id.ok_or(bad("no Root"))?;
    let sampled = sampled.flatten();
    Ok(Remote {
        trace_id,
        span_id: parent,
        sampled,
        debug: false,
        short_trace_id: false,
        flags: TraceFlags::default().with_sampled(sampled.unwrap_or(false)),
    })
}

/// The fields of a received value that are passed on: all but `Root`, `Parent`, `Sampled`
/// and `Self`, in their order, as `key=value`.
pub fn passed_on(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b';')
        .map(trim_ows)
        .filter(|m| !m.is_empty())
        .filter(|m| {
            let key = trim_ows(m.split(|&b| b == b'=').next().unwrap_or_default());
            !matches!(key, b"Root" | b"Parent" | b"Sampled" | b"Self")
        })
}

/// `Root=1-{8}-{24};Parent={16};Sampled={0|1}` followed by `extra` (see `passed_on`).
pub fn format(trace_id: TraceId, parent: SpanId, sampled: bool, extra: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(74 + extra.map_or(0, <[u8]>::len));
    let hex = trace_id.to_hex();
    let (time, random) = hex.split_at(8);
    out.extend_from_slice(b"Root=1-");
    out.extend_from_slice(time);
    out.push(b'-');
    out.extend_from_slice(random);
    out.extend_from_slice(b";Parent=");
    out.extend_from_slice(&parent.to_hex());
    out.extend_from_slice(if sampled {
        b";Sampled=1"
    } else {
        b";Sampled=0"
    });
    for field in extra.into_iter().flat_map(passed_on) {
        out.push(b';');
        out.extend_from_slice(field);
    }
    out
}
