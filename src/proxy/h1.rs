//! HTTP/1.1 to an upstream, by hand. The request head is written straight from the request's
//! header map; the response head is parsed with `httparse` into an `http::Response` whose
//! header values share the read buffer; the response body is read off the connection by
//! whoever polls it. There is no task per connection and no channel between a request and its
//! connection: the request's own task writes the request and reads the response, and the
//! connection travels inside the response body until that body ends (`Body::take_reusable`).
//!
//! What is not here: protocol upgrades (WebSocket), which take the connection over from its
//! protocol; those requests go through hyper's client connection (`client.rs`).
//!
//! Framing follows RFC 9112:
//! - request: the client's `Content-Length` when it sent one, otherwise the body's exact size
//!   when known, otherwise `Transfer-Encoding: chunked`; no framing header for no body;
//! - response (§6.3): no body for HEAD, 1xx, 204 and 304; chunked when chunked is the last
//!   transfer coding; read to the close for any other transfer coding or when there is no
//!   `Content-Length`; conflicting `Content-Length` values are an error.
//! - A connection is used again only if its response said nothing against it (`Connection:
//!   close`, HTTP/1.0 without `keep-alive`), its body was read to its end, nothing followed
//!   that end, and the request body went out whole.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::AsyncWrite;

use super::connector::{ConnMeta, Tagged};
use super::decode::{Decoded, Kind};
use super::headers::Forwarded;
use super::request_body::RequestBody;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Most header fields in a response head or trailer section (as hyper's client).
const MAX_HEADERS: usize = 100;
/// Largest response head or trailer section (hyper's client default).
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// Read buffer: allocated this large, topped up when less than `MIN_READ` is free.
const READ_SIZE: usize = 8192;
const MIN_READ: usize = 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upstream connection: {0}")]
    Io(#[source] io::Error),
    #[error("upstream closed the connection before the response head")]
    ClosedBeforeHead,
    #[error("upstream closed the connection before the response body ended")]
    ClosedInBody,
    #[error("invalid response head: {0}")]
    Parse(httparse::Error),
    #[error("response head over {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    #[error("invalid chunked response body")]
    Chunked,
    #[error("request body: {0}")]
    RequestBody(#[source] BoxError),
    #[error("request body does not match its Content-Length")]
    RequestLength,
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        Error::Io(err)
    }
}

/// An HTTP/1.1 connection to an endpoint, idle or lent to one request.
#[derive(Debug)]
pub struct Conn {
    io: Tagged,
    /// Bytes read and not yet used.
    read: BytesMut,
    /// Bytes to write; `written` of them are out.
    write: Vec<u8>,
    written: usize,
}

/// How the request body goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outgoing {
    None,
    /// The bytes still to send.
    Length(u64),
    Chunked,
}

impl Conn {
    pub fn new(io: Tagged) -> Conn {
        Conn {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
            written: 0,
        }
    }

    pub fn meta(&self) -> ConnMeta {
        self.io.meta()
    }

    /// For a pooled connection: true while the upstream has neither closed it nor sent
    /// anything since the last response. Does not wait.
    pub fn is_open_and_idle(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        self.poll_fill(&mut cx).is_pending()
    }

    /// Sends `req` (origin-form target, `Host` set) and reads the response head. The
    /// response body owns the connection from then on.
    pub async fn send(
        mut self,
        req: Request<RequestBody>,
        forwarded: Option<&Forwarded>,
    ) -> Result<Response<Body>, Error> {
        let (parts, mut body) = req.into_parts();
        let head_request = parts.method == Method::HEAD;
        self.write.clear();
        self.written = 0;
        let mut outgoing = encode_head(&mut self.write, &parts, &body, forwarded);
        drop(parts);
        // A request body cut short by an early response leaves the connection unusable.
        let mut body_sent = outgoing == Outgoing::None;
        let head = poll_fn(|cx| {
            self.poll_send(cx, &mut body, &mut outgoing, &mut body_sent, head_request)
        })
        .await?;
        let (parts, raw, kind, keep_alive) = head;
        Ok(Response::from_parts(
            parts,
            Body {
                kind,
                reusable: keep_alive && body_sent,
                conn: Some(self),
                raw: Some(raw),
            },
        ))
    }

