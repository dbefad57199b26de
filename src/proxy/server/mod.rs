//! hoptrace's HTTP server side: a client connection, HTTP/1.1 or HTTP/2 (h2c prior
//! knowledge, or h2 by ALPN, told apart by the client's first bytes).
//!
//! HTTP/1.1 is our own (`conn`): the connection's task parses each head straight into an
//! `http::Request` sharing the read buffer (`head`), runs the request's handler in place,
//! reads the request body only when the handler asks for it (`body`), and writes the
//! response head and body in as few writes as it can. No second task, no channel, no
//! buffer held between requests. HTTP/2 goes to hyper's server.
//!
//! Refused heads (400, 431, 414) are answered here, logged once per connection (`log`).

mod body;
mod conn;
mod date;
mod head;
mod io;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

pub use self::body::ClientBody;
pub use self::head::{HeadError, Limits};
pub use self::io::{Io, OnUpgrade};
use crate::proxy::ResponseBody;

/// In the extensions of a request with both `Content-Length` and `Transfer-Encoding`: its
/// body was not read, and the request must be refused (`ProxyError::AmbiguousFraming`).
#[derive(Clone, Copy, Debug)]
pub struct Ambiguous;

/// A listener's connection settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Longest wait for a whole request head, from the connection's start or the end of
    /// the previous response (so also the idle timeout of a kept-alive connection).
    pub header_read_timeout: Duration,
    pub limits: Limits,
}

/// How a connection ended, for its log line.
#[derive(Debug)]
pub enum End {
    /// Closed by either side between requests, after a response, or drained.
    Done,
    /// Not one byte within `header_read_timeout`.
    Silent,
    /// Part of a head, not all of it, within `header_read_timeout`.
    HeadTimeout,
    /// The client closed its connection part-way through a head.
    HeadCut,
    /// A head refused and answered.
    Refused(HeadError),
    /// The client closed or failed while its request was handled or answered.
    ClientGone,
    /// The HTTP/2 connection failed.
    H2(hyper::Error),
}

/// Serves one client connection until it closes, `token` (the listener's drain) is
/// cancelled and the requests in flight are answered, or the client goes silent.
pub async fn serve_connection<I, F, Fut>(
    io: I,
    settings: &Settings,
    token: &CancellationToken,
    handler: F,
) -> End
where
    I: Io,
    F: Fn(Request<ClientBody>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    match conn::serve(io, settings, token, &handler).await {
        conn::Served::End(end) => end,
        // Boxed: hyper's connection is large, and most connections never need it.
        conn::Served::H2(io) => Box::pin(serve_h2(io, settings, token, handler)).await,
    }
}

async fn serve_h2<I, F, Fut>(
    io: io::Prefixed<I>,
    settings: &Settings,
    token: &CancellationToken,
    handler: F,
) -> End
where
    I: Io,
    F: Fn(Request<ClientBody>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let response = handler(req.map(ClientBody::H2));
        async move {
            let mut response = response.await;
            // hyper's HTTP/2 server writes the response's `HeaderMap` only.
            crate::proxy::fields_into_map(&mut response);
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.limits.max_bytes).unwrap_or(u32::MAX));
    let mut connection = pin!(builder.serve_connection(TokioIo::new(io), service));
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = token.cancelled() => {
            // GOAWAY: streams in flight finish, no new ones.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    match served {
        Ok(()) => End::Done,
        Err(err) => End::H2(err),
    }
}

/// Logs how a client connection ended: info for a refused or incomplete request head (the
/// client never got a request through, and only this line says why), debug otherwise.
pub fn log(listener: &str, client: SocketAddr, end: &End) {
    let (cause, error) = match end {
        End::Done => return,
        End::Silent => {
            let cause = "no request bytes within header_read_timeout; closed";
            debug!(listener = %listener, client = %client, cause, "silent connection closed");
            return;
        }
        End::ClientGone | End::HeadCut | End::H2(_) => {
            let error: &dyn std::fmt::Display = match end {
                End::H2(err) => err,
                End::HeadCut => &"client closed the connection within a request head",
                _ => &"client closed the connection during a request",
            };
            debug!(listener = %listener, client = %client, error = %error, "connection ended with an error");
            return;
        }
        End::HeadTimeout => (
            "request head incomplete after header_read_timeout; closed",
            "read header timeout".to_owned(),
        ),
        End::Refused(err) => {
            let cause = match err {
                HeadError::Malformed(_) => "malformed request head; answered 400",
                HeadError::TooLarge => "request head too large; answered 431",
                HeadError::UriTooLong => "request URI too long; answered 414",
            };
            (cause, err.to_string())
        }
    };
    info!(listener = %listener, client = %client, cause, error, "request head refused");
}
