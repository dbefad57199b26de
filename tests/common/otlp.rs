//! A real OTLP trace receiver for tests: an OTLP/gRPC server (tonic, the official generated
//! `TraceService`) and an OTLP/HTTP protobuf server (hyper, `POST /v1/traces`), both on
//! 127.0.0.1:0. Every span received is decoded from the wire protobuf into a flat
//! [`ReceivedSpan`]. Failures and partial success can be injected to test exporter behaviour.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;

use super::{TestBody, TestServer, full, serve_maybe_tls};

/// How the next requests fail (see [`Receiver::set_failures`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Retryable: gRPC `UNAVAILABLE` / HTTP 503 with `Retry-After: 0`.
    Unavailable,
    /// Not retryable: gRPC `INVALID_ARGUMENT` / HTTP 400.
    Internal,
    /// HTTP: status `http`, with `Retry-After: {retry_after}` (seconds) when given. gRPC:
    /// `UNAVAILABLE`, with a `google.rpc.RetryInfo` detail of `retry_after` seconds when
    /// given (the gRPC form of Retry-After).
    Status { http: u16, retry_after: Option<u64> },
}

/// One span as received, decoded from the wire protobuf (official opentelemetry-proto types).
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// Lowercase hex, "" when empty.
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    /// proto SpanKind: 1 INTERNAL, 2 SERVER, 3 CLIENT, 4 PRODUCER, 5 CONSUMER.
    pub kind: i32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// string/int/bool/double → JSON (arrays → JSON arrays, kvlists → objects, bytes → hex).
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub status_message: String,
    /// (name, time_unix_nano, attributes)
    pub events: Vec<(String, u64, BTreeMap<String, serde_json::Value>)>,
    /// (trace_id, span_id), lowercase hex.
    pub links: Vec<(String, String)>,
    /// Each link's attributes, in the order of `links`.
    pub link_attributes: Vec<BTreeMap<String, serde_json::Value>>,
    pub resource: BTreeMap<String, serde_json::Value>,
    pub scope_name: String,
    /// "grpc" | "http"
    pub transport: &'static str,
    pub trace_state: String,
}

impl ReceivedSpan {
    pub fn attr_str(&self, k: &str) -> Option<&str> {
        self.attributes.get(k).and_then(|v| v.as_str())
    }

    pub fn attr_i64(&self, k: &str) -> Option<i64> {
        self.attributes.get(k).and_then(|v| v.as_i64())
    }

    /// The resource's `service.name`, if any.
    pub fn service_name(&self) -> Option<&str> {
        self.resource.get("service.name").and_then(|v| v.as_str())
    }
}

/// `google.rpc.Status`, the body OTLP/HTTP servers send with an error status.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Default)]
struct State {
    spans: Mutex<Vec<ReceivedSpan>>,
    requests: AtomicUsize,
    failed: AtomicUsize,
    failures: Mutex<Option<(usize, Failure)>>,
    partial: Mutex<Option<(i64, String)>>,
    headers: Mutex<Vec<HeaderMap>>,
    /// Every decoded export request: when it arrived, and whether it was failed on purpose.
    arrivals: Mutex<Vec<(Instant, bool)>>,
    /// Every decoded export request's `content-encoding` (HTTP) / `grpc-encoding` (gRPC).
    encodings: Mutex<Vec<(&'static str, Option<String>)>>,
    /// gRPC: no request is answered until this many have arrived (`hold_answers`).
    hold_until: AtomicUsize,
    arrived: AtomicUsize,
    released: tokio::sync::Notify,
}

enum Outcome {
    Ok(ExportTraceServiceResponse),
    Fail(Failure),
}

impl State {
    /// Records the headers, then either consumes an injected failure or accepts the request.
    fn handle(
        &self,
        headers: HeaderMap,
        request: ExportTraceServiceRequest,
        transport: &'static str,
    ) -> Outcome {
        let arrived = Instant::now();
        let encoding = match transport {
            "grpc" => "grpc-encoding",
            _ => "content-encoding",
        };
        let encoding = headers
            .get(encoding)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        self.encodings.lock().unwrap().push((transport, encoding));
        self.headers.lock().unwrap().push(headers);
        if let Some(failure) = self.take_failure() {
            self.arrivals.lock().unwrap().push((arrived, true));
            return Outcome::Fail(failure);
        }
        self.arrivals.lock().unwrap().push((arrived, false));
        self.spans
            .lock()
            .unwrap()
            .extend(flatten(&request, transport));
        self.requests.fetch_add(1, Ordering::SeqCst);
        let partial_success = self
            .partial
            .lock()
            .unwrap()
            .as_ref()
            .map(|(rejected, message)| ExportTracePartialSuccess {
                rejected_spans: *rejected,
                error_message: message.clone(),
            });
        Outcome::Ok(ExportTraceServiceResponse { partial_success })
    }

