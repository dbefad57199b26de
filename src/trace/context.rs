//! W3C Trace Context Level 1 (<https://www.w3.org/TR/trace-context/>): the fixed-size ids and
//! flags, the strict `traceparent` parser and stack-buffer formatter, and `extract`, which reads
//! both headers of a request. `tracestate` validation lives in `super::tracestate`.
//!
//! Everything here is linear in the input length, allocation-free except for building a
//! `HeaderValue`, and never panics on any input (the parent module denies the lints).

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};

pub use super::tracestate::TraceState;

/// The `traceparent` header name (W3C trace-context §3.2).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` header name (W3C trace-context §3.3).
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Length of a version-00 `traceparent`: 2 + 1 + 32 + 1 + 16 + 1 + 2.
pub const TRACEPARENT_LEN: usize = 55;

/// A 16-byte trace id, big-endian as on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id (the `parent-id` of a `traceparent`), big-endian as on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SpanId(pub [u8; 8]);

/// The `trace-flags` byte. All bits are kept as received so the proxy forwards them unchanged;
/// only `SAMPLED` is interpreted (W3C trace-context §3.2.2.5).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct TraceFlags(pub u8);

impl TraceId {
    /// A random id; never all-zero, since all-zero is invalid (§3.2.2.3).
    pub fn random() -> TraceId {
        TraceId(fastrand::u128(1..).to_be_bytes())
    }

    /// W3C trace-context §3.2.2.3: all-zero is invalid.
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 16]
    }

    /// Lowercase ASCII hex, as it appears in a `traceparent`.
    pub fn to_hex(&self) -> [u8; 32] {
        let mut out = [0; 32];
        encode_hex(&self.0, &mut out);
        out
    }

    pub fn to_u128(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    pub fn from_u128(id: u128) -> TraceId {
        TraceId(id.to_be_bytes())
    }
}

impl SpanId {
    /// A random id; never all-zero, since all-zero is invalid (§3.2.2.4).
    pub fn random() -> SpanId {
        SpanId(fastrand::u64(1..).to_be_bytes())
    }

    /// W3C trace-context §3.2.2.4: all-zero is invalid.
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 8]
    }

    /// Lowercase ASCII hex, as it appears in a `traceparent`.
    pub fn to_hex(&self) -> [u8; 16] {
        let mut out = [0; 16];
        encode_hex(&self.0, &mut out);
        out
    }

    pub fn to_u64(&self) -> u64 {
        u64::from_be_bytes(self.0)
    }

    pub fn from_u64(id: u64) -> SpanId {
        SpanId(id.to_be_bytes())
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_ascii(f, &self.to_hex())
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_ascii(f, &self.to_hex())
    }
}

fn write_ascii(f: &mut fmt::Formatter<'_>, hex: &[u8]) -> fmt::Result {
    f.write_str(std::str::from_utf8(hex).map_err(|_| fmt::Error)?)
}

impl TraceFlags {
    /// W3C trace-context §3.2.2.5.1: the sampled flag.
    pub const SAMPLED: u8 = 0x01;

    pub fn is_sampled(self) -> bool {
        self.0 & Self::SAMPLED != 0
    }

    /// Sets or clears the sampled bit, keeping every other bit as it was.
    pub fn with_sampled(self, sampled: bool) -> TraceFlags {
        if sampled {
            TraceFlags(self.0 | Self::SAMPLED)
        } else {
            TraceFlags(self.0 & !Self::SAMPLED)
        }
    }
}

