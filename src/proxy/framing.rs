//! Request smuggling guard: a request head with both `Content-Length` and `Transfer-Encoding`
//! is answered 400 and never forwarded.
//!
//! RFC 9112 §6.1 lets a server either reject such a message or let chunked win and close the
//! connection after responding; hyper does the latter and drops `Content-Length` before any
//! service sees the request, so the service alone cannot tell. Proxies disagreeing on exactly
//! this is how requests are smuggled (one hop frames by length, the next by chunks), so
//! hoptrace rejects it, as the stricter choice the RFC allows.
//!
//! `Framed` wraps an HTTP/1 connection's byte stream below hyper and follows the message
//! framing of what the client sends, as hyper does: each request head (parsed with
//! `httparse`, the parser hyper uses), then its body by `Content-Length` or chunked coding,
//! then the next head. The index of the first head that carries both headers goes to
//! `Verdicts`; the service counts the requests it receives, and the one with that index is
//! answered 400. Heads arrive in order and hyper parses a head only after it has been read
//! through this wrapper, so the verdict is always there before the request is.
//!
//! It fails open: bytes it cannot follow (HTTP/2's preface, an upgraded connection, a head
//! hyper rejects anyway) stop the tracking for the rest of the connection; it never
//! rejects on a guess. Cost: one `httparse` pass over each head, plus the chunk-size lines of
//! chunked bodies; body data is skipped by length, not scanned.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Header fields `httparse` parses into a stack array (uninitialised: nothing to clear per
/// head). A head with more (a listener's `max_headers` may allow up to 10,000) is read by a
/// plain line scan instead, so no number of fields hides a framing header.
const MAX_FIELDS: usize = 128;
/// Most bytes of a head kept while it arrives in pieces (beyond, hyper answers 431 first).
const MAX_HEAD: usize = 1 << 20;

/// What the tracker found, shared with the connection's service.
#[derive(Debug)]
pub struct Verdicts {
    /// Index (0-based, in arrival order) of the first request head with both
    /// `Content-Length` and `Transfer-Encoding`; `u64::MAX` when none.
    ambiguous: AtomicU64,
    /// Requests the service has taken.
    served: AtomicU64,
}

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts {
            ambiguous: AtomicU64::new(u64::MAX),
            served: AtomicU64::new(0),
        }
    }
}

impl Verdicts {
    /// Called once per request the service receives, in order: whether its head had both
    /// framing headers.
    pub fn next_is_ambiguous(&self) -> bool {
        let index = self.served.fetch_add(1, Ordering::Relaxed);
        index == self.ambiguous.load(Ordering::Acquire)
    }
}

/// Follows `reads` (one connection's bytes, as they arrive) and returns the index of the
/// first request head with both framing headers, and how many heads were seen. What the
/// listener does per connection, without the socket: for benchmarks (`benches/framing.rs`).
pub fn scan<'a>(reads: impl IntoIterator<Item = &'a [u8]>) -> (Option<u64>, u64) {
    let verdicts = Arc::new(Verdicts::default());
    let mut tracker = Tracker::new(verdicts.clone());
    for read in reads {
        tracker.feed(read);
    }
    let ambiguous = verdicts.ambiguous.load(Ordering::Relaxed);
    ((ambiguous != u64::MAX).then_some(ambiguous), tracker.heads)
}

/// Marks a request whose head had both `Content-Length` and `Transfer-Encoding`.
#[derive(Clone, Copy, Debug)]
pub struct Ambiguous;

#[derive(Debug)]
enum State {
    /// Reading a request head (bytes so far in `head` when it spans reads).
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// Chunked body: reading a chunk-size line (`size` so far, `ext`: in an extension).
    ChunkSize { size: u64, digits: u8, ext: bool },
    /// Chunk data, then its CRLF (`crlf` bytes of it still to come).
    ChunkData { left: u64, crlf: u8 },
    /// Trailer section after the last chunk: `line_len` bytes of the current line so far.
    Trailers { line_len: usize },
    /// Not following this connection any more.
    Off,
}

/// The framing tracker, fed with every byte the client sends.
#[derive(Debug)]
struct Tracker {
    state: State,
    head: Vec<u8>,
    heads: u64,
    verdicts: Arc<Verdicts>,
}

