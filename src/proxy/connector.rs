//! The upstream connector: hyper-util's `HttpConnector`, with each connection tagged with
//! the moment it was established, so a CLIENT span can say whether its request got a new
//! connection or a pooled one.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::metrics::ConnectMetrics;

/// Attached to every upstream connection (readable through `capture_connection`).
#[derive(Clone, Copy, Debug)]
pub struct ConnMeta {
    pub established: Instant,
}

/// A connection and its `ConnMeta`.
#[derive(Debug)]
pub struct Tagged {
    io: TokioIo<TcpStream>,
    meta: ConnMeta,
}

#[derive(Clone, Debug)]
pub struct TaggingConnector {
    inner: HttpConnector,
    metrics: ConnectMetrics,
}

impl TaggingConnector {
    pub fn new(inner: HttpConnector, metrics: ConnectMetrics) -> Self {
        TaggingConnector { inner, metrics }
    }
}

impl tower::Service<Uri> for TaggingConnector {
    type Response = Tagged;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    // Boxed: one allocation per new connection, not per request.
    type Future = Pin<Box<dyn Future<Output = Result<Tagged, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let metrics = self.metrics.clone();
        metrics.attempts.inc();
        Box::pin(async move {
            let io = connecting.await.inspect_err(|err| {
                metrics.failures.inc();
                if super::error::is_timeout(err) {
                    metrics.timeouts.inc();
                }
            })?;
            Ok(Tagged {
                io,
                meta: ConnMeta {
                    established: Instant::now(),
                },
            })
        })
    }
}

impl Connection for Tagged {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.meta)
    }
}

impl Read for Tagged {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for Tagged {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

/// The `ConnMeta` of the connection a request used, if the client captured one.
pub fn conn_meta(
    capture: &hyper_util::client::legacy::connect::CaptureConnection,
) -> Option<ConnMeta> {
    let connected = capture.connection_metadata();
    let connected = connected.as_ref()?;
    let mut extensions = http::Extensions::new();
    connected.get_extras(&mut extensions);
    extensions.get::<ConnMeta>().copied()
}
