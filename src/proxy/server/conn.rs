//! One client connection over HTTP/1.1: read a head, hand the request to the handler while
//! feeding it the body, write the response, and again while the connection persists. An
//! HTTP/2 client (its preface first) is handed to hyper's HTTP/2 server instead.
//!
//! Everything of a request happens in the connection's task: the handler's future is polled
//! here, the request body is read here when the handler asks for it, the response is
//! written here. Between requests the connection holds no buffer.

use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body;
use tokio::io::{AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::body::{self, ClientBody, Feed, Pump};
use super::head::{self, Head, HeadError};
use super::io::{Io, OnUpgrade, Prefixed, Upgraded};
use super::{Ambiguous, End, Settings};
use crate::proxy::ResponseBody;
use crate::proxy::decode::Kind;
use crate::proxy::h1::{RawFields, encode_fields, push_number};

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A read for a request body, or for the rest of a head, reserves this much.
const READ_CHUNK: usize = 16 * 1024;
/// A read while waiting for a head goes to the stack first (this much at most), so that an
/// idle connection holds no buffer; what arrived is then copied to a buffer of its size.
const HEAD_CHUNK: usize = 4096;
/// Bytes a client may send ahead (pipelined) while its request is handled; beyond that the
/// connection stops reading until the response is written.
const MAX_AHEAD: usize = 64 * 1024;
/// Body data up to this size is copied next to the head and the framing, for one write;
/// larger data is written from its own buffer.
const COPY_MAX: usize = 16 * 1024;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// Longest wait for the client to close after the proxy closed its side.
const LINGER: std::time::Duration = std::time::Duration::from_millis(500);

/// The connection's stream and what it has read but not yet used.
struct Conn<I> {
    io: I,
    read: BytesMut,
    /// The client closed its side (or its connection failed): nothing more will be read.
    eof: bool,
    /// A request body failed: the connection closes after the response.
    broken: bool,
}

/// What reading the next head gave. (Returned once per request and unpacked at once: not
/// worth an allocation to make smaller.)
#[allow(clippy::large_enum_variant)]
enum Next {
    Head(Head),
    /// The HTTP/2 preface: the connection is HTTP/2.
    H2,
}

/// How one request went.
enum Exchanged {
    /// The connection can carry the next request.
    KeepAlive,
    Close(End),
    /// `101 Switching Protocols` was written: the connection belongs to the upgrade.
    Upgrade(oneshot::Sender<Upgraded>),
}

/// How the HTTP/1.1 loop let go of a connection.
pub(super) enum Served<I> {
    End(End),
    /// The client sent the HTTP/2 preface: the connection is HTTP/2, bytes read included.
    H2(Prefixed<I>),
}

/// Serves an HTTP/1.1 connection, until it closes or turns out to be HTTP/2.
pub(super) async fn serve<I, F, Fut>(
    io: I,
    settings: &Settings,
    token: &CancellationToken,
    handler: &F,
) -> Served<I>
where
    I: Io,
    F: Fn(Request<ClientBody>) -> Fut,
    Fut: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let mut conn = Conn {
        io,
        read: BytesMut::new(),
        eof: false,
        broken: false,
    };
    // One timer per connection, moved only when it fires early: each head's deadline is
    // `deadline`, and a timer that fires before it is reset to it (no timer-wheel work per
    // request on a busy connection).
    let mut deadline = Instant::now() + settings.header_read_timeout;
    let mut timer = pin!(tokio::time::sleep_until(deadline));
    let mut drain = pin!(token.clone().cancelled_owned());
    let mut first = true;
    loop {
        let next = conn
            .read_head(settings, first, deadline, timer.as_mut(), drain.as_mut())
            .await;
        let head = match next {
            Ok(Next::Head(head)) => head,
            Ok(Next::H2) => return Served::H2(Prefixed::new(conn.read, conn.io)),
            Err(End::Refused(err)) => {
                conn.refuse(err).await;
                conn.close().await;
                return Served::End(End::Refused(err));
            }
            Err(end) => return Served::End(end),
        };
        first = false;
        // Boxed, with the handler's future in it: a connection waiting for its next request
        // holds no request's state (10,000 idle connections: BENCHMARKS.md).
        match Box::into_pin(crate::proxy::boxed(|| conn.exchange(head, handler, token))).await {
            Exchanged::KeepAlive => {}
            Exchanged::Close(end) => {
                conn.close().await;
                return Served::End(end);
            }
            Exchanged::Upgrade(tx) => {
                let io: Box<dyn Io> = Box::new(conn.io);
                let _ = tx.send(Prefixed::new(conn.read, io));
                return Served::End(End::Done);
            }
        }
        if conn.read.is_empty() {
            // Idle until the next request: no buffer held.
            conn.read = BytesMut::new();
        }
        deadline = Instant::now() + settings.header_read_timeout;
    }
}

