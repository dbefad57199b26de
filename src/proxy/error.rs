//! Every way a proxied request can fail, and the one place where a failure becomes a status
//! code, a plain-text body and an `error.type` name.
//!
//! | error              | status | `error.type`       |
//! |--------------------|--------|--------------------|
//! | no route matched   | 404    | `no_route`         |
//! | CONNECT method     | 405    | `bad_request`      |
//! | malformed target   | 400    | `bad_request`      |
//! | both `Content-Length` and `Transfer-Encoding` | 400 | `bad_request` |
//! | retry after a connect failure, every endpoint in back-off | 503 | `no_healthy_upstream` |
//! | connect refused    | 502    | `connect_error`    |
//! | connect timed out  | 504    | `connect_timeout`  |
//! | TLS handshake with the upstream failed | 502 | `tls` |
//! | no response headers within `request_timeout` | 504 | `timeout` |
//! | reset / closed before response headers | 502 | `upstream_reset` |
//! | request body over `max_request_body` | 413 | `request_body_too_large` |
//! | client's body malformed or cut off before response headers | 400 | `bad_request` |
//!
//! Requests hyper rejects before they reach us get their status from hyper: malformed → 400,
//! header section too large → 431.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use super::body::ResponseBody;
use crate::config::Endpoint;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches")]
    NoRoute,
    #[error("CONNECT tunnels are not supported; send plain HTTP requests through this listener")]
    ConnectMethod,
    #[error("request target cannot be forwarded: {0}")]
    BadTarget(#[source] http::Error),
    #[error(
        "request has both Content-Length and Transfer-Encoding (a smuggling attempt or a broken client); not forwarded"
    )]
    AmbiguousFraming,
    #[error("upstream {upstream} has no endpoints")]
    NoEndpoint { upstream: Arc<str> },
    #[error("upstream {upstream} endpoint {endpoint}: connection failed: {}", source_chain(source.as_ref()))]
    Connect {
        upstream: Arc<str>,
        endpoint: Endpoint,
        source: BoxError,
    },
    #[error("upstream {upstream} endpoint {endpoint}: {}", source_chain(source.as_ref()))]
    Tls {
        upstream: Arc<str>,
        endpoint: Endpoint,
        source: BoxError,
    },
    #[error("upstream {upstream} endpoint {endpoint}: connect timed out after {timeout:?}")]
    ConnectTimeout {
        upstream: Arc<str>,
        endpoint: Endpoint,
        timeout: Duration,
    },
    #[error("upstream {upstream} endpoint {endpoint}: no response headers within {timeout:?}")]
    Timeout {
        upstream: Arc<str>,
        endpoint: Endpoint,
        timeout: Duration,
    },
    #[error("request body failed: {}", source_chain(.0.as_ref()))]
    BadRequestBody(BoxError),
    #[error("request body exceeds max_request_body ({max} bytes)")]
    BodyTooLarge { max: u64 },
    #[error("upstream {upstream} endpoint {endpoint}: failed before response headers: {}", source_chain(source.as_ref()))]
    Reset {
        upstream: Arc<str>,
        endpoint: Endpoint,
        source: BoxError,
    },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::ConnectMethod => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BadTarget(_)
            | ProxyError::AmbiguousFraming
            | ProxyError::BadRequestBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoEndpoint { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. } | ProxyError::Tls { .. } | ProxyError::Reset { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::ConnectTimeout { .. } | ProxyError::Timeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }

    /// The OpenTelemetry `error.type` value for this failure.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::ConnectMethod
            | ProxyError::BadTarget(_)
            | ProxyError::AmbiguousFraming
            | ProxyError::BadRequestBody(_) => "bad_request",
            ProxyError::BodyTooLarge { .. } => "request_body_too_large",
            ProxyError::NoEndpoint { .. } => "no_healthy_upstream",
            ProxyError::Connect { .. } => "connect_error",
            ProxyError::Tls { .. } => "tls",
            ProxyError::ConnectTimeout { .. } => "connect_timeout",
            ProxyError::Timeout { .. } => "timeout",
            ProxyError::Reset { .. } => "upstream_reset",
        }
    }

    /// Short, fixed text for the client: the details (addresses, causes) go to the log, not
    /// to whoever sent the request.
    fn body(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "hoptrace: no route for this request\n",
            ProxyError::ConnectMethod => "hoptrace: CONNECT is not supported\n",
            ProxyError::BadTarget(_) => "hoptrace: bad request target\n",
            ProxyError::AmbiguousFraming => {
                "hoptrace: both Content-Length and Transfer-Encoding; request not forwarded\n"
            }
            ProxyError::BadRequestBody(_) => "hoptrace: bad request body\n",
            ProxyError::BodyTooLarge { .. } => "hoptrace: request body too large\n",
            ProxyError::NoEndpoint { .. } => "hoptrace: no upstream endpoint available\n",
            ProxyError::Connect { .. } => "hoptrace: upstream connection failed\n",
            ProxyError::Tls { .. } => "hoptrace: upstream TLS handshake failed\n",
            ProxyError::ConnectTimeout { .. } => "hoptrace: upstream connect timed out\n",
            ProxyError::Timeout { .. } => "hoptrace: upstream timed out\n",
            ProxyError::Reset { .. } => "hoptrace: upstream closed the connection\n",
        }
    }

    /// The response hoptrace sends for this error. `x-hoptrace-error` carries `kind()` so
    /// that a proxy-made 502 can be told from one the app sent.
    pub fn to_response(&self) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::text(self.body()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert("x-hoptrace-error", HeaderValue::from_static(self.kind()));
        response
    }
}

/// "a: b: c" from an error and its sources, so a log line names the root cause
/// ("connection refused") and not only hyper-util's wrapper ("client error (Connect)").
fn source_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = e.source();
    }
    text
}

/// True when `error` (or a source) is an I/O timeout: how hyper-util's connector reports an
/// elapsed `connect_timeout`.
pub(super) fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        next = e.source();
    }
    false
}

/// True when `error` (or a source) is a TLS failure with an upstream: a failed handshake,
/// or a TLS alert after it (with TLS 1.3 a server that refuses the client certificate says
/// so only after the client considers the handshake done, on the first read).
pub(super) fn is_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<super::connector::TlsHandshakeError>() || e.is::<rustls::Error>() {
            return true;
        }
        // `io::Error::source` skips the error it wraps; look at it directly.
        let wrapped = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        if wrapped.is_some_and(|inner| inner.is::<rustls::Error>()) {
            return true;
        }
        next = e.source();
    }
    false
}
