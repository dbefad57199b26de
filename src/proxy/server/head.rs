//! An HTTP/1.1 request head off the client connection's read buffer: parsed with `httparse`
//! into an `http::Request` whose header values share the buffer's bytes, and the body's
//! framing decided (RFC 9112 §6.3), refusing what a proxy must not guess at.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use crate::proxy::decode::Kind;
pub use crate::proxy::headers::has_token;

/// Header fields parsed into a stack array; a listener allowing more (`max_headers` up to
/// 10,000) parses into a heap array of its size.
const STACK_FIELDS: usize = 128;
/// The longest request target `http::Uri` takes; longer gets 414, as from hyper.
const MAX_URI: usize = u16::MAX as usize - 1;

/// A listener's limits on request heads.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest head (request line and header section); larger gets 431.
    pub max_bytes: usize,
    /// Most header fields; more gets 431.
    pub max_fields: usize,
}

/// Why a request head was refused, and so what the client is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// 400: request line or header syntax, or framing headers a proxy must not guess at.
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    /// 431: over `max_header_bytes` or `max_headers`.
    #[error("request head over the listener's limits")]
    TooLarge,
    /// 414: a request target over 64 KiB.
    #[error("request target over {MAX_URI} bytes")]
    UriTooLong,
}

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    pub request: Request<()>,
    /// How its body is framed (`Done`: none).
    pub body: Kind,
    /// The client lets the connection carry another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for `100 Continue` before its body.
    pub expect_continue: bool,
    /// `Connection: upgrade` with an `Upgrade` header (WebSocket).
    pub upgrade: bool,
    /// Both `Content-Length` and `Transfer-Encoding` (see `Framing::Ambiguous`).
    pub ambiguous: bool,
}

/// Parses a request head at the start of `buf`; `None` while it is incomplete. The head's
/// bytes leave `buf` (what follows stays: its body, or a pipelined request).
pub fn parse(buf: &mut BytesMut, limits: Limits) -> Result<Option<Head>, HeadError> {
    // RFC 9112 §2.2: empty lines before the request line are ignored.
    let leading = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if leading > 0 {
        let _ = buf.split_to(leading);
    }
    let mut spans = SpanList::new();
    let scanned = if limits.max_fields <= STACK_FIELDS {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_FIELDS];
        let fields = fields.get_mut(..limits.max_fields).unwrap_or_default();
        scan(buf, limits, fields, &mut spans)?
    } else {
        let mut fields = Vec::with_capacity(limits.max_fields);
        fields.resize_with(limits.max_fields, MaybeUninit::uninit);
        scan(buf, limits, &mut fields, &mut spans)?
    };
    let Some(Scanned {
        len,
        method,
        version,
        target_at,
    }) = scanned
    else {
        return Ok(None);
    };
    // Room for the fields the proxy adds (trace context, `Host` when absent) without a
    // rehash (`X-Forwarded-*` are written with the upstream's head).
    let count = spans.len() + 4;
    let head = buf.split_to(len).freeze();
    let slice = |[at, len]: [u32; 2]| head.slice(at as usize..(at + len) as usize);
    let uri = Uri::from_maybe_shared(slice(target_at))
        .map_err(|_| HeadError::Malformed("request target"))?;
    let mut headers = HeaderMap::with_capacity(count);
    // Which of the fields that decide framing and the connection's fate are there: the map
    // is asked only about those (most requests carry none of them).
    let mut present = Present::default();
    for [name_at, name_len, value_at, value_len] in spans.iter() {
        let name = head
            .get(name_at as usize..(name_at + name_len) as usize)
            .and_then(|name| HeaderName::from_bytes(name).ok())
            .ok_or(HeadError::Malformed("header name"))?;
        let value = HeaderValue::from_maybe_shared(slice([value_at, value_len]))
            .map_err(|_| HeadError::Malformed("header value"))?;
        present.note(&name);
        headers.append(name, value);
    }
    let framing = if present.framing {
        framing(version, &headers)?
    } else {
        Framing::Body(Kind::Done)
    };
    let keep_alive = if present.connection {
        keep_alive(version, &headers)
    } else {
        version == Version::HTTP_11
    };
    let expect_continue = present.expect
        && version == Version::HTTP_11
        && headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let upgrade = present.upgrade
        && present.connection
        && version == Version::HTTP_11
        && has_token(&headers, CONNECTION, "upgrade");
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    let (body, ambiguous) = match framing {
        Framing::Body(kind) => (kind, false),
        Framing::Ambiguous => (Kind::Done, true),
    };
    Ok(Some(Head {
        request,
        body,
        // After a head whose framing is in doubt, nothing on the connection can be trusted.
        keep_alive: keep_alive && !ambiguous,
        expect_continue,
        upgrade,
        ambiguous,
    }))
}

