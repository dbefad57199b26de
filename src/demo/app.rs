//! The FizzBuzz apps of `hoptrace demo` and `hoptrace demo-app`: three plain HTTP/1.1 handlers
//! that know nothing of tracing and forward no trace header (hoptrace's stitching joins
//! their calls to the requests that caused them). `hub` answers `GET /fizzbuzz/{n}` by calling `fizzer`
//! (`GET /fizz/{n}`: "Fizz" for multiples of 3) and `buzzer` (`GET /buzz/{n}`: "Buzz" for
//! multiples of 5; slow, 20 to 50 ms, for multiples of 7) at the same time and combining the
//! answers. Every answer carries `server-timing: app;dur=<ms>`, the app's own handling time,
//! which the sidecars record so that the demo can tell the app's time from hoptrace's.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Hub,
    Fizzer,
    Buzzer,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Hub => "hub",
            Role::Fizzer => "fizzer",
            Role::Buzzer => "buzzer",
        }
    }
}

/// Where the hub finds its two dependencies.
#[derive(Clone, Debug)]
pub struct Dependencies {
    /// Base URLs, e.g. `http://fizzer/`: the app's view, not an address.
    pub fizzer: Uri,
    pub buzzer: Uri,
    /// `host:port` of the HTTP proxy every call goes through (the sidecar's outbound
    /// listener, as `HTTP_PROXY` names it); `None` connects to the URL's host directly.
    pub proxy: Option<String>,
}

/// One running app.
pub struct App {
    role: Role,
    deps: Option<(Dependencies, Client<ProxyConnector, Empty<Bytes>>)>,
}

/// How slow buzzer is for `n`: 20 to 50 ms for multiples of 7, else nothing.
pub fn buzzer_delay(n: u64) -> Duration {
    if n.is_multiple_of(7) {
        Duration::from_millis(20 + (n * 13) % 31)
    } else {
        Duration::ZERO
    }
}

/// What the hub answers for `n`.
pub fn fizzbuzz(n: u64) -> String {
    match (n.is_multiple_of(3), n.is_multiple_of(5)) {
        (true, true) => "FizzBuzz".into(),
        (true, false) => "Fizz".into(),
        (false, true) => "Buzz".into(),
        (false, false) => n.to_string(),
    }
}

impl App {
    /// `deps` is used by the hub only.
    pub fn new(role: Role, deps: Dependencies) -> App {
        let deps = (role == Role::Hub).then(|| {
            let connector = ProxyConnector {
                proxy: deps.proxy.clone(),
            };
            let client = Client::builder(TokioExecutor::new()).build(connector);
            (deps, client)
        });
        App { role, deps }
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let (status, body) = self.answer(&request).await;
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        let timing = format!("app;dur={:.3}", started.elapsed().as_secs_f64() * 1e3);
        if let Ok(value) = HeaderValue::from_str(&timing) {
            response.headers_mut().insert("server-timing", value);
        }
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("text/plain"));
        response
    }

    async fn answer(&self, request: &Request<Incoming>) -> (StatusCode, String) {
        let path = request.uri().path();
        let prefix = match self.role {
            Role::Hub => "/fizzbuzz/",
            Role::Fizzer => "/fizz/",
            Role::Buzzer => "/buzz/",
        };
        let Some(n) = path
            .strip_prefix(prefix)
            .and_then(|n| n.parse::<u64>().ok())
        else {
            let usage = format!("{}: try GET {prefix}15\n", self.role.name());
            return (StatusCode::NOT_FOUND, usage);
        };
        match self.role {
            Role::Fizzer => (StatusCode::OK, if n % 3 == 0 { "Fizz" } else { "" }.into()),
            Role::Buzzer => {
                tokio::time::sleep(buzzer_delay(n)).await;
                (StatusCode::OK, if n % 5 == 0 { "Buzz" } else { "" }.into())
            }
            Role::Hub => self.combine(n).await,
        }
    }

    /// Calls fizzer and buzzer at the same time and combines their answers.
    async fn combine(&self, n: u64) -> (StatusCode, String) {
        let Some((deps, client)) = &self.deps else {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "no dependencies\n".into(),
            );
        };
        let (fizz_path, buzz_path) = (format!("fizz/{n}"), format!("buzz/{n}"));
        let (fizz, buzz) = tokio::join!(
            call(client, &deps.fizzer, &fizz_path),
            call(client, &deps.buzzer, &buzz_path),
        );
        match (fizz, buzz) {
            (Ok(fizz), Ok(buzz)) => {
                let word = fizz + &buzz;
                let answer = if word.is_empty() { n.to_string() } else { word };
                (StatusCode::OK, answer + "\n")
            }
            (Err(err), _) | (_, Err(err)) => (StatusCode::BAD_GATEWAY, err + "\n"),
        }
    }
}