/// Why a `traceparent` or `tracestate` was rejected. Each reason is its own variant so logs
/// and counters can tell them apart.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ContextError {
    #[error("traceparent: more than one header")]
    MultipleTraceParent,
    #[error("traceparent: shorter than 55 characters")]
    TraceParentTooShort,
    #[error("traceparent: version 00 has data after trace-flags")]
    TrailingData,
    #[error("traceparent: extra fields of a higher version must start with '-'")]
    ExtraFieldSeparator,
    #[error("traceparent: version is not 2 lowercase hex digits")]
    InvalidVersion,
    #[error("traceparent: version ff is invalid")]
    VersionFf,
    #[error("traceparent: fields are not separated by '-'")]
    InvalidSeparator,
    #[error("traceparent: trace-id is not 32 lowercase hex digits")]
    InvalidTraceId,
    #[error("traceparent: all-zero trace-id")]
    ZeroTraceId,
    #[error("traceparent: parent-id is not 16 lowercase hex digits")]
    InvalidParentId,
    #[error("traceparent: all-zero parent-id")]
    ZeroParentId,
    #[error("traceparent: trace-flags is not 2 lowercase hex digits")]
    InvalidFlags,
    #[error("tracestate: more than 32 members")]
    TooManyMembers,
    #[error("tracestate: duplicate key")]
    DuplicateKey,
    #[error("tracestate: list-member has no '='")]
    MissingEquals,
    #[error("tracestate: invalid key")]
    InvalidKey,
    #[error("tracestate: invalid value")]
    InvalidValue,
}

/// A parsed `traceparent`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub flags: TraceFlags,
}