/// Which fields that `parse` asks the header map about a head has.
#[derive(Default)]
struct Present {
    /// `Transfer-Encoding` or `Content-Length`.
    framing: bool,
    connection: bool,
    expect: bool,
    upgrade: bool,
}

impl Present {
    /// Standard names compare as small integers.
    fn note(&mut self, name: &HeaderName) {
        if name == TRANSFER_ENCODING || name == CONTENT_LENGTH {
            self.framing = true;
        } else if name == CONNECTION {
            self.connection = true;
        } else if name == EXPECT {
            self.expect = true;
        } else if name == UPGRADE {
            self.upgrade = true;
        }
    }
}

/// Where a complete head's parts are in the buffer.
struct Scanned {
    len: usize,
    method: Method,
    version: Version,
    /// Offset and length of the request target.
    target_at: [u32; 2],
}

/// The `httparse` pass: positions only (into `spans`), so that the buffer's borrow ends
/// with it.
fn scan<'b>(
    buf: &'b [u8],
    limits: Limits,
    fields: &mut [MaybeUninit<httparse::Header<'b>>],
    spans: &mut SpanList,
) -> Result<Option<Scanned>, HeadError> {
    let mut request = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        buf,
        fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len > limits.max_bytes => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_bytes => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(err) => return Err(HeadError::Malformed(parse_error(err))),
    };
    let method = request
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(HeadError::Malformed("method"))?;
    let target = request.path.ok_or(HeadError::Malformed("request target"))?;
    if target.len() > MAX_URI {
        return Err(HeadError::UriTooLong);
    }
    let version = match request.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(HeadError::Malformed("version")),
    };
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
    let target_at = [at(target.as_bytes()), target.len() as u32];
    for field in request.headers.iter() {
        spans.push([
            at(field.name.as_bytes()),
            field.name.len() as u32,
            at(field.value),
            field.value.len() as u32,
        ]);
    }
    Ok(Some(Scanned {
        len,
        method,
        version,
        target_at,
    }))
}

/// What `httparse` found wrong, for the log line.
fn parse_error(err: httparse::Error) -> &'static str {
    match err {
        httparse::Error::HeaderName => "header name",
        httparse::Error::HeaderValue => "header value",
        httparse::Error::NewLine => "line ending",
        httparse::Error::Status => "status",
        httparse::Error::Token => "method or token",
        httparse::Error::TooManyHeaders => "too many header fields",
        httparse::Error::Version => "version",
    }
}

/// Name and value positions of a head's fields: on the stack for the first
/// `STACK_SPANS` (most requests), spilling to the heap past them.
struct SpanList {
    stack: [[u32; 4]; STACK_SPANS],
    len: usize,
    heap: Vec<[u32; 4]>,
}

/// Fields whose positions fit in a `SpanList` without allocating.
const STACK_SPANS: usize = 32;

impl SpanList {
    fn new() -> SpanList {
        SpanList {
            stack: [[0; 4]; STACK_SPANS],
            len: 0,
            heap: Vec::new(),
        }
    }

    fn push(&mut self, span: [u32; 4]) {
        match self.stack.get_mut(self.len) {
            Some(slot) => *slot = span,
            None => self.heap.push(span),
        }
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }

    fn iter(&self) -> impl Iterator<Item = [u32; 4]> + '_ {
        self.stack
            .get(..self.len.min(STACK_SPANS))
            .unwrap_or_default()
            .iter()
            .chain(self.heap.iter())
            .copied()
    }
}

/// How the request body is framed.
enum Framing {
    Body(Kind),
    /// Both `Content-Length` and `Transfer-Encoding`. RFC 9112 §6.1 lets a server reject it
    /// or let chunked win and close after responding; proxies disagreeing on exactly this is
    /// how requests are smuggled (one hop frames by length, the next by chunks), so hoptrace
    /// answers 400 without reading the body, and closes. The request still goes to the
    /// proxy's handler, so that the refusal has its span and log line.
    Ambiguous,
}