/// `GET {base}{path}`, with no header of the request being answered; the body on 200, else
/// an error naming the dependency.
async fn call(
    client: &Client<ProxyConnector, Empty<Bytes>>,
    base: &Uri,
    path: &str,
) -> Result<String, String> {
    let url = format!("{}/{path}", base.to_string().trim_end_matches('/'));
    let request = Request::get(&url)
        .body(Empty::new())
        .map_err(|err| format!("{url}: {err}"))?;
    let response = client
        .request(request)
        .await
        .map_err(|err| format!("{url}: {err}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| format!("{url}: {err}"))?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!("{url}: status {status}"));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Serves `app` on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, app: Arc<App>, mut stop: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(%err, "demo app: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::stopped(&mut stop) => return,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Connects every request to the HTTP proxy when there is one (and marks the connection as
/// proxied, so the client sends absolute-form targets, `GET http://fizzer/fizz/3`, as any
/// `HTTP_PROXY` client does), else to the URL's own host.
#[derive(Clone, Debug)]
pub struct ProxyConnector {
    proxy: Option<String>,
}

impl tower::Service<Uri> for ProxyConnector {
    type Response = ProxyStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<ProxyStream>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let proxied = self.proxy.is_some();
        let target = match &self.proxy {
            Some(proxy) => proxy.clone(),
            None => format!(
                "{}:{}",
                uri.host().unwrap_or_default(),
                uri.port_u16().unwrap_or(80)
            ),
        };
        Box::pin(async move {
            let stream = TcpStream::connect(&target)
                .await
                .map_err(|err| io::Error::new(err.kind(), format!("{target}: {err}")))?;
            stream.set_nodelay(true)?;
            Ok(ProxyStream {
                io: TokioIo::new(stream),
                proxied,
            })
        })
    }
}

/// A TCP connection that knows whether it goes to a proxy.
pub struct ProxyStream {
    io: TokioIo<TcpStream>,
    proxied: bool,
}

impl Connection for ProxyStream {
    fn connected(&self) -> Connected {
        Connected::new().proxy(self.proxied)
    }
}

impl hyper::rt::Read for ProxyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ProxyStream {
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
}

/// `http://host:port` or `host:port` (what `HTTP_PROXY` may hold) → `host:port`.
pub fn proxy_authority(proxy: &str) -> Result<String, String> {
    let uri: Uri = proxy
        .parse()
        .map_err(|err| format!("HTTP_PROXY {proxy:?}: {err}"))?;
    if uri.scheme_str().is_some_and(|s| s != "http") {
        return Err(format!(
            "HTTP_PROXY {proxy:?}: only http:// proxies are supported"
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("HTTP_PROXY {proxy:?}: no host"))?;
    let port = authority.port_u16().unwrap_or(80);
    Ok(format!("{}:{port}", authority.host()))
}

/// The address an app listens on, for logs.
pub fn describe(role: Role, addr: SocketAddr) -> String {
    format!("{} app on http://{addr}", role.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_delays() {
        assert_eq!(fizzbuzz(15), "FizzBuzz");
        assert_eq!(fizzbuzz(9), "Fizz");
        assert_eq!(fizzbuzz(10), "Buzz");
        assert_eq!(fizzbuzz(7), "7");
        for n in 0..200 {
            let delay = buzzer_delay(n);
            if n.is_multiple_of(7) {
                assert!((20..=50).contains(&delay.as_millis()), "{n}: {delay:?}");
            } else {
                assert_eq!(delay, Duration::ZERO);
            }
        }
    }

    #[test]
    fn proxy_forms() {
        assert_eq!(
            proxy_authority("http://127.0.0.1:4140").unwrap(),
            "127.0.0.1:4140"
        );
        assert_eq!(proxy_authority("http://sidecar/").unwrap(), "sidecar:80");
        assert_eq!(proxy_authority("localhost:4140").unwrap(), "localhost:4140");
        assert!(proxy_authority("https://x:1").is_err());
    }
}
