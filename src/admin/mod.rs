//! The admin listener: health endpoints for orchestrators (`/live`, `/ready`), config
//! reload (`POST /reload` to reload, `GET /reload` for the last outcome) and the effective
//! config (`GET /config`, secrets masked). Separate from the proxy listeners and on loopback
//! by default.

mod config_view;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::config::Secret;
use crate::export::recent::RecentTraces;
use crate::metrics::Metrics;
use crate::proxy::Shared;
use crate::reload::{ReloadOutcome, Reloader, Trigger};

mod traces;

#[cfg(test)]
mod tests;

/// What the admin endpoints report.
#[derive(Debug)]
pub struct AdminState {
    /// Config loaded and every listener bound, and not draining.
    ready: AtomicBool,
    /// The routing snapshot serving now (its config and generation).
    pub shared: Arc<Shared>,
    /// Recent traces for `/traces`.
    pub recent: Arc<RecentTraces>,
    /// Set when the config came from a file.
    pub reloader: Arc<std::sync::OnceLock<Arc<Reloader>>>,
    pub metrics: Arc<Metrics>,
}

impl AdminState {
    pub fn new(
        shared: Arc<Shared>,
        recent: Arc<RecentTraces>,
        metrics: Arc<Metrics>,
        reloader: Arc<std::sync::OnceLock<Arc<Reloader>>>,
    ) -> AdminState {
        AdminState {
            ready: AtomicBool::new(false),
            shared,
            recent,
            reloader,
            metrics,
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Serves the admin endpoints until `stop` turns true.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let state = state.clone();
                    let builder = builder.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| handle(state.clone(), remote.ip(), req));
                        if let Err(err) = builder.serve_connection(TokioIo::new(stream), service).await {
                            debug!(client = %remote, error = %err, "admin connection error");
                        }
                    });
                }
                Err(err) => {
                    warn!(error = %err, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = crate::stopped(&mut stop) => return,
        }
    }
}

async fn handle(
    state: Arc<AdminState>,
    client: IpAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/reload" {
        if req.method() == Method::POST {
            let token = state.shared.load().config.admin.reload_token.clone();
            let authorization = req.headers().get(header::AUTHORIZATION);
            if let Err((status, error)) = reload_allowed(client, token.as_ref(), authorization) {
                warn!(%client, %error, "POST /reload refused");
                return Ok(json(status, &serde_json::json!({ "error": error })));
            }
        }
        return Ok(reload(&state, req.method()).await);
    }
    if req.uri().path() == "/traces" {
        return Ok(traces::handle(&state, req.method(), req.uri().query()));
    }
    if req.uri().path() == "/config" {
        return Ok(config(&state, req.method()));
    }
    if req.uri().path() == "/metrics" && req.method() == Method::GET {
        let mut response = Response::new(Full::new(Bytes::from(state.metrics.encode())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
        return Ok(response);
    }
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => (StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") if state.is_ready() => (StatusCode::OK, "ready\n"),
        (&Method::GET, "/ready") => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        (_, "/live" | "/ready") => (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

/// Who may `POST /reload`: with `[admin] reload_token` set, any client that sends
/// `Authorization: Bearer <token>` (and no one else, loopback included: a token is set so
/// that it is checked); without one, loopback clients only (other containers of a pod share
/// loopback, other hosts do not). Errors are (401 | 403, reason).
fn reload_allowed(
    client: IpAddr,
    token: Option<&Secret>,
    authorization: Option<&http::HeaderValue>,
) -> Result<(), (StatusCode, &'static str)> {
    let Some(token) = token else {
        if client.is_loopback() || client.to_canonical().is_loopback() {
            return Ok(());
        }
        return Err((
            StatusCode::FORBIDDEN,
            "POST /reload is allowed from loopback only unless [admin] reload_token is set",
        ));
    };
    let Some(given) = authorization.and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")) else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <reload_token>",
        ));
    };
    if constant_time_eq(given, token.0.as_bytes()) {
        Ok(())
    } else {
        Err((StatusCode::FORBIDDEN, "wrong reload token"))
    }
}

/// Compares without an early exit, so the time taken does not reveal how much of a guess
/// was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /reload`: reload now, answer with the outcome (200 applied or unchanged, 400
/// rejected, 409 restart required). `GET /reload`: generation, failure count, last outcome.
async fn reload(state: &AdminState, method: &Method) -> Response<Full<Bytes>> {
    let Some(reloader) = state.reloader.get() else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": "not started from a config file: nothing to reload"}),
        );
    };
    match *method {
        Method::POST => {
            let outcome = reloader.reload(Trigger::Admin).await;
            let status = match outcome {
                ReloadOutcome::Applied { .. } | ReloadOutcome::Unchanged { .. } => StatusCode::OK,
                ReloadOutcome::Rejected { .. } => StatusCode::BAD_REQUEST,
                ReloadOutcome::RestartRequired { .. } => StatusCode::CONFLICT,
            };
            json(status, &outcome)
        }
        Method::GET => json(StatusCode::OK, &reloader.status()),
        _ => json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "use GET or POST"}),
        ),
    }
}

/// `GET /config`: the config serving now, its generation, and the reload status.
fn config(state: &AdminState, method: &Method) -> Response<Full<Bytes>> {
    if method != Method::GET {
        let error = serde_json::json!({"error": "use GET"});
        return json(StatusCode::METHOD_NOT_ALLOWED, &error);
    }
    let snapshot = state.shared.load_full();
    let reload = state.reloader.get().map(|r| r.status());
    let body = config_view::body(snapshot.generation, &snapshot.config, reload);
    json(StatusCode::OK, &body)
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