    fn take_failure(&self) -> Option<Failure> {
        let mut failures = self.failures.lock().unwrap();
        match *failures {
            Some((n, mode)) if n > 0 => {
                *failures = if n == 1 { None } else { Some((n - 1, mode)) };
                self.failed.fetch_add(1, Ordering::SeqCst);
                Some(mode)
            }
            _ => None,
        }
    }
}

/// The running receiver; both servers stop when it is dropped.
pub struct Receiver {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Whether both servers speak TLS (see [`Receiver::start_tls`]).
    tls: bool,
    state: Arc<State>,
    grpc_task: JoinHandle<()>,
    _http_server: TestServer,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.grpc_task.abort();
    }
}

struct Grpc(Arc<State>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let (metadata, _, message) = request.into_parts();
        let arrived = self.0.arrived.fetch_add(1, Ordering::SeqCst) + 1;
        if arrived >= self.0.hold_until.load(Ordering::SeqCst) {
            self.0.released.notify_waiters();
        } else {
            let released = self.0.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            // Another request may have arrived between the count and the registration.
            if self.0.arrived.load(Ordering::SeqCst) < self.0.hold_until.load(Ordering::SeqCst) {
                released.await;
            }
        }
        match self.0.handle(metadata.into_headers(), message, "grpc") {
            Outcome::Ok(response) => Ok(tonic::Response::new(response)),
            Outcome::Fail(Failure::Unavailable) => {
                Err(tonic::Status::unavailable("injected failure"))
            }
            Outcome::Fail(Failure::Internal) => {
                Err(tonic::Status::invalid_argument("injected failure"))
            }
            Outcome::Fail(Failure::Status { retry_after, .. }) => {
                use tonic_types::{ErrorDetails, StatusExt};
                let message = "injected failure";
                Err(match retry_after {
                    None => tonic::Status::unavailable(message),
                    Some(secs) => tonic::Status::with_error_details(
                        tonic::Code::Unavailable,
                        message,
                        ErrorDetails::with_retry_info(Some(Duration::from_secs(secs))),
                    ),
                })
            }
        }
    }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

impl Receiver {
    /// A plain-text receiver: `http://127.0.0.1:PORT` URLs.
    pub async fn start() -> Receiver {
        Receiver::start_with(None).await
    }

    /// A receiver whose two servers speak TLS with this certificate and key (PEM);
    /// its URLs are `https://localhost:PORT`.
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Receiver {
        Receiver::start_with(Some((cert_pem, key_pem))).await
    }

    /// Like [`Receiver::start_tls`], and both servers require a client certificate signed by
    /// `client_ca_pem` (a client without one fails the handshake).
    pub async fn start_mtls(cert_pem: &str, key_pem: &str, client_ca_pem: &str) -> Receiver {
        Receiver::start_full(Some((cert_pem, key_pem)), Some(client_ca_pem), any_port()).await
    }

    /// A plain-text receiver whose gRPC server listens on `grpc_addr` (e.g. where a collector
    /// that was down used to be).
    pub async fn start_at(grpc_addr: SocketAddr) -> Receiver {
        Receiver::start_full(None, None, grpc_addr).await
    }

    /// A plain-text receiver whose gRPC server takes `listener`.
    pub async fn start_on(listener: TcpListener) -> Receiver {
        Receiver::start_listening(None, None, listener).await
    }

    async fn start_with(tls: Option<(&str, &str)>) -> Receiver {
        Receiver::start_full(tls, None, any_port()).await
    }

    async fn start_full(
        tls: Option<(&str, &str)>,
        client_ca: Option<&str>,
        grpc_addr: SocketAddr,
    ) -> Receiver {
        let listener = TcpListener::bind(grpc_addr).await.unwrap();
        Receiver::start_listening(tls, client_ca, listener).await
    }

    async fn start_listening(
        tls: Option<(&str, &str)>,
        client_ca: Option<&str>,
        listener: TcpListener,
    ) -> Receiver {
        let state = Arc::new(State::default());
        let grpc_addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(Grpc(state.clone()))
            .accept_compressed(CompressionEncoding::Gzip);
        let mut server = tonic::transport::Server::builder();
        if let Some((cert, key)) = tls {
            let identity = tonic::transport::Identity::from_pem(cert, key);
            let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
            if let Some(ca) = client_ca {
                config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
            }
            server = server.tls_config(config).unwrap();
        }
        let grpc_task = tokio::spawn(async move {
            server
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
                .unwrap();
        });

        let http_state = state.clone();
        let http_server = serve_maybe_tls(
            move |req: Request<Incoming>| {
                let state = http_state.clone();
                async move { http_export(&state, req).await }
            },
            tls.map(|(cert, key)| tls_acceptor(cert, key, client_ca)),
        )
        .await;

        Receiver {
            grpc_addr,
            http_addr: http_server.addr,
            tls: tls.is_some(),
            state,
            grpc_task,
            _http_server: http_server,
        }
    }

