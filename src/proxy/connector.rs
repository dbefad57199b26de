//! The upstream connector: hyper-util's `HttpConnector`, then a TLS handshake for a TLS
//! upstream, with each connection tagged with the moment it was established, so a CLIENT span
//! can say whether its request got a new connection or a pooled one.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::metrics::ConnectMetrics;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// When an upstream connection was made; the client returns it with each response.
#[derive(Clone, Copy, Debug)]
pub struct ConnMeta {
    pub established: Instant,
}

/// A connection and its `ConnMeta`.
#[derive(Debug)]
pub struct Tagged {
    io: Io,
    meta: ConnMeta,
}

#[derive(Debug)]
enum Io {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

/// How a TLS upstream's connections are set up.
#[derive(Clone)]
pub struct TlsConnect {
    pub connector: tokio_rustls::TlsConnector,
    /// SNI and the name the certificate must carry; the endpoint's host when `None`.
    pub server_name: Option<ServerName<'static>>,
    /// Bound on the handshake (the upstream's `connect_timeout`).
    pub timeout: Duration,
}

impl std::fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnect")
            .field("server_name", &self.server_name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A TLS handshake with an upstream endpoint failed (`error.type` `tls`).
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {server_name} failed: {source}")]
pub struct TlsHandshakeError {
    pub server_name: String,
    pub source: io::Error,
}

#[derive(Clone, Debug)]
pub struct TaggingConnector {
    inner: HttpConnector,
    metrics: ConnectMetrics,
    tls: Option<Arc<TlsConnect>>,
}

impl TaggingConnector {
    pub fn new(inner: HttpConnector, metrics: ConnectMetrics, tls: Option<TlsConnect>) -> Self {
        TaggingConnector {
            inner,
            metrics,
            tls: tls.map(Arc::new),
        }
    }
}

impl tower::Service<Uri> for TaggingConnector {
    type Response = Tagged;
    type Error = BoxError;
    // Boxed: one allocation per new connection, not per request.
    type Future = Pin<Box<dyn Future<Output = Result<Tagged, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // The host, without IPv6 brackets, for SNI when no server_name is configured (only
        // a TLS upstream needs it: plain connections allocate nothing more than before).
        let host = self
            .tls
            .as_ref()
            .filter(|tls| tls.server_name.is_none())
            .and_then(|_| uri.host())
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned());
        let connecting = self.inner.call(uri);
        let metrics = self.metrics.clone();
        let tls = self.tls.clone();
        metrics.attempts.inc();
        Box::pin(async move {
            let io = connecting.await.inspect_err(|err| {
                metrics.failures.inc();
                if super::error::is_timeout(err) {
                    metrics.timeouts.inc();
                }
            })?;
            let io = match tls {
                None => Io::Plain(io),
                Some(tls) => {
                    let tls = handshake(&tls, host, io.into_inner())
                        .await
                        .inspect_err(|err| {
                            metrics.failures.inc();
                            if super::error::is_timeout(err.as_ref()) {
                                metrics.timeouts.inc();
                            }
                        })?;
                    Io::Tls(Box::new(TokioIo::new(tls)))
                }
            };
            Ok(Tagged {
                io,
                meta: ConnMeta {
                    established: Instant::now(),
                },
            })
        })
    }
}

async fn handshake(
    tls: &TlsConnect,
    host: Option<String>,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, BoxError> {
    let server_name = match (&tls.server_name, host) {
        (Some(name), _) => name.clone(),
        (None, Some(host)) => ServerName::try_from(host.clone()).map_err(|_| {
            let source = io::Error::new(io::ErrorKind::InvalidInput, "not a valid server name");
            TlsHandshakeError {
                server_name: host,
                source,
            }
        })?,
        (None, None) => {
            let source = io::Error::new(io::ErrorKind::InvalidInput, "no host to verify");
            let server_name = String::new();
            return Err(TlsHandshakeError {
                server_name,
                source,
            }
            .into());
        }
    };
    let name = server_name.to_str().into_owned();
    match tokio::time::timeout(tls.timeout, tls.connector.connect(server_name, tcp)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(TlsHandshakeError {
            server_name: name,
            source,
        }
        .into()),
        // An I/O timeout, as the TCP connect reports one: classified as connect_timeout.
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("TLS handshake with {name} timed out"),
        )
        .into()),
    }
}

impl Tagged {
    pub fn meta(&self) -> ConnMeta {
        self.meta
    }

    /// A plain TCP connection made now (tests of the HTTP/1.1 client).
    #[cfg(test)]
    pub fn plain(stream: TcpStream) -> Tagged {
        Tagged {
            io: Io::Plain(TokioIo::new(stream)),
            meta: ConnMeta {
                established: Instant::now(),
            },
        }
    }
}

/// Calls `$method` on whichever stream `$io` holds.
macro_rules! delegate {
    ($io:expr, $method:ident($($arg:expr),*)) => {
        match $io {
            Io::Plain(io) => Pin::new(io).$method($($arg),*),
            Io::Tls(io) => Pin::new(io.as_mut()).$method($($arg),*),
        }
    };
}

impl Read for Tagged {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(&mut self.get_mut().io, poll_read(cx, buf))
    }
}

impl Write for Tagged {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(&mut self.get_mut().io, poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(&mut self.get_mut().io, poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(&mut self.get_mut().io, poll_shutdown(cx))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(io) => io.is_write_vectored(),
            Io::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(&mut self.get_mut().io, poll_write_vectored(cx, bufs))
    }
}

/// The same stream through tokio's traits, for hoptrace's own HTTP/1.1 client (`h1`).
impl tokio::io::AsyncRead for Tagged {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => tokio::io::AsyncRead::poll_read(Pin::new(io.inner_mut()), cx, buf),
            Io::Tls(io) => {
                tokio::io::AsyncRead::poll_read(Pin::new(io.as_mut().inner_mut()), cx, buf)
            }
        }
    }
}

impl tokio::io::AsyncWrite for Tagged {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => tokio::io::AsyncWrite::poll_write(Pin::new(io.inner_mut()), cx, buf),
            Io::Tls(io) => {
                tokio::io::AsyncWrite::poll_write(Pin::new(io.as_mut().inner_mut()), cx, buf)
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => tokio::io::AsyncWrite::poll_flush(Pin::new(io.inner_mut()), cx),
            Io::Tls(io) => tokio::io::AsyncWrite::poll_flush(Pin::new(io.as_mut().inner_mut()), cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => tokio::io::AsyncWrite::poll_shutdown(Pin::new(io.inner_mut()), cx),
            Io::Tls(io) => {
                tokio::io::AsyncWrite::poll_shutdown(Pin::new(io.as_mut().inner_mut()), cx)
            }
        }
    }
}
