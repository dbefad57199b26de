//! What the inference may look at: route keys, times and hashed content tokens. These types
//! are built from a request by the functions here and hold nothing else: no header values,
//! no raw paths, and never the evaluation's nonce header (`NONCE_HEADER`), which is skipped
//! by name even if an operator listed it.

use std::time::Instant;

use http::{HeaderMap, HeaderName, Uri};

/// The header the evaluation harness tags requests with as ground truth. Config validation
/// refuses it in `content_headers`, and `tokens` skips it by name.
pub const NONCE_HEADER: &str = "x-hoptrace-nonce";

/// At most this many content tokens per request: a bounded, allocation-free set.
pub const MAX_TOKENS: usize = 8;

/// Tokens shorter than this (`v1`, `a`) say nothing about which request made a call. Numbers
/// of any length count: in a path or a query they are ids (`/orders/7`), and the model
/// weighs every token by how rare it is among inbound requests, so a number that appears in
/// every request (`page=1`) says nothing anyway.
const MIN_TOKEN_LEN: usize = 3;

/// Hashed values (path segments, query values, selected headers) of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    hashes: [u64; MAX_TOKENS],
    len: u8,
}

impl Tokens {
    pub fn as_slice(&self) -> &[u64] {
        self.hashes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    fn push(&mut self, bytes: &[u8]) {
        let number = !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit);
        if (bytes.len() < MIN_TOKEN_LEN && !number) || usize::from(self.len) >= MAX_TOKENS {
            return;
        }
        let hash = fnv1a(bytes);
        if self.as_slice().contains(&hash) {
            return;
        }
        if let Some(slot) = self.hashes.get_mut(usize::from(self.len)) {
            *slot = hash;
            self.len += 1;
        }
    }

    /// Tokens of `self` that `other` also has.
    pub fn shared<'a>(&'a self, other: &'a Tokens) -> impl Iterator<Item = u64> + 'a {
        self.as_slice()
            .iter()
            .copied()
            .filter(|t| other.as_slice().contains(t))
    }
}

/// An inbound request, as the registry keeps it.
#[derive(Clone, Copy, Debug)]
pub struct InboundEvidence {
    /// Hash of the inbound route's template.
    pub route: u64,
    pub tokens: Tokens,
    pub arrived: Instant,
}

/// An outbound call without trace context, as the scorer sees it.
#[derive(Clone, Copy, Debug)]
pub struct CallEvidence {
    /// Hash of the outbound route's template: the destination.
    pub dest: u64,
    pub tokens: Tokens,
    pub at: Instant,
}

/// A route template's key (0 for "no route").
pub fn route_key(template: Option<&str>) -> u64 {
    template.map_or(0, |t| fnv1a(t.as_bytes()))
}

/// Content tokens of a request: its path segments, its query values, and the values of
/// `headers` (never `NONCE_HEADER`).
pub fn tokens(uri: &Uri, headers: &HeaderMap, selected: &[HeaderName]) -> Tokens {
    let mut tokens = Tokens::default();
    for segment in uri.path().split('/') {
        tokens.push(segment.as_bytes());
    }
    if let Some(query) = uri.query() {
        for pair in query.split('&') {
            let value = pair.split_once('=').map_or("", |(_, v)| v);
            tokens.push(value.as_bytes());
        }
    }
    for name in selected {
        if name.as_str() == NONCE_HEADER {
            continue;
        }
        for value in headers.get_all(name) {
            tokens.push(value.as_bytes());
        }
    }
    tokens
}

/// FNV-1a, 64 bit: fast on short strings, no allocation, same value in every process.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_path_query_and_selected_headers_never_the_nonce() {
        let uri: Uri = "/orders/abc123/items/v1?id=xyz789&n=7&x=ab"
            .parse()
            .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "tenant-7".parse().unwrap());
        headers.insert(NONCE_HEADER, "nonce-42".parse().unwrap());
        let selected = [
            HeaderName::from_static("x-tenant"),
            HeaderName::from_static(NONCE_HEADER),
        ];
        let got = tokens(&uri, &headers, &selected);
        let expected: Vec<u64> = ["orders", "abc123", "items", "xyz789", "7", "tenant-7"]
            .iter()
            .map(|s| fnv1a(s.as_bytes()))
            .collect();
        assert_eq!(got.as_slice(), expected.as_slice());
        assert!(!got.as_slice().contains(&fnv1a(b"nonce-42")));
    }

    #[test]
    fn at_most_eight_tokens() {
        let uri: Uri = "/aaa/bbb/ccc/ddd/eee/fff/ggg/hhh/iii/jjj".parse().unwrap();
        assert_eq!(tokens(&uri, &HeaderMap::new(), &[]).as_slice().len(), 8);
    }
}