    /// Writes what is buffered, then the request body frame by frame, then reads the
    /// response head. While the body goes out, a response that arrives early (an upstream
    /// refusing the body) ends the sending.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        body: &mut RequestBody,
        outgoing: &mut Outgoing,
        body_sent: &mut bool,
        head_request: bool,
    ) -> Poll<Result<Head, Error>> {
        loop {
            if self.written < self.write.len() {
                match self.poll_write_buffered(cx) {
                    Poll::Ready(Ok(())) => continue,
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => return self.poll_head(cx, head_request),
                }
            }
            if *body_sent {
                ready!(Pin::new(&mut self.io).poll_flush(cx))?;
                return self.poll_head(cx, head_request);
            }
            self.write.clear();
            self.written = 0;
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => {
                    // Written so far must reach the upstream while the client is slow.
                    ready!(Pin::new(&mut self.io).poll_flush(cx))?;
                    return self.poll_head(cx, head_request);
                }
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(Error::RequestBody(err))),
                Poll::Ready(None) => {
                    match *outgoing {
                        Outgoing::Chunked => self.write.extend_from_slice(b"0\r\n\r\n"),
                        Outgoing::Length(0) | Outgoing::None => {}
                        Outgoing::Length(_) => return Poll::Ready(Err(Error::RequestLength)),
                    }
                    *body_sent = true;
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => encode_data(&mut self.write, outgoing, &data)?,
                    Err(frame) => {
                        if let (Outgoing::Chunked, Ok(trailers)) =
                            (*outgoing, frame.into_trailers())
                        {
                            self.write.extend_from_slice(b"0\r\n");
                            encode_fields(&mut self.write, &trailers, false);
                            self.write.extend_from_slice(b"\r\n");
                            *outgoing = Outgoing::None;
                            *body_sent = true;
                        }
                    }
                },
            }
        }
    }

    fn poll_write_buffered(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while let Some(rest) = self.write.get(self.written..).filter(|r| !r.is_empty()) {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Reads until a final (non-1xx) response head has arrived; 1xx heads are skipped
    /// (`101` is final: it ends the message, and the connection with it).
    fn poll_head(&mut self, cx: &mut Context<'_>, head_request: bool) -> Poll<Result<Head, Error>> {
        loop {
            if !self.read.is_empty() {
                if let Some(head) = parse_head(&mut self.read, head_request)? {
                    if head.0.status.is_informational()
                        && head.0.status != StatusCode::SWITCHING_PROTOCOLS
                    {
                        continue;
                    }
                    return Poll::Ready(Ok(head));
                }
                if self.read.len() > MAX_HEAD {
                    return Poll::Ready(Err(Error::HeadTooLarge));
                }
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(Error::ClosedBeforeHead));
            }
        }
    }

    /// Reads what the socket has into `read`: `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < MIN_READ {
            self.read.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }
}

/// The response head (its fields apart, as they came), how its body is framed, and whether
/// the connection may be reused.
type Head = (http::response::Parts, RawFields, Kind, bool);

/// A response head's end-to-end fields as they came off the wire: the head's bytes and where
/// each kept field's name and value sit in them. The client's HTTP/1.1 writer copies them
/// out as they are (`server::conn`), names in the upstream's case, without building a
/// header map; what else needs them (an HTTP/2 client, captured response headers) gets
/// them in the response's `HeaderMap` (`append_to`). `httparse` has checked that every
/// name is a token and every value holds no control character but tab, the rules
/// `HeaderName` and `HeaderValue` check.
#[derive(Debug, Default)]
pub struct RawFields {
    head: Bytes,
    /// Name offset, name length, value offset, value length.
    fields: Vec<[u32; 4]>,
}

