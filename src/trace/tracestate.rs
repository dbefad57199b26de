//! W3C `tracestate` (trace-context Level 1 §3.3): validates every header line of a request as
//! one list and keeps the combined value, which the proxy forwards unchanged. Members are
//! checked, never decoded: hoptrace is not a vendor in the list.

use bytes::Bytes;
use http::HeaderValue;
use http::header::GetAll;

use super::context::{ContextError, trim_ows};

/// §3.3.1.1: a list holds at most 32 list-members.
pub const MAX_MEMBERS: usize = 32;

/// §3.3.1.5: vendors should propagate at least 512 characters of the combined header; a
/// longer list is cut to this length (see `truncate`), which also bounds what a client can
/// make every span of its trace carry.
pub const MAX_LEN: usize = 512;

/// §3.3.1.5: when cutting, list-members longer than this go first.
pub const LARGE_MEMBER: usize = 128;

/// A validated `tracestate`: all `tracestate` header lines combined in order (joined by ","),
/// passed on unchanged.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TraceState {
    /// The line as received when a single line carried members; otherwise the lines that
    /// carried members, OWS-trimmed and joined by ",".
    value: HeaderValue,
    members: usize,
}

impl TraceState {
    /// Validates `values` (the header lines, in order) as one list. `Ok(None)` when the list
    /// has no members (no lines, or only empty/whitespace members).
    pub fn parse(values: &[&[u8]]) -> Result<Option<TraceState>, ContextError> {
        let summary = validate(values.iter().copied())?;
        if summary.members == 0 {
            return Ok(None);
        }
        let value = match summary.single_line.and_then(|i| values.get(i)) {
            Some(line) => header_value(Bytes::copy_from_slice(trim_ows(line)))?,
            None => join(values.iter().copied())?,
        };
        Ok(TraceState::limited(value, summary.members))
    }

    /// Like [`TraceState::parse`], for the lines of a `HeaderMap`. When one line carries all
    /// members, its `HeaderValue` is reused as is (a reference-count bump, no copy).
    pub fn from_header_values(
        values: &GetAll<'_, HeaderValue>,
    ) -> Result<Option<TraceState>, ContextError> {
        let summary = validate(values.iter().map(HeaderValue::as_bytes))?;
        if summary.members == 0 {
            return Ok(None);
        }
        let value = match summary.single_line.and_then(|i| values.iter().nth(i)) {
            Some(line) => line.clone(),
            None => join(values.iter().map(HeaderValue::as_bytes))?,
        };
        Ok(TraceState::limited(value, summary.members))
    }

    /// The validated list, cut to `MAX_LEN` if longer; `None` if nothing is left.
    fn limited(value: HeaderValue, members: usize) -> Option<TraceState> {
        if value.len() <= MAX_LEN {
            return Some(TraceState { value, members });
        }
        let (value, members) = truncate(value.as_bytes())?;
        Some(TraceState { value, members })
    }

    pub fn header_value(&self) -> &HeaderValue {
        &self.value
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.value.as_bytes()
    }

    /// Number of list-members (empty ones not counted).
    pub fn len(&self) -> usize {
        self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members == 0
    }
}

struct Summary {
    members: usize,
    /// The index of the only line that carried members, if exactly one did.
    single_line: Option<usize>,
}

/// Checks every list-member of every line. Linear: each byte is looked at a bounded number of
/// times, and the duplicate check compares against at most 31 earlier keys.
fn validate<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Result<Summary, ContextError> {
    let mut keys: [&[u8]; MAX_MEMBERS] = [&[]; MAX_MEMBERS];
    let mut members = 0;
    let mut lines_with_members = 0;
    let mut single_line = None;
    for (index, line) in lines.enumerate() {
        let before = members;
        for member in line.split(|&b| b == b',') {
            // §3.3.1.1: OWS around list-members is not part of them, and empty list-members
            // are allowed (and skipped).
            let member = trim_ows(member);
            if member.is_empty() {
                continue;
            }
            let (key, value) = split_member(member)?;
            if !valid_key(key) {
                return Err(ContextError::InvalidKey);
            }
            if !valid_value(value) {
                return Err(ContextError::InvalidValue);
            }
            // §3.3.1.1: keys are unique within the list.
            if keys.iter().take(members).any(|seen| *seen == key) {
                return Err(ContextError::DuplicateKey);
            }
            let Some(slot) = keys.get_mut(members) else {
                return Err(ContextError::TooManyMembers);
            };
            *slot = key;
            members += 1;
        }
        if members > before {
            lines_with_members += 1;
            single_line = Some(index);
        }
    }
    Ok(Summary {
        members,
        single_line: single_line.filter(|_| lines_with_members == 1),
    })
}