    /// Export requests accepted (injected failures excluded).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Every span received so far, flattened, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.state.spans.lock().unwrap().clone()
    }

    /// Forgets the spans received so far (to look at the next request's alone).
    pub fn clear(&self) {
        self.state.spans.lock().unwrap().clear();
    }

    /// Polls until at least `n` spans arrived; panics after 20 s with what it has.
    pub async fn wait_for_spans(&self, n: usize) -> Vec<ReceivedSpan> {
        let deadline = Duration::from_secs(20);
        let start = Instant::now();
        loop {
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            if start.elapsed() > deadline {
                panic!(
                    "timed out waiting for {n} spans; got {} after {} requests ({} failed): {spans:#?}",
                    spans.len(),
                    self.requests(),
                    self.failed_requests()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The next `n` requests fail with `mode` (replaces any failures still pending).
    pub fn set_failures(&self, n: usize, mode: Failure) {
        *self.state.failures.lock().unwrap() = Some((n, mode));
    }

    /// Accepted requests are answered with `partial_success` set to these values.
    /// gRPC: holds every answer until `n` export requests have arrived, so that only an
    /// exporter with `n` requests in flight gets any answer.
    pub fn hold_answers(&self, n: usize) {
        self.state.hold_until.store(n, Ordering::SeqCst);
    }

    /// gRPC export requests that arrived, answered or held.
    pub fn arrived_requests(&self) -> usize {
        self.state.arrived.load(Ordering::SeqCst)
    }

    pub fn set_partial_success(&self, rejected: i64, message: &str) {
        *self.state.partial.lock().unwrap() = Some((rejected, message.to_string()));
    }

    /// Requests answered with an error (injected failures, and undecodable HTTP requests).
    pub fn failed_requests(&self) -> usize {
        self.state.failed.load(Ordering::SeqCst)
    }

    /// When each decoded export request arrived, and whether it was failed on purpose, in
    /// arrival order.
    pub fn arrivals(&self) -> Vec<(Instant, bool)> {
        self.state.arrivals.lock().unwrap().clone()
    }

    /// Each decoded export request's transport and encoding: `content-encoding` (HTTP) or
    /// `grpc-encoding` (gRPC), `None` when the request had none.
    pub fn encodings(&self) -> Vec<(&'static str, Option<String>)> {
        self.state.encodings.lock().unwrap().clone()
    }

    /// The HTTP request headers / gRPC metadata of every request seen, failed ones included.
    pub fn http_headers(&self) -> Vec<HeaderMap> {
        self.state.headers.lock().unwrap().clone()
    }

    /// The gRPC endpoint, e.g. for `with_endpoint`: "http://127.0.0.1:PORT", or
    /// "https://localhost:PORT" for a TLS receiver (the name its certificate is for).
    pub fn grpc_url(&self) -> String {
        self.base_url(self.grpc_addr)
    }

    /// The full OTLP/HTTP traces URL: "http://127.0.0.1:PORT/v1/traces", or
    /// "https://localhost:PORT/v1/traces" for a TLS receiver.
    pub fn http_url(&self) -> String {
        format!("{}/v1/traces", self.base_url(self.http_addr))
    }

    fn base_url(&self, addr: SocketAddr) -> String {
        if self.tls {
            format!("https://localhost:{}", addr.port())
        } else {
            format!("http://{addr}")
        }
    }
}

/// A TLS acceptor (rustls, ring provider) serving this certificate chain and key (PEM).
fn tls_acceptor(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key).unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn protobuf_response(status: StatusCode, body: Vec<u8>) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-protobuf")
        .body(full(body))
        .unwrap()
}

fn http_error(state: &State, status: StatusCode, message: &str) -> Response<TestBody> {
    state.failed.fetch_add(1, Ordering::SeqCst);
    let code = if status == StatusCode::BAD_REQUEST {
        3
    } else {
        14
    };
    let body = RpcStatus {
        code,
        message: message.to_string(),
    };
    protobuf_response(status, body.encode_to_vec())
}

async fn http_export(state: &State, req: Request<Incoming>) -> Response<TestBody> {
    if req.uri().path() != "/v1/traces" {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(full("not found"))
            .unwrap();
    }
    if req.method() != http::Method::POST {
        return Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .body(full("method not allowed"))
            .unwrap();
    }
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/x-protobuf") {
        state.headers.lock().unwrap().push(parts.headers.clone());
        state.failed.fetch_add(1, Ordering::SeqCst);
        return Response::builder()
            .status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            .body(full(format!("unsupported content-type {content_type:?}")))
            .unwrap();
    }
    let raw: Bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            state.headers.lock().unwrap().push(parts.headers.clone());
            return http_error(state, StatusCode::BAD_REQUEST, &format!("body: {e}"));
        }
    };
    let gzip = parts
        .headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let decoded = if gzip {
        let mut out = Vec::new();
        match flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out) {
            Ok(_) => Bytes::from(out),
            Err(e) => {
                state.headers.lock().unwrap().push(parts.headers.clone());
                return http_error(state, StatusCode::BAD_REQUEST, &format!("gzip: {e}"));
            }
        }
    } else {
        raw
    };
    let request = match ExportTraceServiceRequest::decode(decoded) {
        Ok(request) => request,
        Err(e) => {
            state.headers.lock().unwrap().push(parts.headers.clone());
            return http_error(state, StatusCode::BAD_REQUEST, &format!("protobuf: {e}"));
        }
    };
    match state.handle(parts.headers, request, "http") {
        Outcome::Ok(response) => protobuf_response(StatusCode::OK, response.encode_to_vec()),
        Outcome::Fail(Failure::Unavailable) => {
            let body = RpcStatus {
                code: 14,
                message: "injected failure".into(),
            };
            let mut response =
                protobuf_response(StatusCode::SERVICE_UNAVAILABLE, body.encode_to_vec());
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("0"),
            );
            response
        }
        Outcome::Fail(Failure::Internal) => {
            let body = RpcStatus {
                code: 3,
                message: "injected failure".into(),
            };
            protobuf_response(StatusCode::BAD_REQUEST, body.encode_to_vec())
        }
        Outcome::Fail(Failure::Status {
            http: code,
            retry_after,
        }) => {
            let body = RpcStatus {
                code: 14,
                message: "injected failure".into(),
            };
            let status = StatusCode::from_u16(code).unwrap();
            let mut response = protobuf_response(status, body.encode_to_vec());
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, secs.to_string().parse().unwrap());
            }
            response
        }
    }
}