impl RawFields {
    /// (name, value) in order, names in the case they came in.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|&[name_at, name_len, value_at, value_len]| {
                let slice = |at: u32, len: u32| {
                    self.head
                        .get(at as usize..(at + len) as usize)
                        .unwrap_or_default()
                };
                (slice(name_at, name_len), slice(value_at, value_len))
            })
    }

    /// `name: value` lines for a response head: as `encode_fields` writes a header map, one
    /// `Content-Length` only (the framing fields are gone already). Fields `replaced` names
    /// are left out: the proxy sets its own (`traceresponse`, the trace-id header).
    pub fn encode(&self, out: &mut Vec<u8>, replaced: impl Fn(&[u8]) -> bool) {
        let mut length_seen = false;
        for (name, value) in self.iter() {
            if replaced(name) {
                continue;
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                if length_seen {
                    continue;
                }
                length_seen = true;
            }
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Appends the fields to `headers`, in order; header values share the head's bytes.
    pub fn append_to(self, headers: &mut HeaderMap) {
        headers.reserve(self.fields.len());
        for &[name_at, name_len, value_at, value_len] in &self.fields {
            let name = self
                .head
                .get(name_at as usize..(name_at + name_len) as usize)
                .and_then(|name| HeaderName::from_bytes(name).ok());
            let value = HeaderValue::from_maybe_shared(
                self.head
                    .slice(value_at as usize..(value_at + value_len) as usize),
            );
            // Both hold (see the type's doc); a field that did not would be left out.
            if let (Some(name), Ok(value)) = (name, value) {
                headers.append(name, value);
            }
        }
    }
}

/// Writes the request line and header section; returns how the body goes out.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::request::Parts,
    body: &RequestBody,
    forwarded: Option<&Forwarded>,
) -> Outgoing {
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let outgoing = match declared {
        Some(len) => Outgoing::Length(len),
        None if body.is_end_stream() => Outgoing::None,
        None => match body.size_hint().exact() {
            Some(len) => Outgoing::Length(len),
            None => Outgoing::Chunked,
        },
    };
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    encode_fields(out, &parts.headers, true);
    if let Some(forwarded) = forwarded {
        forwarded.encode(out);
    }
    match outgoing {
        Outgoing::Length(len) if declared.is_none() => {
            out.extend_from_slice(b"content-length: ");
            push_number(out, len, 10);
            out.extend_from_slice(b"\r\n");
        }
        Outgoing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    outgoing
}

/// `name: value` lines. In a head, framing fields are left to `encode_head`, except a valid
/// `Content-Length`, which it keeps.
pub(super) fn encode_fields(out: &mut Vec<u8>, headers: &HeaderMap, head: bool) {
    let mut length_seen = false;
    for (name, value) in headers {
        if head {
            if name == TRANSFER_ENCODING {
                continue;
            }
            if name == CONTENT_LENGTH {
                // One `Content-Length` only: the first, which `encode_head` read.
                if length_seen {
                    continue;
                }
                length_seen = true;
            }
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Frames a chunk of request body into `out`.
fn encode_data(out: &mut Vec<u8>, outgoing: &mut Outgoing, data: &[u8]) -> Result<(), Error> {
    if data.is_empty() {
        return Ok(());
    }
    match outgoing {
        Outgoing::Chunked => {
            push_number(out, data.len() as u64, 16);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        Outgoing::Length(left) => {
            *left = left
                .checked_sub(data.len() as u64)
                .ok_or(Error::RequestLength)?;
            out.extend_from_slice(data);
        }
        Outgoing::None => return Err(Error::RequestLength),
    }
    Ok(())
}

/// `n` in decimal or hexadecimal (lowercase) digits.
pub(super) fn push_number(out: &mut Vec<u8>, n: u64, radix: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        if let Some(d) = digits.get_mut(at) {
            *d = b"0123456789abcdef"
                .get((rest % radix) as usize)
                .copied()
                .unwrap_or(b'0');
        }
        rest /= radix;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(at..).unwrap_or_default());
}

/// Parses a response head at the start of `buf`; `None` while it is incomplete. The head's
/// bytes leave `buf` and are shared by the header values.
///
/// The framing is read off the raw fields, and the hop-by-hop fields (RFC 9110 §7.6.1:
/// `Connection` and the fields it names, `Keep-Alive`, `Proxy-Connection`,
/// `Transfer-Encoding`, `TE` but `TE: trailers`, `Upgrade`, `Proxy-Authenticate`,
/// `Proxy-Authorization`) are left out of the `RawFields` kept: the rest is what
/// `remove_hop_by_hop` would leave of a header map (a unit test checks it).
/// Protocol switches, which must keep `Connection: upgrade`, do not come through here
/// (`client.rs`).
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, Error> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(Error::Parse(err)),
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(Error::Invalid("status code"))?;
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let raw = || {
        response
            .headers
            .iter()
            .map(|field| (field.name.as_bytes(), field.value))
    };
    let (kind, keep_alive) = framing(status, version, raw(), head_request)?;
    // Which fields stay: end-to-end ones, and the first `TE: trailers` (gRPC needs it).
    let connection = raw()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, value)| value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        // Connection options, not field names (as `remove_hop_by_hop`).
        .filter(|t| !t.eq_ignore_ascii_case(b"keep-alive") && !t.eq_ignore_ascii_case(b"close"));
    // Most responses' `Connection` names no field (`keep-alive`, `close`): then no field
    // is looked for among its tokens.
    let names_fields = connection.clone().any(|t| !t.is_empty());
    let named =
        |name: &[u8]| names_fields && connection.clone().any(|t| t.eq_ignore_ascii_case(name));
    let mut te_seen = false;
    let mut keep = |name: &[u8], value: &[u8]| match hop_by_hop(name) {
        Hop::EndToEnd => !named(name),
        Hop::Te => {
            let first = !te_seen;
            te_seen = true;
            first && value.eq_ignore_ascii_case(b"trailers") && !named(name)
        }
        Hop::Always => false,
    };
    // Where each kept name and value sits in the head, to share the head's bytes once split
    // off.
    let base = buf.as_ptr() as usize;
    let mut fields = Vec::with_capacity(response.headers.len());
    for (name, value) in raw() {
        if !keep(name, value) {
            continue;
        }
        if name.len() > MAX_NAME {
            return Err(Error::Invalid("header name"));
        }
        let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        fields.push([at(name), name.len() as u32, at(value), value.len() as u32]);
    }
    let raw = RawFields {
        head: buf.split_to(len).freeze(),
        fields,
    };
    let mut parts = Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    Ok(Some((parts, raw, kind, keep_alive)))
}

/// Longest field name `HeaderName` takes.
const MAX_NAME: usize = (1 << 16) - 1;

/// How `parse_head` treats a field name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hop {
    EndToEnd,
    /// `TE`: kept only as `TE: trailers`.
    Te,
    Always,
}

/// Whether a field name (any case) is hop-by-hop; see `headers::remove_hop_by_hop`.
fn hop_by_hop(name: &[u8]) -> Hop {
    const ALWAYS: [&[u8]; 7] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    ];
    if name.eq_ignore_ascii_case(b"te") {
        Hop::Te
    } else if ALWAYS
        .iter()
        .any(|h| h.len() == name.len() && h.eq_ignore_ascii_case(name))
    {
        Hop::Always
    } else {
        Hop::EndToEnd
    }
}

