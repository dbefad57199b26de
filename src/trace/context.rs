//! TEMPORARY stand-in with the agreed API; replaced by the full W3C parser (ctx-work branch).
#![allow(missing_docs)]
use http::{HeaderMap, HeaderValue};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TraceId(pub [u8; 16]);
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SpanId(pub [u8; 8]);
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct TraceFlags(pub u8);

fn hex<const N: usize, const M: usize>(b: &[u8; N]) -> [u8; M] {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; M];
    for (i, byte) in b.iter().enumerate() {
        if let (Some(h), Some(l)) = (D.get((byte >> 4) as usize), D.get((byte & 15) as usize)) {
            if let Some(o) = out.get_mut(2 * i) {
                *o = *h;
            }
            if let Some(o) = out.get_mut(2 * i + 1) {
                *o = *l;
            }
        }
    }
    out
}

impl TraceId {
    pub fn random() -> TraceId {
        loop {
            let id = TraceId(fastrand::u128(..).to_be_bytes());
            if id.is_valid() {
                return id;
            }
        }
    }
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 16]
    }
    pub fn to_hex(&self) -> [u8; 32] {
        hex(&self.0)
    }
    pub fn to_u128(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }
}
impl SpanId {
    pub fn random() -> SpanId {
        loop {
            let id = SpanId(fastrand::u64(..).to_be_bytes());
            if id.is_valid() {
                return id;
            }
        }
    }
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 8]
    }
    pub fn to_hex(&self) -> [u8; 16] {
        hex(&self.0)
    }
    pub fn to_u64(&self) -> u64 {
        u64::from_be_bytes(self.0)
    }
}
impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.to_hex()).unwrap_or_default())
    }
}
impl std::fmt::Display for SpanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.to_hex()).unwrap_or_default())
    }
}
impl TraceFlags {
    pub const SAMPLED: u8 = 0x01;
    pub fn is_sampled(self) -> bool {
        self.0 & Self::SAMPLED != 0
    }
    pub fn with_sampled(self, sampled: bool) -> TraceFlags {
        TraceFlags(if sampled {
            self.0 | Self::SAMPLED
        } else {
            self.0 & !Self::SAMPLED
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub flags: TraceFlags,
}

fn unhex(s: &[u8], out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        let d = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        *o = d(*s.get(2 * i)?)? << 4 | d(*s.get(2 * i + 1)?)?;
    }
    Some(())
}

impl TraceParent {
    pub fn parse(value: &[u8]) -> Result<TraceParent, ContextError> {
        if value.len() != 55 || value.get(0..3) != Some(b"00-") {
            return Err(ContextError::Invalid);
        }
        let mut t = [0u8; 16];
        let mut s = [0u8; 8];
        let mut f = [0u8; 1];
        unhex(value.get(3..35).ok_or(ContextError::Invalid)?, &mut t)
            .ok_or(ContextError::Invalid)?;
        unhex(value.get(36..52).ok_or(ContextError::Invalid)?, &mut s)
            .ok_or(ContextError::Invalid)?;
        unhex(value.get(53..55).ok_or(ContextError::Invalid)?, &mut f)
            .ok_or(ContextError::Invalid)?;
        let tp = TraceParent {
            trace_id: TraceId(t),
            parent_id: SpanId(s),
            flags: TraceFlags(f[0]),
        };
        if !tp.trace_id.is_valid() || !tp.parent_id.is_valid() {
            return Err(ContextError::Invalid);
        }
        Ok(tp)
    }
    pub fn format(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[0] = b'0';
        out[1] = b'0';
        out[3..35].copy_from_slice(&self.trace_id.to_hex());
        out[36..52].copy_from_slice(&self.parent_id.to_hex());
        let f: [u8; 2] = hex(&[self.flags.0]);
        out[53..55].copy_from_slice(&f);
        out
    }
    pub fn to_header_value(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.format()).unwrap_or(HeaderValue::from_static(""))
    }
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TraceState {
    value: HeaderValue,
}
impl TraceState {
    pub fn parse(values: &[&[u8]]) -> Result<Option<TraceState>, ContextError> {
        let joined = values.join(&b","[..]);
        if joined.is_empty() {
            return Ok(None);
        }
        HeaderValue::from_bytes(&joined)
            .map(|value| Some(TraceState { value }))
            .map_err(|_| ContextError::Invalid)
    }
    pub fn header_value(&self) -> &HeaderValue {
        &self.value
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ContextError {
    #[error("invalid")]
    Invalid,
}

#[derive(Clone, Debug, Default)]
pub struct Extracted {
    pub parent: Option<TraceParent>,
    pub tracestate: Option<TraceState>,
    pub error: Option<ContextError>,
}

pub fn extract(headers: &HeaderMap) -> Extracted {
    let mut all = headers.get_all("traceparent").iter();
    let Some(first) = all.next() else {
        return Extracted::default();
    };
    if all.next().is_some() {
        return Extracted {
            error: Some(ContextError::Invalid),
            ..Default::default()
        };
    }
    match TraceParent::parse(first.as_bytes()) {
        Err(e) => Extracted {
            error: Some(e),
            ..Default::default()
        },
        Ok(parent) => {
            let lines: Vec<&[u8]> = headers
                .get_all("tracestate")
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            match TraceState::parse(&lines) {
                Ok(ts) => Extracted {
                    parent: Some(parent),
                    tracestate: ts,
                    error: None,
                },
                Err(e) => Extracted {
                    parent: Some(parent),
                    tracestate: None,
                    error: Some(e),
                },
            }
        }
    }
}
