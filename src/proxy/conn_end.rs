//! How a client connection ended, for the log: a request head that hyper rejected (and
//! answered itself) or that never arrived gets an info line naming the cause and the client;
//! anything else stays at debug.
//!
//! hyper answers a malformed HTTP/1.1 request head with 400 and an oversized one with 431 (or
//! 414 for a URI over 64 KiB) before any request reaches hoptrace's service, so the only trace
//! of it is the error the connection ends with. Its header read timer also runs while a
//! kept-alive connection waits for its next request, so the same "header timeout" error ends
//! an idle connection: [`ActivityIo`] tells the two apart (were any bytes received since the
//! last response was written?).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::{debug, info};

/// What a client connection has received so far.
#[derive(Debug, Default)]
pub(super) struct Activity {
    /// Bytes arrived since the last write: at a header timeout, part of a request head came
    /// in; otherwise the connection was idle.
    read_since_write: AtomicBool,
    /// Any byte arrived at all.
    ever_read: AtomicBool,
}

impl Activity {
    pub(super) fn partial_head(&self) -> bool {
        self.read_since_write.load(Ordering::Relaxed)
    }
}

/// A client connection's IO, recording its [`Activity`].
#[derive(Debug)]
pub(super) struct ActivityIo<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> ActivityIo<S> {
    /// Wraps `inner`; the activity is read while and after the connection is served.
    pub(super) fn new(inner: S) -> (Self, Arc<Activity>) {
        let activity = Arc::new(Activity::default());
        let io = Self {
            inner,
            activity: activity.clone(),
        };
        (io, activity)
    }
}

/// Serves `connection`, but drops it (`None`) if not one byte arrived within `timeout`.
/// hyper's header read timer starts only after hyper-util's auto builder has read the first
/// bytes (to tell HTTP/1.1 from the h2c preface), so without this a client that connects and
/// sends nothing would hold its connection (and a `max_connections` slot) for ever.
/// The connection is pinned by the caller, so its (large) future is stored once.
pub(super) async fn first_byte_within<F: Future>(
    timeout: Duration,
    activity: &Activity,
    mut connection: Pin<&mut F>,
) -> Option<F::Output> {
    tokio::select! {
        served = connection.as_mut() => Some(served),
        () = tokio::time::sleep(timeout) => {
            if activity.ever_read.load(Ordering::Relaxed) {
                Some(connection.await)
            } else {
                None
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ActivityIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity
                .read_since_write
                .store(true, Ordering::Relaxed);
            self.activity.ever_read.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ActivityIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity
                .read_since_write
                .store(false, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity
                .read_since_write
                .store(false, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why a request head was refused, and what the client got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HeadError {
    /// 400 from hyper: bad method, URI, version or header syntax.
    Malformed,
    /// 431 from hyper: over `max_header_bytes` or `max_headers`.
    TooLarge,
    /// 414 from hyper: a request target over 64 KiB.
    UriTooLong,
    /// Part of a head arrived but not all of it within `header_read_timeout`: closed, no
    /// response.
    Timeout,
}

impl HeadError {
    /// What the log line says.
    fn cause(self) -> &'static str {
        match self {
            Self::Malformed => "malformed request head; answered 400",
            Self::TooLarge => "request head too large; answered 431",
            Self::UriTooLong => "request URI too long; answered 414",
            Self::Timeout => "request head incomplete after header_read_timeout; closed",
        }
    }

    /// The request-head error among `err` and its sources, if that is how the connection
    /// ended. `partial_head`: bytes arrived since the last response (see [`ActivityIo`]).
    fn of(err: &(dyn std::error::Error + 'static), partial_head: bool) -> Option<Self> {
        let mut source = Some(err);
        while let Some(e) = source {
            if let Some(e) = e.downcast_ref::<hyper::Error>() {
                return Self::of_hyper(e, partial_head);
            }
            source = e.source();
        }
        None
    }

    fn of_hyper(e: &hyper::Error, partial_head: bool) -> Option<Self> {
        if e.is_parse_too_large() {
            // The two kinds behind `is_parse_too_large` differ only in their text.
            return Some(if e.to_string().contains("URI") {
                Self::UriTooLong
            } else {
                Self::TooLarge
            });
        }
        if e.is_parse() {
            return Some(Self::Malformed);
        }
        // On an idle kept-alive connection the header timer firing is its idle timeout.
        (e.is_timeout() && partial_head).then_some(Self::Timeout)
    }
}

/// How serving a connection ended: `None` when it was dropped for sending nothing (see
/// [`first_byte_within`]).
pub(super) type Served = Option<Result<(), Box<dyn std::error::Error + Send + Sync>>>;

/// Logs how a client connection ended: info for a refused or incomplete request head, debug
/// for anything else (the client went away, an idle or silent connection timed out).
pub(super) fn log(listener: &str, client: SocketAddr, served: Served, activity: &Activity) {
    let err = match served {
        Some(Ok(())) => return,
        Some(Err(err)) => err,
        None => {
            let cause = "no request bytes within header_read_timeout; closed";
            debug!(listener = %listener, client = %client, cause, "silent connection closed");
            return;
        }
    };
    match HeadError::of(&*err, activity.partial_head()) {
        Some(head) => info!(
            listener = %listener,
            client = %client,
            cause = head.cause(),
            error = %err,
            "request head refused"
        ),
        None => {
            debug!(listener = %listener, client = %client, error = %err, "connection ended with an error")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_read_sets_the_flag_and_a_write_clears_it() {
        let (mut client, server) = tokio::io::duplex(64);
        let (mut io, activity) = ActivityIo::new(server);
        assert!(!activity.partial_head());
        client.write_all(b"GET").await.unwrap();
        let mut buf = [0u8; 3];
        io.read_exact(&mut buf).await.unwrap();
        assert!(activity.partial_head());
        io.write_all(b"HTTP/1.1 200 OK").await.unwrap();
        assert!(!activity.partial_head());
        assert!(activity.ever_read.load(Ordering::Relaxed));
    }
}