impl Tracker {
    fn new(verdicts: Arc<Verdicts>) -> Tracker {
        Tracker {
            state: State::Head,
            head: Vec::new(),
            heads: 0,
            verdicts,
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let used = match &mut self.state {
                State::Off => return,
                State::Head => self.head_bytes(bytes),
                State::Body(left) => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = State::Head;
                    }
                    n
                }
                State::ChunkSize { .. } | State::ChunkData { .. } | State::Trailers { .. } => {
                    self.chunked_bytes(bytes)
                }
            };
            bytes = bytes.get(used..).unwrap_or_default();
        }
    }

    /// Consumes head bytes; returns how many were used (all, while the head is incomplete).
    fn head_bytes(&mut self, bytes: &[u8]) -> usize {
        // Usually the whole head is in one read: parse it in place, no copy.
        let (buf, carried) = if self.head.is_empty() {
            (bytes, 0)
        } else {
            let carried = self.head.len();
            self.head.extend_from_slice(bytes);
            (&self.head[..], carried)
        };
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut request = httparse::Request::new(&mut []);
        let parsed = match request.parse_with_uninit_headers(buf, &mut fields) {
            Ok(httparse::Status::Complete(len)) => {
                let fields = request.headers.iter().map(|f| (f.name.as_bytes(), f.value));
                Ok(httparse::Status::Complete((
                    len,
                    framing(request.method.map(str::as_bytes), fields),
                )))
            }
            Ok(httparse::Status::Partial) => Ok(httparse::Status::Partial),
            Err(httparse::Error::TooManyHeaders) => Ok(many_fields(buf)),
            Err(err) => Err(err),
        };
        match parsed {
            Ok(httparse::Status::Complete((len, next))) => {
                let index = self.heads;
                self.heads += 1;
                self.head.clear();
                match next {
                    Next::Ambiguous => {
                        // The first one decides: hyper closes the connection after it.
                        let _ = self.verdicts.ambiguous.compare_exchange(
                            u64::MAX,
                            index,
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        );
                        self.state = State::Off;
                    }
                    Next::Length(0) => self.state = State::Head,
                    Next::Length(n) => self.state = State::Body(n),
                    Next::Chunked => {
                        self.state = State::ChunkSize {
                            size: 0,
                            digits: 0,
                            ext: false,
                        }
                    }
                    Next::Opaque => self.state = State::Off,
                }
                len.saturating_sub(carried)
            }
            Ok(httparse::Status::Partial) => {
                if self.head.is_empty() {
                    self.head.extend_from_slice(bytes);
                }
                if self.head.len() > MAX_HEAD {
                    self.off();
                }
                bytes.len()
            }
            Err(_) => {
                self.off();
                bytes.len()
            }
        }
    }

    /// Consumes chunked-body bytes (RFC 9112 §7.1).
    fn chunked_bytes(&mut self, bytes: &[u8]) -> usize {
        let mut used = 0;
        while let Some(&b) = bytes.get(used) {
            match &mut self.state {
                State::ChunkSize { size, digits, ext } => {
                    used += 1;
                    if b == b'\n' {
                        if *digits == 0 {
                            self.off();
                            return bytes.len();
                        }
                        self.state = if *size == 0 {
                            State::Trailers { line_len: 0 }
                        } else {
                            State::ChunkData {
                                left: *size,
                                crlf: 2,
                            }
                        };
                    } else if *ext || b == b'\r' {
                        // Extensions and the CR are skipped up to the LF.
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        *ext = true;
                    } else if let Some(d) = (b as char).to_digit(16) {
                        if *digits >= 16 {
                            self.off();
                            return bytes.len();
                        }
                        *size = (*size << 4) | u64::from(d);
                        *digits += 1;
                    } else {
                        self.off();
                        return bytes.len();
                    }
                }
                State::ChunkData { left, crlf } => {
                    if *left > 0 {
                        let rest = bytes.len() - used;
                        let n = usize::try_from(*left).unwrap_or(usize::MAX).min(rest);
                        *left -= n as u64;
                        used += n;
                    } else {
                        used += 1;
                        let want = if *crlf == 2 { b'\r' } else { b'\n' };
                        if b != want {
                            self.off();
                            return bytes.len();
                        }
                        *crlf -= 1;
                        if *crlf == 0 {
                            self.state = State::ChunkSize {
                                size: 0,
                                digits: 0,
                                ext: false,
                            };
                        }
                    }
                }
                State::Trailers { line_len } => {
                    used += 1;
                    if b == b'\n' {
                        if *line_len == 0 {
                            // The empty line: the message ends.
                            self.state = State::Head;
                            return used;
                        }
                        *line_len = 0;
                    } else if b != b'\r' {
                        *line_len += 1;
                        if *line_len > MAX_HEAD {
                            self.off();
                            return bytes.len();
                        }
                    }
                }
                _ => return used,
            }
        }
        used
    }

    fn off(&mut self) {
        self.state = State::Off;
        self.head = Vec::new();
    }
}