/// Lowercase hex of `bytes`; "" when empty.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP `AnyValue` as JSON.
pub fn any_value_json(value: Option<&AnyValue>) -> serde_json::Value {
    use any_value::Value;
    match value.and_then(|v| v.value.as_ref()) {
        None => serde_json::Value::Null,
        Some(Value::StringValue(s)) => s.clone().into(),
        Some(Value::BoolValue(b)) => (*b).into(),
        Some(Value::IntValue(i)) => (*i).into(),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| d.to_string().into()),
        Some(Value::ArrayValue(array)) => array
            .values
            .iter()
            .map(|v| any_value_json(Some(v)))
            .collect::<Vec<_>>()
            .into(),
        Some(Value::KvlistValue(list)) => {
            serde_json::Value::Object(attributes(&list.values).into_iter().collect())
        }
        Some(Value::BytesValue(bytes)) => hex(bytes).into(),
        Some(other) => format!("{other:?}").into(),
    }
}

/// OTLP attributes as a map of JSON values.
pub fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, serde_json::Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), any_value_json(kv.value.as_ref())))
        .collect()
}

/// Every span of `request`, flattened with its resource and scope.
pub fn flatten(request: &ExportTraceServiceRequest, transport: &'static str) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for scope_spans in &resource_spans.scope_spans {
            let scope_name = scope_spans
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for span in &scope_spans.spans {
                let status = span.status.as_ref();
                out.push(ReceivedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name.clone(),
                    kind: span.kind,
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                    attributes: attributes(&span.attributes),
                    status_code: status.map_or(0, |s| s.code),
                    status_message: status.map(|s| s.message.clone()).unwrap_or_default(),
                    events: span
                        .events
                        .iter()
                        .map(|e| (e.name.clone(), e.time_unix_nano, attributes(&e.attributes)))
                        .collect(),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                    link_attributes: span
                        .links
                        .iter()
                        .map(|l| attributes(&l.attributes))
                        .collect(),
                    resource: resource.clone(),
                    scope_name: scope_name.clone(),
                    transport,
                    trace_state: span.trace_state.clone(),
                });
            }
        }
    }
    out
}