impl TraceParent {
    /// Parses one header value strictly (W3C Trace Context Level 1 §3.2). Surrounding OWS
    /// (space, tab) is trimmed. A version above 00 is parsed with the version-00 layout and any
    /// `-`-prefixed extra fields are ignored (§3.2.4, "Versioning of traceparent").
    pub fn parse(value: &[u8]) -> Result<TraceParent, ContextError> {
        let v = trim_ows(value);
        let (version, _) = v
            .split_first_chunk::<2>()
            .ok_or(ContextError::TraceParentTooShort)?;
        let version = decode_hex_byte(*version).ok_or(ContextError::InvalidVersion)?;
        // §3.2.2.2: version ff is forbidden.
        if version == 0xff {
            return Err(ContextError::VersionFf);
        }
        let (fixed, tail) = v
            .split_first_chunk::<TRACEPARENT_LEN>()
            .ok_or(ContextError::TraceParentTooShort)?;
        match tail.first() {
            None => {}
            // §3.2.4: version 00 is exactly 55 characters.
            Some(_) if version == 0 => return Err(ContextError::TrailingData),
            // §3.2.4: a higher version may append fields, each after a '-'.
            Some(b'-') => {}
            Some(_) => return Err(ContextError::ExtraFieldSeparator),
        }

        let (_version, rest) = split::<2>(fixed)?;
        let rest = dash(rest)?;
        let (trace_id, rest) = split::<32>(rest)?;
        let rest = dash(rest)?;
        let (parent_id, rest) = split::<16>(rest)?;
        let rest = dash(rest)?;
        let (flags, _) = split::<2>(rest)?;

        let trace_id = TraceId(decode_hex(trace_id).ok_or(ContextError::InvalidTraceId)?);
        // §3.2.2.3: all-zero trace-id is invalid.
        if !trace_id.is_valid() {
            return Err(ContextError::ZeroTraceId);
        }
        let parent_id = SpanId(decode_hex(parent_id).ok_or(ContextError::InvalidParentId)?);
        // §3.2.2.4: all-zero parent-id is invalid.
        if !parent_id.is_valid() {
            return Err(ContextError::ZeroParentId);
        }
        // §3.2.2.5: unknown flag bits are kept; only `sampled` is interpreted.
        let flags = TraceFlags(decode_hex_byte(*flags).ok_or(ContextError::InvalidFlags)?);
        Ok(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// Formats as version 00: `00-{32 hex}-{16 hex}-{2 hex}`, into a stack buffer.
    pub fn format(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [b'-'; TRACEPARENT_LEN];
        // Layout: version [0,2) '-' trace-id [3,35) '-' parent-id [36,52) '-' flags [53,55).
        encode_hex_at(&[0], &mut out, 0);
        encode_hex_at(&self.trace_id.0, &mut out, 3);
        encode_hex_at(&self.parent_id.0, &mut out, 36);
        encode_hex_at(&[self.flags.0], &mut out, 53);
        out
    }

    pub fn to_header_value(&self) -> HeaderValue {
        // `format` writes only [0-9a-f-], which is always a valid header value; the fallback is
        // unreachable and exists only because the constructor is fallible.
        HeaderValue::from_bytes(&self.format()).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_ascii(f, &self.format())
    }
}

/// What a request carried. Extraction never fails: an invalid context is reported in `error`
/// and treated as absent.
#[derive(Clone, Debug, Default)]
pub struct Extracted {
    pub parent: Option<TraceParent>,
    pub tracestate: Option<TraceState>,
    pub error: Option<ContextError>,
}

/// Reads `traceparent` and `tracestate` from request headers.
///
/// - More than one `traceparent` line is invalid: the spec defines a single value and there is
///   no way to choose between them.
/// - A missing or invalid `traceparent` drops `tracestate` too (§3.3: "if the vendor failed to
///   parse traceparent, it MUST NOT attempt to parse tracestate").
/// - A valid `traceparent` with an invalid `tracestate` keeps the parent, drops only the
///   `tracestate` and reports why in `error`.
pub fn extract(headers: &HeaderMap) -> Extracted {
    let mut lines = headers.get_all(TRACEPARENT).into_iter();
    let Some(first) = lines.next() else {
        return Extracted::default();
    };
    let invalid = |e| Extracted {
        error: Some(e),
        ..Extracted::default()
    };
    if lines.next().is_some() {
        return invalid(ContextError::MultipleTraceParent);
    }
    let parent = match TraceParent::parse(first.as_bytes()) {
        Ok(parent) => parent,
        Err(e) => return invalid(e),
    };
    match TraceState::from_header_values(&headers.get_all(TRACESTATE)) {
        Ok(tracestate) => Extracted {
            parent: Some(parent),
            tracestate,
            error: None,
        },
        Err(e) => Extracted {
            parent: Some(parent),
            tracestate: None,
            error: Some(e),
        },
    }
}

/// Trims OWS (space, tab) from both ends (RFC 9110 §5.6.3).
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn split<const N: usize>(s: &[u8]) -> Result<(&[u8; N], &[u8]), ContextError> {
    s.split_first_chunk::<N>()
        .ok_or(ContextError::TraceParentTooShort)
}

fn dash(s: &[u8]) -> Result<&[u8], ContextError> {
    match s {
        [b'-', rest @ ..] => Ok(rest),
        _ => Err(ContextError::InvalidSeparator),
    }
}

/// One lowercase hex digit; uppercase is invalid in `traceparent` (§3.2.2).
fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn decode_hex_byte([hi, lo]: [u8; 2]) -> Option<u8> {
    Some(hex_value(hi)? << 4 | hex_value(lo)?)
}

/// Decodes `2 * N` lowercase hex digits; `None` if the length or any digit is wrong.
fn decode_hex<const N: usize>(src: &[u8]) -> Option<[u8; N]> {
    if src.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(src.chunks_exact(2)) {
        let &[hi, lo] = pair else { return None };
        *byte = decode_hex_byte([hi, lo])?;
    }
    Some(out)
}

fn hex_digit(nibble: u8) -> u8 {
    let nibble = nibble & 0x0f;
    if nibble < 10 {
        b'0' + nibble
    } else {
        b'a' + nibble - 10
    }
}

/// Writes lowercase hex of `src` into `out` from offset `at` (bytes past the end are dropped).
fn encode_hex_at(src: &[u8], out: &mut [u8], at: usize) {
    encode_hex(src, out.get_mut(at..).unwrap_or_default());
}

/// Writes lowercase hex of `src` into `out` (which is `2 * src.len()` long).
fn encode_hex(src: &[u8], out: &mut [u8]) {
    for (byte, pair) in src.iter().zip(out.chunks_exact_mut(2)) {
        if let [hi, lo] = pair {
            *hi = hex_digit(byte >> 4);
            *lo = hex_digit(*byte);
        }
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