/// What follows a request head.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Length(u64),
    Chunked,
    /// Both `Content-Length` and `Transfer-Encoding`.
    Ambiguous,
    /// Not followed further: an upgrade or CONNECT (what follows may be another protocol),
    /// or framing hyper rejects itself (then it closes the connection).
    Opaque,
}

/// A head with more than `MAX_FIELDS` fields, line by line: its length and what follows,
/// or `Partial` until its empty line has arrived.
fn many_fields(buf: &[u8]) -> httparse::Status<(usize, Next)> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return httparse::Status::Partial;
    };
    let head = buf.get(..end).unwrap_or_default();
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .skip_while(|line| line.is_empty());
    let method = lines
        .next()
        .and_then(|line| line.split(|&b| b == b' ').next());
    let fields = lines.filter_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = (line.get(..colon)?, line.get(colon + 1..)?);
        Some((name, value.trim_ascii()))
    });
    httparse::Status::Complete((end + 4, framing(method, fields)))
}

/// What follows a head with this method and these fields.
fn framing<'a>(method: Option<&[u8]>, fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Next {
    let mut length: Option<u64> = None;
    let (mut content_length, mut transfer_encoding, mut chunked) = (false, false, false);
    let mut opaque = method == Some(b"CONNECT");
    for (name, value) in fields {
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length = true;
            match std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => opaque = true,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            // The final coding decides (RFC 9112 §6.3); hyper rejects anything else.
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            opaque = true;
        }
    }
    if content_length && transfer_encoding {
        Next::Ambiguous
    } else if opaque || (transfer_encoding && !chunked) {
        Next::Opaque
    } else if transfer_encoding {
        Next::Chunked
    } else {
        Next::Length(length.unwrap_or(0))
    }
}

/// A client connection's byte stream, with the framing tracker reading along.
pub struct Framed<S> {
    inner: S,
    tracker: Tracker,
}

