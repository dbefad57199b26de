//! Test harness: real hyper servers as upstreams, the real proxy started in-process from TOML
//! that goes through the production config parser, and real hyper clients. Everything binds
//! port 0 on loopback.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod fixtures;
pub mod otlp;
pub mod process;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = BoxBody<Bytes, BoxError>;

/// A real HTTP server (HTTP/1.1 and h2c on one port) running a handler.
pub struct TestServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve<F, Fut>(handler: F) -> TestServer
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    serve_maybe_tls(handler, None).await
}

/// Like [`serve`], but when `tls` is given every connection is a TLS handshake first
/// (connections whose handshake fails are dropped).
pub async fn serve_maybe_tls<F, Fut>(handler: F, tls: Option<TlsAcceptor>) -> TestServer
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_on(listener, handler, tls)
}

/// Like [`serve_maybe_tls`], on a socket the test bound (e.g. at the address of an endpoint
/// that was down).
pub fn serve_on<F, Fut>(listener: TcpListener, handler: F, tls: Option<TlsAcceptor>) -> TestServer
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let _ = match tls {
                    None => {
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await
                    }
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(stream).await else {
                            return;
                        };
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await
                    }
                };
            });
        }
    });
    TestServer { addr, task }
}

pub fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into()).map_err(|e| match e {}).boxed()
}

pub fn text(status: u16, body: &'static str) -> Response<TestBody> {
    Response::builder().status(status).body(full(body)).unwrap()
}

/// An upstream that answers with what it received, as JSON: method, uri, version, headers
/// (name → list of values), body, and the server's own `name`.
pub async fn echo_server(name: &'static str) -> TestServer {
    serve(move |req: Request<Incoming>| async move {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let mut headers = serde_json::Map::new();
        for key in parts.headers.keys() {
            let values: Vec<serde_json::Value> = parts
                .headers
                .get_all(key)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into())
                .collect();
            headers.insert(key.as_str().to_string(), values.into());
        }
        let echo = serde_json::json!({
            "server": name,
            "method": parts.method.as_str(),
            "uri": parts.uri.to_string(),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        Response::builder()
            .header("content-type", "application/json")
            .header("x-upstream", name)
            .body(full(echo.to_string()))
            .unwrap()
    })
    .await
}

/// An address on loopback that refuses connections for the rest of the test run: a socket
/// bound to it that never listens (a SYN gets a reset) and is kept open, so the port is not
/// handed to another test meanwhile. (A listener bound and dropped frees its port for the
/// next ephemeral bind: with tests in parallel, "refused" then sometimes reached another
/// test's server.)
pub fn refusing_addr() -> SocketAddr {
    let port = RefusingPort::new();
    let addr = port.addr();
    std::mem::forget(port);
    addr
}

/// A port that refuses connections until `listen` turns it, at the same address and with
/// no moment in between when another test could take it, into a listener (a server that
/// comes back).
pub struct RefusingPort(tokio::net::TcpSocket);

impl RefusingPort {
    pub fn new() -> RefusingPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        RefusingPort(socket)
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.local_addr().unwrap()
    }

    pub fn listen(self) -> tokio::net::TcpListener {
        self.0.listen(1024).unwrap()
    }
}

/// The proxy, started in-process from TOML through the production parser.
pub async fn start_proxy(toml: &str) -> hoptrace::app::Running {
    let config = match hoptrace::config::Config::from_toml_str(toml) {
        Ok(config) => config,
        Err(errors) => panic!("test config invalid:\n{errors}\n---\n{toml}"),
    };
    hoptrace::app::start(config).await.unwrap()
}

/// A config with one listener of `role` on port 0 and one catch-all route to an upstream at
/// `upstream` speaking `protocol`.
pub fn simple_config(role: &str, upstream: SocketAddr, protocol: &str) -> String {
    format!(
        r#"
[service]
name = "test"
[admin]
bind = "127.0.0.1:0"
[tracing]
exporter = "none"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
role = "{role}"
[[routes]]
listener = "main"
upstream = "app"
[upstreams.app]
endpoints = ["{upstream}"]
protocol = "{protocol}"
connect_timeout = "2s"
request_timeout = "10s"
"#
    )
}

pub type TestClient = Client<HttpConnector, TestBody>;

pub fn http1_client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn http2_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub async fn get(client: &TestClient, url: String) -> Response<Incoming> {
    client
        .request(Request::get(url).body(full("")).unwrap())
        .await
        .unwrap()
}

pub async fn body_string(response: Response<Incoming>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

pub async fn body_json(response: Response<Incoming>) -> serde_json::Value {
    let text = body_string(response).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Polls `condition` every 10 ms until it holds or `deadline` passes (then panics with `what`).
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(start.elapsed() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A shared slot a test uses to let an upstream handler continue (no sleeps to wait).
pub type Gate = Arc<tokio::sync::Notify>;

/// Sends raw bytes on a fresh connection and returns everything read until the server closes
/// or a complete response with a body of `content-length` bytes arrived.
pub async fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            if length.is_some_and(|len| body.len() >= len) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}