fn split_member(member: &[u8]) -> Result<(&[u8], &[u8]), ContextError> {
    let at = member
        .iter()
        .position(|&b| b == b'=')
        .ok_or(ContextError::MissingEquals)?;
    match member.split_at_checked(at) {
        Some((key, [b'=', value @ ..])) => Ok((key, value)),
        _ => Err(ContextError::MissingEquals),
    }
}

/// `lcalpha / DIGIT / "_" / "-" / "*" / "/"`
fn key_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'*' | b'/')
}

/// §3.3.1.3.1: `key = simple-key / multi-tenant-key`, where
/// `simple-key = lcalpha 0*255(key-char)` and `multi-tenant-key = tenant-id "@" system-id`,
/// `tenant-id = (lcalpha / DIGIT) 0*240(key-char)`, `system-id = lcalpha 0*13(key-char)`.
fn valid_key(key: &[u8]) -> bool {
    match key.iter().position(|&b| b == b'@') {
        None => id(key, |c| c.is_ascii_lowercase(), 255),
        Some(at) => match key.split_at_checked(at) {
            Some((tenant, [b'@', system @ ..])) => {
                id(
                    tenant,
                    |c| c.is_ascii_lowercase() || c.is_ascii_digit(),
                    240,
                ) && id(system, |c| c.is_ascii_lowercase(), 13)
            }
            _ => false,
        },
    }
}

/// A first character accepted by `first`, then at most `max_rest` key-chars.
fn id(s: &[u8], first: impl Fn(u8) -> bool, max_rest: usize) -> bool {
    match s {
        [head, rest @ ..] => {
            first(*head) && rest.len() <= max_rest && rest.iter().all(|&c| key_char(c))
        }
        [] => false,
    }
}

/// §3.3.1.3.2: `value = 0*255(chr) nblk-chr`, `nblk-chr = %x21-2B / %x2D-3C / %x3E-7E`,
/// `chr = %x20 / nblk-chr`: 1 to 256 printable ASCII characters other than `,` and `=`, not
/// ending in a space.
fn valid_value(value: &[u8]) -> bool {
    let chr = |c: u8| matches!(c, 0x20..=0x7e) && c != b',' && c != b'=';
    match value {
        [.., last] => value.len() <= 256 && *last != b' ' && value.iter().all(|&c| chr(c)),
        [] => false,
    }
}

/// §3.3.1.5: cuts a validated list longer than `MAX_LEN`: list-members longer than
/// `LARGE_MEMBER` are removed first, then members from the end until the rest fits. Empty
/// members and the OWS around members are dropped in the result. Linear in the input.
fn truncate(list: &[u8]) -> Option<(HeaderValue, usize)> {
    let mut out = Vec::with_capacity(MAX_LEN);
    let mut members = 0;
    let kept = list
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|m| !m.is_empty() && m.len() <= LARGE_MEMBER);
    for member in kept {
        let needed = member.len() + usize::from(!out.is_empty());
        if out.len() + needed > MAX_LEN {
            break;
        }
        if !out.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(member);
        members += 1;
    }
    if members == 0 {
        return None;
    }
    header_value(Bytes::from(out))
        .ok()
        .map(|value| (value, members))
}

/// Joins the OWS-trimmed lines that carry members with ",", in order.
fn join<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Result<HeaderValue, ContextError> {
    let carries = |line: &[u8]| line.iter().any(|&b| !matches!(b, b' ' | b'\t' | b','));
    let mut out = Vec::new();
    for line in lines.filter(|l| carries(l)) {
        if !out.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(trim_ows(line));
    }
    header_value(Bytes::from(out))
}

fn header_value(bytes: Bytes) -> Result<HeaderValue, ContextError> {
    // Validated members hold only visible ASCII, spaces and tabs, all valid in a header value;
    // the error is unreachable and mapped only because the constructor is fallible.
    HeaderValue::from_maybe_shared(bytes).map_err(|_| ContextError::InvalidValue)
}

#[cfg(test)]
mod tests;