impl<S> Framed<S> {
    pub fn new(inner: S, verdicts: Arc<Verdicts>) -> Framed<S> {
        Framed {
            inner,
            tracker: Tracker::new(verdicts),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Framed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            // HTTP/2's preface (`PRI * HTTP/2.0`) fails the head parse: not followed.
            this.tracker
                .feed(buf.filled().get(before..).unwrap_or_default());
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Framed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the ambiguous head's index and the
    /// heads seen.
    fn run(input: &[u8], step: usize) -> (Option<u64>, u64, bool) {
        let verdicts = Arc::new(Verdicts::default());
        let mut tracker = Tracker::new(verdicts.clone());
        for piece in input.chunks(step) {
            tracker.feed(piece);
        }
        let ambiguous = verdicts.ambiguous.load(Ordering::Relaxed);
        (
            (ambiguous != u64::MAX).then_some(ambiguous),
            tracker.heads,
            matches!(tracker.state, State::Off),
        )
    }

    fn every_split(input: &[u8]) -> Vec<(Option<u64>, u64, bool)> {
        (1..=input.len()).map(|step| run(input, step)).collect()
    }

    #[test]
    fn follows_lengths_and_chunks_across_any_split() {
        let input = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: t\r\n\r\n\
GET /d HTTP/1.1\r\nHost: x\r\n\r\n";
        for (step, got) in every_split(input).into_iter().enumerate() {
            assert_eq!(got, (None, 4, false), "step {}", step + 1);
        }
    }

    #[test]
    fn both_framing_headers_in_either_order_are_found_at_their_index() {
        for head in [
            "Content-Length: 4\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked\r\nContent-Length: 4",
            "transfer-encoding: gzip, chunked\r\ncontent-length: 0",
        ] {
            let input = format!(
                "GET /ok HTTP/1.1\r\nHost: x\r\n\r\nPOST /smuggle HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n0\r\n\r\nGET /hidden HTTP/1.1\r\n\r\n"
            );
            for got in every_split(input.as_bytes()) {
                assert_eq!(got, (Some(1), 2, true), "{head}");
            }
        }
    }

    #[test]
    fn a_body_that_looks_like_a_head_is_not_a_head() {
        let body = "GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let input = format!(
            "POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}GET /b HTTP/1.1\r\n\r\n",
            body.len()
        );
        assert_eq!(run(input.as_bytes(), 7), (None, 2, false));
        let chunked = format!(
            "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        );
        assert_eq!(run(chunked.as_bytes(), 3), (None, 1, false));
    }

    #[test]
    fn what_it_cannot_follow_turns_it_off_never_into_a_verdict() {
        for input in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"\x16\x03\x01\x02\x00",
        ] {
            let (ambiguous, _, off) = run(input, 4);
            assert_eq!((ambiguous, off), (None, true), "{input:?}");
        }
    }

    #[test]
    fn more_fields_than_the_parser_holds_still_show_both_framing_headers() {
        for at in [0, 100, 180] {
            let mut head = String::from("POST / HTTP/1.1\r\nHost: x\r\n");
            for i in 0..200 {
                if i == at {
                    head.push_str("Content-Length: 4\r\n");
                }
                head.push_str(&format!("x-filler-{i}: {i}\r\n"));
            }
            head.push_str("Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
            let input = format!("GET / HTTP/1.1\r\n\r\n{head}");
            for step in [13, 4096, input.len()] {
                assert_eq!(
                    run(input.as_bytes(), step),
                    (Some(1), 2, true),
                    "{at} {step}"
                );
            }
        }
        // Many fields, well framed: followed, no verdict.
        let mut head = String::from("POST / HTTP/1.1\r\n");
        for i in 0..300 {
            head.push_str(&format!("x-filler-{i}: {i}\r\n"));
        }
        head.push_str("Content-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n");
        assert_eq!(run(head.as_bytes(), 100), (None, 2, false));
    }

    proptest::proptest! {
        /// Any bytes, split anywhere: no panic, and at most one verdict.
        #[test]
        fn any_bytes_never_panic(input in proptest::collection::vec(proptest::num::u8::ANY, 0..512), step in 1usize..64) {
            let _ = run(&input, step);
        }

        /// Well-formed requests (length-framed, chunked, empty), in any number and split
        /// anywhere: followed to the end, never a verdict.
        #[test]
        fn well_formed_requests_never_get_a_verdict(
            bodies in proptest::collection::vec((proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0u8..3), 1..6),
            step in 1usize..80,
        ) {
            let mut input = Vec::new();
            for (body, kind) in &bodies {
                match kind {
                    0 => input.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
                    1 => {
                        input.extend_from_slice(format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
                        input.extend_from_slice(body);
                    }
                    _ => {
                        input.extend_from_slice(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
                        for chunk in body.chunks(7) {
                            input.extend_from_slice(format!("{:X}\r\n", chunk.len()).as_bytes());
                            input.extend_from_slice(chunk);
                            input.extend_from_slice(b"\r\n");
                        }
                        input.extend_from_slice(b"0\r\n\r\n");
                    }
                }
            }
            proptest::prop_assert_eq!(run(&input, step), (None, bodies.len() as u64, false));
        }
    }

    #[test]
    fn framing_of_a_head() {
        let parse = |head: &str| {
            let mut fields = [httparse::EMPTY_HEADER; 16];
            let mut request = httparse::Request::new(&mut fields);
            request.parse(head.as_bytes()).unwrap();
            let fields = request.headers.iter().map(|f| (f.name.as_bytes(), f.value));
            framing(request.method.map(str::as_bytes), fields)
        };
        assert_eq!(parse("GET / HTTP/1.1\r\n\r\n"), Next::Length(0));
        assert_eq!(
            parse("POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n"),
            Next::Length(7)
        );
        assert_eq!(
            parse("POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n"),
            Next::Opaque
        );
        assert_eq!(
            parse("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Next::Opaque
        );
        assert_eq!(
            parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Next::Chunked
        );
        assert_eq!(parse("CONNECT a:443 HTTP/1.1\r\n\r\n"), Next::Opaque);
    }
}
