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
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::AsyncWrite;

use super::connector::{ConnMeta, Tagged};
use super::decode::{Decoded, Kind};
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
    pub async fn send(mut self, req: Request<RequestBody>) -> Result<Response<Body>, Error> {
        let (parts, mut body) = req.into_parts();
        let head_request = parts.method == Method::HEAD;
        self.write.clear();
        self.written = 0;
        let mut outgoing = encode_head(&mut self.write, &parts, &body);
        drop(parts);
        // A request body cut short by an early response leaves the connection unusable.
        let mut body_sent = outgoing == Outgoing::None;
        let head = poll_fn(|cx| {
            self.poll_send(cx, &mut body, &mut outgoing, &mut body_sent, head_request)
        })
        .await?;
        let (parts, kind, keep_alive) = head;
        Ok(Response::from_parts(
            parts,
            Body {
                kind,
                reusable: keep_alive && body_sent,
                conn: Some(self),
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

/// The response head, how its body is framed, and whether the connection may be reused.
type Head = (http::response::Parts, Kind, bool);

/// Writes the request line and header section; returns how the body goes out.
fn encode_head(out: &mut Vec<u8>, parts: &http::request::Parts, body: &RequestBody) -> Outgoing {
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
    // Where each name and value sits in the head, to share the head's bytes once split off.
    let base = buf.as_ptr() as usize;
    let mut spans = [[0u32; 4]; MAX_HEADERS];
    let count = response.headers.len();
    for (field, span) in response.headers.iter().zip(spans.iter_mut()) {
        let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        *span = [
            at(field.name.as_bytes()),
            field.name.len() as u32,
            at(field.value),
            field.value.len() as u32,
        ];
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    for [name_at, name_len, value_at, value_len] in spans.into_iter().take(count) {
        let name = head
            .get(name_at as usize..(name_at + name_len) as usize)
            .and_then(|name| HeaderName::from_bytes(name).ok())
            .ok_or(Error::Invalid("header name"))?;
        let value = HeaderValue::from_maybe_shared(
            head.slice(value_at as usize..(value_at + value_len) as usize),
        )
        .map_err(|_| Error::Invalid("header value"))?;
        headers.append(name, value);
    }
    let (kind, keep_alive) = framing(status, version, &headers, head_request)?;
    let mut parts = Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some((parts, kind, keep_alive)))
}

/// How the response body is delimited (RFC 9112 §6.3), and whether the connection may carry
/// another request afterwards.
fn framing(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    head_request: bool,
) -> Result<(Kind, bool), Error> {
    let has_token = |token: &str| super::headers::has_token(headers, CONNECTION, token);
    let keep_alive = if version == Version::HTTP_11 {
        !has_token("close")
    } else {
        has_token("keep-alive")
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
    if headers.contains_key(TRANSFER_ENCODING) {
        let chunked = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked {
            // With a Content-Length too, the message was framed by a confused sender:
            // read it chunked, then close.
            let keep = keep_alive && !headers.contains_key(CONTENT_LENGTH);
            (Kind::CHUNKED, keep)
        } else {
            (Kind::Close, false)
        });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let text = value
            .to_str()
            .map_err(|_| Error::Invalid("content-length"))?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::Invalid("content-length"));
            }
            let n: u64 = part.parse().map_err(|_| Error::Invalid("content-length"))?;
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
}

impl Body {
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
        let response = conn.send(req).await.unwrap();
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
            framing(status, version, &head(fields), head_req).ok()
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
        let response = conn.send(get("/")).await.unwrap();
        assert_eq!(response.headers()["x-head"], "a");
        let mut body = response.into_body();
        let (data, trailers) = read_all(&mut body).await.unwrap();
        assert_eq!(data, "hello world");
        assert_eq!(trailers.unwrap()["x-trailer"], "t");
        assert!(body.is_end_stream());
        assert!(body.take_reusable().is_some(), "read to its end: reusable");
    }

    #[tokio::test]
    async fn a_response_read_to_the_close_is_not_reused() {
        let (conn, _server) = upstream(vec![b"HTTP/1.1 200 OK\r\n\r\nto the ", b"end"]).await;
        let mut body = conn.send(get("/")).await.unwrap().into_body();
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
        let response = conn.send(get("/")).await.unwrap();
        assert_eq!(response.status(), 201);
        assert!(response.headers().get("link").is_none());
        let mut body = response.into_body();
        assert!(body.is_end_stream());
        assert!(body.take_reusable().is_some());
    }

    #[tokio::test]
    async fn bytes_after_the_body_make_the_connection_unusable() {
        let (conn, _server) =
            upstream(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"]).await;
        let mut body = conn.send(get("/")).await.unwrap().into_body();
        assert_eq!(read_all(&mut body).await.unwrap().0, "ok");
        assert!(body.take_reusable().is_none());
    }

    #[tokio::test]
    async fn connection_close_is_honoured() {
        let (conn, _server) = upstream(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        ])
        .await;
        let mut body = conn.send(get("/")).await.unwrap().into_body();
        assert_eq!(read_all(&mut body).await.unwrap().0, "ok");
        assert!(body.take_reusable().is_none());
    }

    #[tokio::test]
    async fn failures_are_errors_that_say_what_happened() {
        let (conn, _server) = upstream(vec![]).await;
        let err = conn.send(get("/")).await.unwrap_err();
        assert!(matches!(err, Error::ClosedBeforeHead), "{err}");

        let (conn, _server) = upstream(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ])
        .await;
        let err = conn.send(get("/")).await.unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");

        let (conn, _server) = upstream(vec![b"HTTP/1.1 2000 OK\r\n\r\n"]).await;
        let err = conn.send(get("/")).await.unwrap_err();
        assert!(matches!(err, Error::Parse(_)), "{err}");

        let (conn, _server) =
            upstream(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]).await;
        let mut body = conn.send(get("/")).await.unwrap().into_body();
        let err = read_all(&mut body).await.unwrap_err();
        assert!(matches!(err, Error::ClosedInBody), "{err}");
        assert!(body.take_reusable().is_none());

        let (conn, _server) = upstream(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ])
        .await;
        let mut body = conn.send(get("/")).await.unwrap().into_body();
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
        let response = conn.send(req).await.unwrap();
        assert_eq!(response.headers()["content-length"], "1000");
        let mut body = response.into_body();
        assert!(body.is_end_stream());
        assert!(body.take_reusable().is_some());
    }
}