/// How the response body is delimited (RFC 9112 §6.3), and whether the connection may carry
/// another request afterwards. `fields`: the head's (name, value) pairs in order, names in
/// any case.
fn framing<'a>(
    status: StatusCode,
    version: Version,
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    head_request: bool,
) -> Result<(Kind, bool), Error> {
    let values = |name: &'static [u8]| {
        fields
            .clone()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    let has_token = |token: &[u8]| {
        values(b"connection")
            .flat_map(|v| v.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    };
    let keep_alive = if version == Version::HTTP_11 {
        !has_token(b"close")
    } else {
        has_token(b"keep-alive")
    };
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        // 101: the connection is the other protocol's now.
        let keep = keep_alive && status != StatusCode::SWITCHING_PROTOCOLS;
        return Ok((Kind::Done, keep));
    }
    let has_length = values(b"content-length").next().is_some();
    if let Some(last) = values(b"transfer-encoding").last() {
        // As `HeaderValue::to_str`: visible ASCII (and tabs) only.
        let chunked = last
            .iter()
            .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
            && last
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        return Ok(if chunked {
            // With a Content-Length too, the message was framed by a confused sender:
            // read it chunked, then close.
            (Kind::CHUNKED, keep_alive && !has_length)
        } else {
            (Kind::Close, false)
        });
    }
    let mut length = None;
    for value in values(b"content-length") {
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err(Error::Invalid("content-length"));
            }
            let n: u64 = std::str::from_utf8(part)
                .ok()
                .and_then(|p| p.parse().ok())
                .ok_or(Error::Invalid("content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Invalid("conflicting content-length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (Kind::Done, keep_alive),
        Some(n) => (Kind::Length(n), keep_alive),
        None => (Kind::Close, false),
    })
}