/// RFC 9112 §6.3 for requests: `Transfer-Encoding` must end in chunked (else 400, as the
/// length cannot be known), is refused in HTTP/1.0 (which has no chunked coding), and
/// `Content-Length` must be one decimal number (repeats of the same value allowed).
fn framing(version: Version, headers: &HeaderMap) -> Result<Framing, HeadError> {
    let chunked = if headers.contains_key(TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(HeadError::Malformed("Transfer-Encoding in HTTP/1.0"));
        }
        let last = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        if !last.is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
            return Err(HeadError::Malformed(
                "Transfer-Encoding not ending in chunked",
            ));
        }
        true
    } else {
        false
    };
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::Malformed("Content-Length"));
            }
            let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::Malformed("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(match (chunked, length) {
        (true, Some(_)) => Framing::Ambiguous,
        (true, None) => Framing::Body(Kind::CHUNKED),
        (false, Some(n)) => Framing::Body(Kind::length(n)),
        (false, None) => Framing::Body(Kind::Done),
    })
}

/// RFC 9112 §9.3: HTTP/1.1 persists unless `close`; HTTP/1.0 only with `keep-alive`.
fn keep_alive(version: Version, headers: &HeaderMap) -> bool {
    if version == Version::HTTP_11 {
        !has_token(headers, CONNECTION, "close")
    } else {
        has_token(headers, CONNECTION, "keep-alive")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_bytes: 8192,
        max_fields: 100,
    };

    fn parse_all(input: &[u8]) -> Result<Option<Head>, HeadError> {
        parse(&mut BytesMut::from(input), LIMITS)
    }

    #[test]
    fn a_head_becomes_a_request_sharing_its_bytes() {
        let mut buf = BytesMut::from(
            &b"\r\nGET /a?b=1 HTTP/1.1\r\nHost: svc\r\nX-A: 1\r\nx-a: 2\r\n\r\nGET /next"[..],
        );
        let whole = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let head = parse(&mut buf, LIMITS).unwrap().unwrap();
        let req = &head.request;
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/a?b=1");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "svc");
        let values: Vec<_> = req.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert!(head.keep_alive && !head.upgrade && !head.expect_continue);
        assert_eq!(head.body, Kind::Done);
        assert_eq!(&buf[..], b"GET /next", "the pipelined rest stays");
        // No copy: the values are slices of the buffer the head was read into.
        for value in req.headers().values() {
            assert!(whole.contains(&(value.as_bytes().as_ptr() as usize)));
        }
    }

    #[test]
    fn an_incomplete_head_waits_and_an_oversized_one_is_431() {
        assert!(
            parse_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .unwrap()
                .is_none()
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
        assert_eq!(parse_all(big.as_bytes()).unwrap_err(), HeadError::TooLarge);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(parse_all(big.as_bytes()).unwrap_err(), HeadError::TooLarge);
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_all(head.as_bytes()).unwrap_err(), HeadError::TooLarge);
        let limits = Limits {
            max_bytes: 1 << 20,
            max_fields: 1000,
        };
        let many: String = (0..999).map(|i| format!("X-{i}: v\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let parsed = parse(&mut BytesMut::from(head.as_bytes()), limits)
            .unwrap()
            .unwrap();
        assert_eq!(parsed.request.headers().len(), 999);
        let uri = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_URI));
        let limits = Limits {
            max_bytes: 1 << 20,
            max_fields: 100,
        };
        let err = parse(&mut BytesMut::from(uri.as_bytes()), limits).unwrap_err();
        assert_eq!(err, HeadError::UriTooLong);
    }

    #[test]
    fn malformed_heads_are_400() {
        for bad in [
            &b"GET / HTTP/1.1\r\nNo colon\r\n\r\n"[..],
            b"GET /\x01 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX : a\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let err = parse_all(bad).unwrap_err();
            assert!(
                matches!(err, HeadError::Malformed(_)),
                "{}: {err:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn body_framing_follows_rfc_9112() {
        let framing_of = |head: &str| parse_all(head.as_bytes()).unwrap().unwrap();
        let h = framing_of("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.body, Kind::Length(5));
        let h = framing_of("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(h.body, Kind::Length(5));
        let h = framing_of("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.body, Kind::Done);
        let h = framing_of("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.body, Kind::CHUNKED);
        for both in [
            "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n",
        ] {
            let h = framing_of(both);
            assert!(h.ambiguous && !h.keep_alive, "{both}");
        }
    }

    #[test]
    fn connection_options() {
        let head = |text: &str| parse_all(text.as_bytes()).unwrap().unwrap();
        assert!(!head("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        let ws = head("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(ws.upgrade);
        assert!(!head("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").upgrade);
        let expect = head("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
        assert!(expect.expect_continue);
        let absolute = head("GET http://pay.internal:8080/x HTTP/1.1\r\n\r\n");
        assert_eq!(
            absolute.request.uri().authority().unwrap(),
            "pay.internal:8080"
        );
        let connect = head("CONNECT pay:443 HTTP/1.1\r\n\r\n");
        assert_eq!(connect.request.method(), Method::CONNECT);
    }
}
