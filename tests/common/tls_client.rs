//! Test clients for TLS: one connection speaking what ALPN chose, and readers for the admin
//! endpoints (`/metrics` values, `/traces` spans).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::common::*;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// One client connection over TLS, speaking what ALPN chose.
pub struct TlsConn {
    pub alpn: Option<Vec<u8>>,
    /// The server's leaf certificate, DER.
    pub peer: Vec<u8>,
    sender: Sender,
}

pub enum Sender {
    H1(hyper::client::conn::http1::SendRequest<TestBody>),
    H2(hyper::client::conn::http2::SendRequest<TestBody>),
}

pub async fn connect(addr: SocketAddr, config: rustls::ClientConfig) -> Result<TlsConn, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").unwrap();
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, session) = stream.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let peer = session.peer_certificates().unwrap()[0].to_vec();
    let io = TokioIo::new(stream);
    let sender = if alpn.as_deref() == Some(b"h2") {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Sender::H2(sender)
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Sender::H1(sender)
    };
    Ok(TlsConn { alpn, peer, sender })
}

impl TlsConn {
    pub async fn get(&mut self, path: &str) -> Result<Response<Incoming>, String> {
        let request = |version| {
            Request::get(format!("https://localhost{path}"))
                .version(version)
                .header("host", "localhost")
                .body(full(""))
                .unwrap()
        };
        let sent = match &mut self.sender {
            Sender::H1(s) => {
                // Origin form for HTTP/1.1.
                let mut req = request(http::Version::HTTP_11);
                *req.uri_mut() = path.parse().unwrap();
                s.send_request(req).await
            }
            Sender::H2(s) => s.send_request(request(http::Version::HTTP_2)).await,
        };
        sent.map_err(|e| format!("{e:?}"))
    }
}

/// Connects, sends `GET path` and reads the body: `Err` if the handshake or request failed.
pub async fn get_over_tls(
    addr: SocketAddr,
    config: rustls::ClientConfig,
    path: &str,
) -> Result<(StatusCode, String), String> {
    let mut conn = connect(addr, config).await?;
    let response = conn.get(path).await?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

/// A counter's value from the admin `/metrics` text (0 when the series is absent).
pub async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let text = body_string(get(&http1_client(), format!("http://{admin}/metrics")).await).await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The spans `/traces` holds, flattened, once there are at least `count` (spans are recorded
/// when their response body ends, just after the client has it).
pub async fn recorded_spans(admin: SocketAddr, count: usize) -> Vec<serde_json::Value> {
    let fetch = || async {
        let traces = body_json(get(&http1_client(), format!("http://{admin}/traces")).await).await;
        traces["traces"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["spans"].as_array().unwrap().clone())
            .collect::<Vec<_>>()
    };
    wait_until("spans in /traces", DEADLINE, || async {
        fetch().await.len() >= count
    })
    .await;
    fetch().await
}

pub fn span_with<'a>(
    spans: &'a [serde_json::Value],
    kind: &str,
    key: &str,
    value: &str,
) -> &'a serde_json::Value {
    spans
        .iter()
        .find(|s| s["kind"] == kind && s["attributes"][key] == value)
        .unwrap_or_else(|| panic!("no {kind} span with {key} = {value}: {spans:#?}"))
}

/// The path of `program` if it is on `PATH`.
pub fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
        .ok_or(())
}