/// A response body read off its connection.
#[derive(Debug)]
pub struct Body {
    kind: Kind,
    /// The connection may carry another request once the body has ended.
    reusable: bool,
    /// `None` after a failure.
    conn: Option<Conn>,
    /// The response head's fields, until taken.
    raw: Option<RawFields>,
}

impl Body {
    /// The response head's fields (once: they are not in the response's `HeaderMap`).
    pub fn take_raw(&mut self) -> Option<RawFields> {
        self.raw.take()
    }

    /// Once the body has ended, its connection, if it can carry another request.
    pub fn take_reusable(&mut self) -> Option<Conn> {
        if self.kind != Kind::Done || !self.reusable {
            return None;
        }
        self.conn.take().filter(|conn| conn.read.is_empty())
    }

    fn fail(&mut self, err: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.kind = Kind::Done;
        self.reusable = false;
        self.conn = None;
        Poll::Ready(Some(Err(err)))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.kind.decode(&mut conn.read) {
                Ok(Decoded::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::NeedMore) => match ready!(conn.poll_fill(cx)) {
                    Ok(0) if this.kind == Kind::Close => {
                        this.kind = Kind::Done;
                        this.reusable = false;
                        return Poll::Ready(None);
                    }
                    Ok(0) => return this.fail(Error::ClosedInBody),
                    Ok(_) => {}
                    Err(err) => return this.fail(Error::Io(err)),
                },
                Err(_) => return this.fail(Error::Chunked),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.kind == Kind::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.kind {
            Kind::Length(left) => SizeHint::with_exact(left),
            Kind::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};

    fn get(target: &str) -> Request<RequestBody> {
        Request::get(target)
            .header("host", "svc")
            .body(RequestBody::empty())
            .unwrap()
    }

    /// A raw upstream for one connection: reads one request head, then writes `answer` in
    /// the pieces given (each flushed on its own, so the client sees partial reads), then
    /// closes. Returns the request head it got.
    async fn upstream(answer: Vec<&'static [u8]>) -> (Conn, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "client closed before its request head ended");
                head.extend_from_slice(&buf[..n]);
            }
            for piece in answer {
                socket.write_all(piece).await.unwrap();
                socket.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            String::from_utf8(head).unwrap()
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        (Conn::new(Tagged::plain(stream)), server)
    }

    /// Reads a body to its end: the data, and the trailers if any.
    /// The response head's fields, which `send` leaves out of the response's map.
    fn fields(body: &mut Body) -> HeaderMap {
        let mut headers = HeaderMap::new();
        body.take_raw().unwrap().append_to(&mut headers);
        headers
    }

    async fn read_all(body: &mut Body) -> Result<(String, Option<HeaderMap>), Error> {
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        Ok((String::from_utf8(data).unwrap(), trailers))
    }

    #[tokio::test]
    async fn a_request_head_is_written_from_its_header_map() {
        let (conn, server) =
            upstream(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]).await;
        let mut req = get("/p?q=1");
        req.headers_mut().append("x-a", "1".parse().unwrap());
        req.headers_mut().append("x-a", "2".parse().unwrap());
        // Framing is hoptrace's to choose: a stray Transfer-Encoding is not passed on.
        req.headers_mut()
            .insert(TRANSFER_ENCODING, "chunked".parse().unwrap());
        let response = conn.send(req, None).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            server.await.unwrap(),
            "GET /p?q=1 HTTP/1.1\r\nhost: svc\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
    }

    #[test]
    fn request_body_framing() {
        let mut out = Vec::new();
        let mut chunked = Outgoing::Chunked;
        encode_data(&mut out, &mut chunked, &[b'x'; 300]).unwrap();
        assert!(out.starts_with(b"12c\r\nxxx"));
        assert!(out.ends_with(b"xx\r\n"));
        assert_eq!(out.len(), 5 + 300 + 2);

        let mut length = Outgoing::Length(4);
        out.clear();
        encode_data(&mut out, &mut length, b"abc").unwrap();
        assert_eq!(length, Outgoing::Length(1));
        assert!(matches!(
            encode_data(&mut out, &mut length, b"de"),
            Err(Error::RequestLength)
        ));

        for (n, radix, text) in [
            (0, 16, "0"),
            (255, 16, "ff"),
            (4096, 16, "1000"),
            (0, 10, "0"),
        ] {
            let mut out = Vec::new();
            push_number(&mut out, n, radix);
            assert_eq!(out, text.as_bytes());
        }
        let mut out = Vec::new();
        push_number(&mut out, u64::MAX, 10);
        assert_eq!(out, u64::MAX.to_string().as_bytes());
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let head = |fields: &[(&str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in fields {
                map.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
            }
            map
        };
        let ok = StatusCode::OK;
        let v11 = Version::HTTP_11;
        let frame = |status, version, fields: &[(&str, &str)], head_req| {
            let raw = fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
            let from_raw = framing(status, version, raw, head_req).ok();
            // Names in any case, as they come off the wire.
            let map = head(fields);
            let upper: Vec<_> = map
                .iter()
                .map(|(n, v)| (n.as_str().to_ascii_uppercase(), v.as_bytes()))
                .collect();
            let raw = upper.iter().map(|(n, v)| (n.as_bytes(), *v));
            assert_eq!(framing(status, version, raw, head_req).ok(), from_raw);
            from_raw
        };
        let length = [("content-length", "5")];
        assert_eq!(
            frame(ok, v11, &length, false),
            Some((Kind::Length(5), true))
        );
        assert_eq!(frame(ok, v11, &length, true), Some((Kind::Done, true)));
        for status in [204, 304, 100] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(frame(status, v11, &length, false), Some((Kind::Done, true)));
        }
        assert_eq!(
            frame(StatusCode::SWITCHING_PROTOCOLS, v11, &[], false),
            Some((Kind::Done, false))
        );
        let chunked = Kind::CHUNKED;
        assert_eq!(
            frame(ok, v11, &[("transfer-encoding", "gzip, chunked")], false),
            Some((chunked, true))
        );
        // Chunked and a length: read chunked, then close.
        assert_eq!(
            frame(
                ok,
                v11,
                &[("transfer-encoding", "chunked"), ("content-length", "5")],
                false
            ),
            Some((chunked, false))
        );
        assert_eq!(
            frame(ok, v11, &[("transfer-encoding", "gzip")], false),
            Some((Kind::Close, false))
        );
        assert_eq!(frame(ok, v11, &[], false), Some((Kind::Close, false)));
        assert_eq!(
            frame(ok, v11, &[("content-length", "5, 5")], false),
            Some((Kind::Length(5), true))
        );
        assert_eq!(
            frame(ok, v11, &[("content-length", "0")], false),
            Some((Kind::Done, true))
        );
        for bad in [
            &[("content-length", "5, 6")][..],
            &[("content-length", "5"), ("content-length", "6")],
            &[("content-length", "-1")],
            &[("content-length", "+5")],
            &[("content-length", "")],
        ] {
            assert_eq!(frame(ok, v11, bad, false), None, "{bad:?}");
        }
        let close = [("content-length", "5"), ("connection", "keep-alive, close")];
        assert_eq!(
            frame(ok, v11, &close, false),
            Some((Kind::Length(5), false))
        );
        let v10 = Version::HTTP_10;
        assert_eq!(
            frame(ok, v10, &length, false),
            Some((Kind::Length(5), false))
        );
        let kept = [("content-length", "5"), ("connection", "Keep-Alive")];
        assert_eq!(frame(ok, v10, &kept, false), Some((Kind::Length(5), true)));
    }

    /// The header map `parse_head` builds is the whole head's with `remove_hop_by_hop`
    /// applied, as `forward` did to every response before.
    #[test]
    fn response_heads_leave_out_what_remove_hop_by_hop_removes() {
        let heads: &[&[&str]] = &[
            &[
                "Server: nginx",
                "Content-Length: 5",
                "Connection: keep-alive",
            ],
            &[
                "Connection: close, X-Private",
                "x-private: 1",
                "X-Public: 2",
                "Content-Length: 0",
            ],
            &[
                "Keep-Alive: timeout=5",
                "Proxy-Connection: x",
                "Upgrade: h2c",
                "Content-Length: 1",
            ],
            &[
                "Transfer-Encoding: chunked",
                "Trailer: x-t",
                "Proxy-Authenticate: Basic",
            ],
            &["TE: trailers", "TE: gzip", "Content-Length: 1"],
            &["TE: gzip", "TE: trailers", "Content-Length: 1"],
            &["Connection: TE", "TE: trailers", "Content-Length: 1"],
            &["Connection: close", "Close: field", "Content-Length: 1"],
            &[
                "Connection: keep-alive, Keep-Alive",
                "Keep-Alive: 1",
                "A: 1",
                "A: 2",
            ],
            &[
                "Proxy-Authorization: x",
                "Set-Cookie: a",
                "Set-Cookie: b",
                "Content-Length: 1",
            ],
        ];
        for fields in heads {
            let text = format!("HTTP/1.1 200 OK\r\n{}\r\n\r\n", fields.join("\r\n"));
            let mut buf = BytesMut::from(text.as_bytes());
            let (parts, raw, _, _) = parse_head(&mut buf, false).unwrap().unwrap();
            assert!(parts.headers.is_empty());
            // Written out as they came: names in their case, one line each.
            let mut out = Vec::new();
            raw.encode(&mut out, |_| false);
            let written: Vec<(String, String)> = String::from_utf8(out)
                .unwrap()
                .split_terminator("\r\n")
                .map(|line| line.split_once(": ").unwrap())
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            let kept: Vec<(String, String)> = raw
                .iter()
                .map(|(n, v)| {
                    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                    (text(n), text(v))
                })
                .collect();
            assert_eq!(written, kept, "{fields:?}");
            assert!(
                kept.iter()
                    .all(|(n, v)| fields.contains(&format!("{n}: {v}").as_str())),
                "{fields:?}"
            );
            let mut headers = HeaderMap::new();
            raw.append_to(&mut headers);
            let mut expected = HeaderMap::new();
            for field in *fields {
                let (name, value) = field.split_once(": ").unwrap();
                expected.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
            }
            crate::proxy::headers::remove_hop_by_hop(&mut expected, false);
            // The same fields with each name's values in order (`HeaderMap`'s equality);
            // the order across names is the wire's now, where a removal used to move the
            // last field into the removed one's place.
            assert_eq!(headers, expected, "{fields:?}");
            let names: Vec<_> = headers.keys().map(|n| n.as_str()).collect();
            let mut wire: Vec<_> = fields
                .iter()
                .map(|f| f.split_once(": ").unwrap().0.to_ascii_lowercase())
                .filter(|n| expected.contains_key(n.as_str()))
                .collect();
            wire.dedup();
            assert_eq!(names, wire, "{fields:?}");
        }
    }

    #[tokio::test]
    async fn a_chunked_response_in_pieces_with_trailers() {
        let (conn, _server) = upstream(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Head: a\r\n",
            b"\r\n5;ext=1\r",
            b"\nhello\r\n6\r\n wor",
            b"ld\r\n0\r\nX-Trailer: t\r\n",
            b"\r\n",
        ])
        .await;
        let response = conn.send(get("/"), None).await.unwrap();
        let mut body = response.into_body();
        assert_eq!(fields(&mut body)["x-head"], "a");
        let (data, trailers) = read_all(&mut body).await.unwrap();
        assert_eq!(data, "hello world");
        assert_eq!(trailers.unwrap()["x-trailer"], "t");
        assert!(body.is_end_stream());
        assert!(body.take_reusable().is_some(), "read to its end: reusable");
    }