impl<I: Io> Conn<I> {
    /// Reads until a whole head is buffered (or the HTTP/2 preface, on a connection's first
    /// bytes), within the header read timeout.
    async fn read_head(
        &mut self,
        settings: &Settings,
        first: bool,
        deadline: Instant,
        mut timer: Pin<&mut Sleep>,
        mut drain: Pin<&mut WaitForCancellationFutureOwned>,
    ) -> Result<Next, End> {
        loop {
            if !self.read.is_empty() {
                let len = self.read.len().min(PREFACE.len());
                if first && self.read.get(..len) == PREFACE.get(..len) {
                    if len == PREFACE.len() {
                        return Ok(Next::H2);
                    }
                } else {
                    match head::parse(&mut self.read, settings.limits) {
                        Ok(Some(head)) => return Ok(Next::Head(head)),
                        Ok(None) => {}
                        Err(err) => return Err(End::Refused(err)),
                    }
                }
            }
            if self.eof {
                return Err(if self.read.is_empty() {
                    End::Done
                } else {
                    End::HeadCut
                });
            }
            poll_fn(|cx| {
                match self.poll_fill(cx, true) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        self.eof = true;
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready(Ok(_)) => return Poll::Ready(Ok(())),
                    Poll::Pending => {}
                }
                // Draining closes a connection between requests, not within a head.
                if self.read.is_empty() && drain.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(End::Done));
                }
                while timer.as_mut().poll(cx).is_ready() {
                    if Instant::now() >= deadline {
                        return Poll::Ready(Err(match (first, self.read.is_empty()) {
                            (_, false) => End::HeadTimeout,
                            (true, true) => End::Silent,
                            (false, true) => End::Done,
                        }));
                    }
                    timer.as_mut().reset(deadline);
                }
                Poll::Pending
            })
            .await?;
        }
    }

    /// One request: the handler runs (fed the body as it asks for it), then the response
    /// is written.
    async fn exchange<F, Fut>(
        &mut self,
        head: Head,
        handler: &F,
        token: &CancellationToken,
    ) -> Exchanged
    where
        F: Fn(Request<ClientBody>) -> Fut,
        Fut: Future<Output = Response<ResponseBody>> + Send + 'static,
    {
        let Head {
            mut request,
            body,
            keep_alive,
            expect_continue,
            upgrade,
            ambiguous,
        } = head;
        let version = request.version();
        let method = request.method().clone();
        let trailers_ok = head::has_token(request.headers(), TE, "trailers");
        let (mut feed, body) = if body == Kind::Done {
            (None, ClientBody::Empty)
        } else {
            let (body, feed) = body::channel(body, expect_continue);
            (Some(feed), ClientBody::H1(body))
        };
        let upgrade = upgrade.then(|| {
            let (tx, rx) = oneshot::channel();
            request.extensions_mut().insert(OnUpgrade::new(rx));
            tx
        });
        if ambiguous {
            request.extensions_mut().insert(Ambiguous);
        }
        let mut handling = pin!(handler(request.map(|()| body)));
        let mut interim: &'static [u8] = &[];
        let response = poll_fn(|cx| {
            loop {
                if let Poll::Ready(response) = handling.as_mut().poll(cx) {
                    return Poll::Ready(Some(response));
                }
                match self.poll_client(cx, &mut feed, &mut interim) {
                    Poll::Ready(true) => continue,
                    Poll::Ready(false) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
        let Some(response) = response else {
            return Exchanged::Close(End::ClientGone);
        };
        let (parts, mut body) = response.into_parts();
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        let upgrade = upgrade.filter(|_| switching);
        // The connection ends after this response when the client asked, cannot be read
        // on (it left, or its body failed), tunnels (CONNECT), switches protocols without
        // an upgrade it asked for, or the listener drains.
        let must_close = self.eof
            || self.broken
            || feed.as_ref().is_some_and(Feed::broken)
            || method == Method::CONNECT
            || (switching && upgrade.is_none())
            || token.is_cancelled();
        let mut keep_alive = keep_alive && !must_close;

        let mut out = Vec::with_capacity(512);
        let bodiless = method == Method::HEAD
            || parts.status.is_informational()
            || parts.status == StatusCode::NO_CONTENT
            || parts.status == StatusCode::NOT_MODIFIED;
        // An HTTP/1.1 upstream's fields come apart from the map (`h1::RawFields`), written
        // as they came; the map holds what the proxy added.
        let raw = body.take_raw_fields();
        let framing_fields = FramingFields::of(&parts.headers, raw.as_ref());
        let declared = framing_fields.length.and_then(parse_length);
        let mut framing = if bodiless {
            Framing::None
        } else if let Some(len) = declared {
            Framing::Length(len)
        } else if let Some(len) = body.size_hint().exact() {
            Framing::Length(len)
        } else if version == Version::HTTP_11 {
            Framing::Chunked
        } else {
            keep_alive = false;
            Framing::Close
        };
        encode_status(&mut out, parts.status);
        if let Some(raw) = &raw {
            let traceresponse = body.traceresponse().is_some();
            raw.encode(&mut out, |name| {
                (traceresponse && name.eq_ignore_ascii_case(b"traceresponse"))
                    || parts
                        .headers
                        .keys()
                        .any(|k| k.as_str().as_bytes().eq_ignore_ascii_case(name))
            });
        }
        encode_fields(&mut out, &parts.headers, true);
        if let Some(value) = body.traceresponse() {
            out.extend_from_slice(b"traceresponse: ");
            out.extend_from_slice(&value.format());
            out.extend_from_slice(b"\r\n");
        }
        match framing {
            Framing::Length(len) if declared.is_none() => {
                out.extend_from_slice(b"content-length: ");
                push_number(&mut out, len, 10);
                out.extend_from_slice(b"\r\n");
            }
            Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            _ => {}
        }
        if !framing_fields.date {
            super::date::encode(&mut out);
        }
        if upgrade.is_some() {
            // The upstream's `Connection: upgrade` went out with its fields.
        } else if !keep_alive {
            if !framing_fields.connection {
                out.extend_from_slice(b"connection: close\r\n");
            }
        } else if version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        // The upstream's head buffer, which the fields shared, is not needed any more.
        drop(raw);

        if let Some(tx) = upgrade {
            drop(body);
            if self.write(&out, &[]).await.is_err() || self.io.flush().await.is_err() {
                return Exchanged::Close(End::ClientGone);
            }
            return Exchanged::Upgrade(tx);
        }

        let mut trailers: Option<HeaderMap> = None;
        loop {
            let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    // Nothing more for now: what is encoded goes out while the body waits.
                    if !out.is_empty() {
                        if self.write(&out, &[]).await.is_err() {
                            return Exchanged::Close(End::ClientGone);
                        }
                        out.clear();
                    }
                    let waited = poll_fn(|cx| {
                        loop {
                            if let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(cx) {
                                return Poll::Ready(Some(frame));
                            }
                            match self.poll_client(cx, &mut feed, &mut interim) {
                                Poll::Ready(true) => continue,
                                Poll::Ready(false) => return Poll::Ready(None),
                                Poll::Pending => return Poll::Pending,
                            }
                        }
                    })
                    .await;
                    match waited {
                        Some(frame) => frame,
                        None => return Exchanged::Close(End::ClientGone),
                    }
                }
            };
            let frame = match frame {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(_)) => {
                    // The upstream's body failed: the client gets what came, and a
                    // connection closed before the body's end (never a completed body).
                    let _ = self.write(&out, &[]).await;
                    return Exchanged::Close(End::Done);
                }
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let Ok(map) = frame.into_trailers() {
                        trailers = Some(map);
                    }
                    continue;
                }
            };
            if data.is_empty() {
                continue;
            }
            let data = match &mut framing {
                Framing::None => continue,
                Framing::Length(left) => {
                    if data.len() as u64 > *left {
                        // More than the declared length: cut at it, and close.
                        let _ = self
                            .write(&out, data.get(..*left as usize).unwrap_or_default())
                            .await;
                        return Exchanged::Close(End::Done);
                    }
                    *left -= data.len() as u64;
                    data
                }
                Framing::Chunked => {
                    push_number(&mut out, data.len() as u64, 16);
                    out.extend_from_slice(b"\r\n");
                    data
                }
                Framing::Close => data,
            };
            let chunked = framing == Framing::Chunked;
            if data.len() <= COPY_MAX {
                out.extend_from_slice(&data);
                if chunked {
                    out.extend_from_slice(b"\r\n");
                }
                if out.len() >= COPY_MAX {
                    if self.write(&out, &[]).await.is_err() {
                        return Exchanged::Close(End::ClientGone);
                    }
                    out.clear();
                }
            } else {
                if self.write(&out, &data).await.is_err() {
                    return Exchanged::Close(End::ClientGone);
                }
                out.clear();
                if chunked {
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        match framing {
            Framing::Chunked => {
                out.extend_from_slice(b"0\r\n");
                if let Some(trailers) = trailers.as_ref().filter(|_| trailers_ok) {
                    encode_fields(&mut out, trailers, false);
                }
                out.extend_from_slice(b"\r\n");
            }
            // The body ended short of its declared length: only closing says so.
            Framing::Length(left) if left > 0 => keep_alive = false,
            Framing::Close => keep_alive = false,
            _ => {}
        }
        drop(body);
        if self.write(&out, &[]).await.is_err() || self.io.flush().await.is_err() {
            return Exchanged::Close(End::ClientGone);
        }
        // What is left of the request body is skipped, when it is all here already.
        if let Some(feed) = feed.as_mut() {
            if !feed.discard_buffered(&mut self.read) {
                keep_alive = false;
            }
        }
        if keep_alive {
            Exchanged::KeepAlive
        } else {
            Exchanged::Close(End::Done)
        }
    }

    /// The client's side while a request is handled: its body fed to the handler as it
    /// asks, `100 Continue` written, and a closed connection noticed. Ready(true): progress,
    /// poll the handler again; Ready(false): the client is gone.
    fn poll_client(
        &mut self,
        cx: &mut Context<'_>,
        feed: &mut Option<Feed>,
        interim: &mut &'static [u8],
    ) -> Poll<bool> {
        if !interim.is_empty() {
            match ready!(Pin::new(&mut self.io).poll_write(cx, interim)) {
                Ok(n) if n > 0 => {
                    *interim = interim.get(n..).unwrap_or_default();
                    return Poll::Ready(true);
                }
                _ => return Poll::Ready(false),
            }
        }
        if let Some(f) = feed.as_mut() {
            match f.pump(cx, &mut self.read) {
                Pump::Progress => return Poll::Ready(true),
                Pump::Continue => {
                    *interim = CONTINUE;
                    return Poll::Ready(true);
                }
                Pump::NeedBytes => {
                    if !self.eof {
                        match ready!(self.poll_fill(cx, false)) {
                            Ok(n) if n > 0 => return Poll::Ready(true),
                            _ => self.eof = true,
                        }
                    }
                    f.fail(cx);
                    return Poll::Ready(true);
                }
                Pump::Idle => return Poll::Pending,
                Pump::Done => {
                    self.broken |= f.broken();
                    *feed = None;
                }
                // Kept, to skip the rest after the response.
                Pump::Abandoned => {}
            }
        }
        // Not reading a body: watch for the client closing (hyper's default too: a client
        // that shuts its side down has given up on the response), keeping what it sends
        // ahead for the next request.
        if self.eof || self.read.len() >= MAX_AHEAD {
            return Poll::Pending;
        }
        match ready!(self.poll_fill(cx, true)) {
            Ok(n) if n > 0 => Poll::Ready(true),
            _ => {
                self.eof = true;
                Poll::Ready(false)
            }
        }
    }

    /// Reads more into `read`. `stack_first`: when the buffer is empty, read to the stack
    /// and allocate only for what arrived (a connection waiting for a request holds no
    /// buffer).
    fn poll_fill(&mut self, cx: &mut Context<'_>, stack_first: bool) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < 1024 {
            if stack_first && self.read.is_empty() {
                let mut stack = [MaybeUninit::<u8>::uninit(); HEAD_CHUNK];
                let mut buf = ReadBuf::uninit(&mut stack);
                ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
                let filled = buf.filled();
                // Exactly what arrived: the request's header values share this buffer, and a
                // span record waiting in the export queue keeps some of them (and so all of
                // it) alive. A head read whole in one go is the common case.
                self.read.reserve(filled.len());
                self.read.extend_from_slice(filled);
                return Poll::Ready(Ok(filled.len()));
            }
            self.read.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }

    /// Writes `a` then `b`, in one vectored write where the stream takes it.
    async fn write(&mut self, a: &[u8], b: &[u8]) -> io::Result<()> {
        let (mut a, mut b) = (a, b);
        while !a.is_empty() || !b.is_empty() {
            let n = if a.is_empty() {
                self.io.write(b).await?
            } else if b.is_empty() || !self.io.is_write_vectored() {
                self.io.write(a).await?
            } else {
                let slices = [io::IoSlice::new(a), io::IoSlice::new(b)];
                self.io.write_vectored(&slices).await?
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let from_a = n.min(a.len());
            a = a.get(from_a..).unwrap_or_default();
            b = b.get(n - from_a..).unwrap_or_default();
        }
        Ok(())
    }

    /// Answers a refused head (400, 431, 414) and closes.
    async fn refuse(&mut self, err: HeadError) {
        let (status, kind, text): (_, _, &[u8]) = match err {
            HeadError::Malformed(_) => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                b"hoptrace: malformed request head\n",
            ),
            HeadError::TooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header_too_large",
                b"hoptrace: request header section too large\n",
            ),
            HeadError::UriTooLong => (
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                b"hoptrace: request target too long\n",
            ),
        };
        let mut out = Vec::with_capacity(256);
        encode_status(&mut out, status);
        out.extend_from_slice(b"content-type: text/plain; charset=utf-8\r\n");
        out.extend_from_slice(b"x-hoptrace-error: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\r\ncontent-length: ");
        push_number(&mut out, text.len() as u64, 10);
        out.extend_from_slice(b"\r\n");
        super::date::encode(&mut out);
        out.extend_from_slice(b"connection: close\r\n\r\n");
        out.extend_from_slice(text);
        let _ = self.write(&out, &[]).await;
    }

    /// Ends the connection after a response. Bytes of the client still unread when the
    /// socket closes would turn the close into a reset, which can destroy the response in
    /// flight: stop writing first, then read (and drop) until the client closes too, for
    /// `LINGER` at most.
    async fn close(&mut self) {
        let _ = self.io.shutdown().await;
        if self.eof {
            return;
        }
        let mut linger = pin!(tokio::time::sleep(LINGER));
        poll_fn(|cx| {
            if linger.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            loop {
                self.read.clear();
                match ready!(self.poll_fill(cx, false)) {
                    Ok(n) if n > 0 => {}
                    _ => return Poll::Ready(()),
                }
            }
        })
        .await;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// HEAD, 1xx, 204, 304: no body on the wire.
    None,
    /// Bytes still to write.
    Length(u64),
    Chunked,
    /// HTTP/1.0 without a length: the body ends with the connection.
    Close,
}

fn encode_status(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// What the response head writer needs to know of the response's fields, looked up in one
/// pass: the proxy's own (the map, first: they replace the upstream's) and an HTTP/1.1
/// upstream's (`h1::RawFields`).
struct FramingFields<'a> {
    /// The first `Content-Length` value.
    length: Option<&'a [u8]>,
    date: bool,
    connection: bool,
}

impl<'a> FramingFields<'a> {
    fn of(map: &'a HeaderMap, raw: Option<&'a RawFields>) -> FramingFields<'a> {
        let mut found = FramingFields {
            length: map.get(CONTENT_LENGTH).map(HeaderValue::as_bytes),
            date: map.contains_key(DATE),
            connection: map.contains_key(CONNECTION),
        };
        for (name, value) in raw.into_iter().flat_map(RawFields::iter) {
            match name.len() {
                14 if found.length.is_none() && name.eq_ignore_ascii_case(b"content-length") => {
                    found.length = Some(value);
                }
                4 if name.eq_ignore_ascii_case(b"date") => found.date = true,
                10 if name.eq_ignore_ascii_case(b"connection") => found.connection = true,
                _ => {}
            }
        }
        found
    }
}

/// A `Content-Length` value, when it is one number.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, DuplexStream};

    use super::*;
    use crate::proxy::server::Limits;

    const SETTINGS: Settings = Settings {
        header_read_timeout: Duration::from_secs(5),
        limits: Limits {
            max_bytes: 8192,
            max_fields: 100,
        },
    };

    /// Answers with what it got: method, target and the body's length and text.
    async fn echo(req: Request<ClientBody>) -> Response<ResponseBody> {
        let head = format!("{} {}", req.method(), req.uri());
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        let text = match body {
            Ok(body) => format!("{head} {}:{}", body.len(), String::from_utf8_lossy(&body)),
            Err(err) => format!("{head} error: {err}"),
        };
        Response::new(ResponseBody::text(Box::leak(text.into_boxed_str())))
    }

    fn start<F, Fut>(handler: F) -> (DuplexStream, tokio::task::JoinHandle<Served<DuplexStream>>)
    where
        F: Fn(Request<ClientBody>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<ResponseBody>> + Send + 'static,
    {
        let (client, server) = tokio::io::duplex(1 << 16);
        let token = CancellationToken::new();
        let task = tokio::spawn(async move { serve(server, &SETTINGS, &token, &handler).await });
        (client, task)
    }

    async fn read_all(client: &mut DuplexStream) -> String {
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Reads until `count` responses (each ending in its body `... :<text>`) arrived.
    async fn read_until(client: &mut DuplexStream, needle: &str) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&out).contains(needle) {
            let n = client.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before {needle:?}: {}",
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_on_one_connection() {
        let (mut client, task) = start(echo);
        client
            .write_all(
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
                  POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
                  GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let out = read_all(&mut client).await;
        let a = out.find("GET /a 0:").unwrap();
        let b = out.find("POST /b 5:hello").unwrap();
        let c = out.find("GET /c 0:").unwrap();
        assert!(a < b && b < c, "{out}");
        assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{out}");
        assert_eq!(out.matches("\r\ndate: ").count(), 3, "{out}");
        assert!(out.contains("content-length: 15\r\n"), "{out}");
        // Only the last one says the connection ends.
        assert_eq!(out.matches("connection: close\r\n").count(), 1, "{out}");
        assert!(matches!(task.await.unwrap(), Served::End(End::Done)));
    }

    #[tokio::test]
    async fn a_chunked_body_after_100_continue_reaches_the_handler() {
        let (mut client, _task) = start(echo);
        client
            .write_all(
                b"PUT /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\
                  Transfer-Encoding: chunked\r\n\r\n",
            )
            .await
            .unwrap();
        let interim = read_until(&mut client, "\r\n\r\n").await;
        assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
        client
            .write_all(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            .await
            .unwrap();
        let out = read_until(&mut client, "PUT /up 11:hello world").await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    }

    #[tokio::test]
    async fn a_broken_chunked_body_fails_the_handlers_read_and_closes() {
        let (mut client, task) = start(echo);
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
            .await
            .unwrap();
        let out = read_all(&mut client).await;
        assert!(
            out.contains("POST / error: invalid chunked request body"),
            "{out}"
        );
        assert!(out.contains("connection: close\r\n"), "{out}");
        assert!(matches!(task.await.unwrap(), Served::End(End::Done)));
    }

    #[tokio::test]
    async fn http_1_0_gets_one_response_then_the_close() {
        let (mut client, _task) = start(echo);
        client
            .write_all(b"GET /old HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let out = read_all(&mut client).await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("connection: close\r\n"), "{out}");
        assert!(out.ends_with("GET /old 0:"), "{out}");
    }

    #[tokio::test]
    async fn refused_heads_are_answered_with_their_status_and_closed() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        for (head, status, kind) in [
            (
                &b"GET / HTTP/1.1\r\nNo colon\r\n\r\n"[..],
                "400 Bad Request",
                "bad_request",
            ),
            (
                big.as_bytes(),
                "431 Request Header Fields Too Large",
                "header_too_large",
            ),
        ] {
            let (mut client, task) = start(echo);
            client.write_all(head).await.unwrap();
            let out = read_all(&mut client).await;
            assert!(out.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{out}");
            assert!(
                out.contains(&format!("x-hoptrace-error: {kind}\r\n")),
                "{out}"
            );
            assert!(out.contains("connection: close\r\n"), "{out}");
            assert!(matches!(task.await.unwrap(), Served::End(End::Refused(_))));
        }
    }

    #[tokio::test]
    async fn the_http2_preface_hands_the_connection_over_with_its_bytes() {
        let (mut client, task) = start(echo);
        client.write_all(&PREFACE[..10]).await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(&PREFACE[10..]).await.unwrap();
        client.write_all(b"frames").await.unwrap();
        let Served::H2(mut io) = task.await.unwrap() else {
            panic!("not handed over");
        };
        let mut got = vec![0u8; PREFACE.len() + 6];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..PREFACE.len()], PREFACE);
        assert_eq!(&got[PREFACE.len()..], b"frames");
    }

    #[tokio::test(start_paused = true)]
    async fn silence_half_a_head_and_idleness_each_end_at_the_header_timeout() {
        let (_client, task) = start(echo);
        assert!(matches!(task.await.unwrap(), Served::End(End::Silent)));

        let (mut client, task) = start(echo);
        client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        assert!(matches!(task.await.unwrap(), Served::End(End::HeadTimeout)));

        let (mut client, task) = start(echo);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        read_until(&mut client, "GET / 0:").await;
        assert!(matches!(task.await.unwrap(), Served::End(End::Done)));
    }

    #[tokio::test]
    async fn a_client_leaving_mid_request_cancels_its_handler() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let seen = dropped.clone();
        let (mut client, task) = start(move |_req| {
            let flag = Flag(seen.clone());
            async move {
                let _flag = flag;
                std::future::pending::<()>().await;
                Response::new(ResponseBody::empty())
            }
        });
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        tokio::task::yield_now().await;
        drop(client);
        assert!(matches!(task.await.unwrap(), Served::End(End::ClientGone)));
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_101_hands_the_connection_to_the_upgrade() {
        let (mut client, _task) = start(|mut req: Request<ClientBody>| async move {
            let on_upgrade = req.extensions_mut().remove::<OnUpgrade>().unwrap();
            tokio::spawn(async move {
                let mut io = on_upgrade.upgraded().await.unwrap();
                let mut buf = [0u8; 4];
                io.read_exact(&mut buf).await.unwrap();
                io.write_all(&buf).await.unwrap();
            });
            let mut response = Response::new(ResponseBody::empty());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            response
                .headers_mut()
                .insert(CONNECTION, http::HeaderValue::from_static("upgrade"));
            response
        });
        // The first bytes of the new protocol come right behind the head.
        client
            .write_all(b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nping")
            .await
            .unwrap();
        let out = read_until(&mut client, "ping").await;
        assert!(
            out.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{out}"
        );
        assert!(out.ends_with("\r\n\r\nping"), "{out}");
    }
}