    #[tokio::test]
    async fn a_response_read_to_the_close_is_not_reused() {
        let (conn, _server) = upstream(vec![b"HTTP/1.1 200 OK\r\n\r\nto the ", b"end"]).await;
        let mut body = conn.send(get("/"), None).await.unwrap().into_body();
        assert_eq!(read_all(&mut body).await.unwrap().0, "to the end");
        assert!(body.take_reusable().is_none());
    }

    #[tokio::test]
    async fn informational_responses_are_skipped() {
        let (conn, _server) = upstream(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        ])
        .await;
        let response = conn.send(get("/"), None).await.unwrap();
        assert_eq!(response.status(), 201);
        let mut body = response.into_body();
        assert!(fields(&mut body).get("link").is_none());
        assert!(body.is_end_stream());
        assert!(body.take_reusable().is_some());
    }

    #[tokio::test]
    async fn bytes_after_the_body_make_the_connection_unusable() {
        let (conn, _server) =
            upstream(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"]).await;
        let mut body = conn.send(get("/"), None).await.unwrap().into_body();
        assert_eq!(read_all(&mut body).await.unwrap().0, "ok");
        assert!(body.take_reusable().is_none());
    }

    #[tokio::test]
    async fn connection_close_is_honoured() {
        let (conn, _server) = upstream(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        ])
        .await;
        let mut body = conn.send(get("/"), None).await.unwrap().into_body();
        assert_eq!(read_all(&mut body).await.unwrap().0, "ok");
        assert!(body.take_reusable().is_none());
    }

    #[tokio::test]
    async fn failures_are_errors_that_say_what_happened() {
        let (conn, _server) = upstream(vec![]).await;
        let err = conn.send(get("/"), None).await.unwrap_err();
        assert!(matches!(err, Error::ClosedBeforeHead), "{err}");

        let (conn, _server) = upstream(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ])
        .await;
        let err = conn.send(get("/"), None).await.unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");

        let (conn, _server) = upstream(vec![b"HTTP/1.1 2000 OK\r\n\r\n"]).await;
        let err = conn.send(get("/"), None).await.unwrap_err();
        assert!(matches!(err, Error::Parse(_)), "{err}");

        let (conn, _server) =
            upstream(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]).await;
        let mut body = conn.send(get("/"), None).await.unwrap().into_body();
        let err = read_all(&mut body).await.unwrap_err();
        assert!(matches!(err, Error::ClosedInBody), "{err}");
        assert!(body.take_reusable().is_none());

        let (conn, _server) = upstream(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ])
        .await;
        let mut body = conn.send(get("/"), None).await.unwrap().into_body();
        let err = read_all(&mut body).await.unwrap_err();
        assert!(matches!(err, Error::Chunked), "{err}");
    }

    #[tokio::test]
    async fn a_head_response_has_no_body_whatever_its_length_says() {
        let (conn, _server) =
            upstream(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"]).await;
        let req = Request::head("/")
            .header("host", "svc")
            .body(RequestBody::empty())
            .unwrap();
        let response = conn.send(req, None).await.unwrap();
        let mut body = response.into_body();
        assert_eq!(fields(&mut body)["content-length"], "1000");
        assert!(body.is_end_stream());
        assert!(body.take_reusable().is_some());
    }
}
