//! Tests of the test OTLP receiver itself (`tests/common/otlp.rs`): hand-built requests over
//! OTLP/gRPC (tonic's generated client, gzip) and OTLP/HTTP protobuf (hyper, gzip on and off),
//! injected failures and partial success, and what the real `opentelemetry-otlp` exporter sends.

use crate::common;

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::otlp::{Failure, ReceivedSpan, Receiver};
use common::{full, http1_client};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::json;
use tonic::codec::CompressionEncoding;

const TRACE_ID: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];
const SPAN_ID: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
const PARENT_ID: [u8; 8] = [0x53, 0x99, 0x5c, 0x3f, 0x42, 0xcd, 0x8a, 0xd8];
const LINK_TRACE: [u8; 16] = [0x11; 16];
const LINK_SPAN: [u8; 8] = [0x22; 8];

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// A request with one resource, one scope and one span that uses every field the receiver
/// decodes.
fn sample_request(name: &str) -> ExportTraceServiceRequest {
    let span = Span {
        trace_id: TRACE_ID.to_vec(),
        span_id: SPAN_ID.to_vec(),
        trace_state: "vendor=abc".into(),
        parent_span_id: PARENT_ID.to_vec(),
        flags: 0x101,
        name: name.into(),
        kind: 3,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_250_000_000,
        attributes: vec![
            kv("http.request.method", s("GET")),
            kv("http.response.status_code", any_value::Value::IntValue(503)),
            kv("hoptrace.retried", any_value::Value::BoolValue(true)),
            kv("hoptrace.ratio", any_value::Value::DoubleValue(0.5)),
            kv(
                "hoptrace.list",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(s("a")),
                        },
                        AnyValue {
                            value: Some(any_value::Value::IntValue(2)),
                        },
                    ],
                }),
            ),
        ],
        dropped_attributes_count: 0,
        events: vec![Event {
            time_unix_nano: 1_700_000_000_100_000_000,
            name: "exception".into(),
            attributes: vec![kv("exception.message", s("boom"))],
            dropped_attributes_count: 0,
        }],
        dropped_events_count: 0,
        links: vec![Link {
            trace_id: LINK_TRACE.to_vec(),
            span_id: LINK_SPAN.to_vec(),
            trace_state: String::new(),
            attributes: vec![],
            dropped_attributes_count: 0,
            flags: 0,
        }],
        dropped_links_count: 0,
        status: Some(Status {
            message: "upstream unavailable".into(),
            code: 2,
        }),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("receiver-test")),
                    kv("service.instance.id", s("i-1")),
                ],
                dropped_attributes_count: 0,
                entity_refs: vec![],
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "hoptrace".into(),
                    version: "0.1.0".into(),
                    attributes: vec![],
                    dropped_attributes_count: 0,
                }),
                spans: vec![span],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn assert_sample(span: &ReceivedSpan, name: &str, transport: &str) {
    assert_eq!(span.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span.span_id, "00f067aa0ba902b7");
    assert_eq!(span.parent_span_id, "53995c3f42cd8ad8");
    assert_eq!(span.name, name);
    assert_eq!(span.kind, 3);
    assert_eq!(span.start_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(span.end_unix_nano, 1_700_000_000_250_000_000);
    assert_eq!(span.attr_str("http.request.method"), Some("GET"));
    assert_eq!(span.attr_i64("http.response.status_code"), Some(503));
    assert_eq!(span.attributes["hoptrace.retried"], json!(true));
    assert_eq!(span.attributes["hoptrace.ratio"], json!(0.5));
    assert_eq!(span.attributes["hoptrace.list"], json!(["a", 2]));
    assert_eq!(span.status_code, 2);
    assert_eq!(span.status_message, "upstream unavailable");
    assert_eq!(span.events.len(), 1);
    assert_eq!(span.events[0].0, "exception");
    assert_eq!(span.events[0].1, 1_700_000_000_100_000_000);
    assert_eq!(span.events[0].2["exception.message"], json!("boom"));
    assert_eq!(
        span.links,
        vec![("11".repeat(16), "22".repeat(8))],
        "links of {span:?}"
    );
    assert_eq!(span.resource["service.name"], json!("receiver-test"));
    assert_eq!(span.service_name(), Some("receiver-test"));
    assert_eq!(span.scope_name, "hoptrace");
    assert_eq!(span.transport, transport);
    assert_eq!(span.trace_state, "vendor=abc");
}

async fn grpc_client(receiver: &Receiver) -> TraceServiceClient<tonic::transport::Channel> {
    TraceServiceClient::connect(receiver.grpc_url())
        .await
        .unwrap()
        .send_compressed(CompressionEncoding::Gzip)
}

async fn grpc_export(
    client: &mut TraceServiceClient<tonic::transport::Channel>,
    name: &str,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let mut request = tonic::Request::new(sample_request(name));
    request
        .metadata_mut()
        .insert("x-api-key", "secret-grpc".parse().unwrap());
    client.export(request).await.map(|r| r.into_inner())
}

struct HttpReply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: bytes::Bytes,
}

async fn http_post(receiver: &Receiver, body: Vec<u8>, gzip: bool, path: &str) -> HttpReply {
    let url = format!("http://{}{}", receiver.http_addr, path);
    let mut builder = Request::post(url)
        .header("content-type", "application/x-protobuf")
        .header("x-api-key", "secret-http");
    let body = if gzip {
        builder = builder.header("content-encoding", "gzip");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&body).unwrap();
        encoder.finish().unwrap()
    } else {
        body
    };
    let response = http1_client()
        .request(builder.body(full(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    HttpReply {
        status,
        headers,
        body,
    }
}

#[tokio::test]
async fn grpc_gzip_request_is_decoded() {
    let receiver = Receiver::start().await;
    assert!(receiver.grpc_url().starts_with("http://127.0.0.1:"));
    let mut client = grpc_client(&receiver).await;
    let response = grpc_export(&mut client, "grpc span").await.unwrap();
    assert_eq!(response.partial_success, None);

    let spans = receiver.wait_for_spans(1).await;
    assert_eq!(spans.len(), 1);
    assert_sample(&spans[0], "grpc span", "grpc");
    assert_eq!(receiver.requests(), 1);
    assert_eq!(receiver.failed_requests(), 0);
    let headers = receiver.http_headers();
    assert_eq!(headers.len(), 1);
    assert_eq!(headers[0]["x-api-key"], "secret-grpc");
    assert_eq!(headers[0]["grpc-encoding"], "gzip");
}

#[tokio::test]
async fn http_protobuf_request_is_decoded_plain_and_gzip() {
    let receiver = Receiver::start().await;
    assert_eq!(
        receiver.http_url(),
        format!("http://127.0.0.1:{}/v1/traces", receiver.http_addr.port())
    );
    for (i, gzip) in [false, true].into_iter().enumerate() {
        let name = format!("http span gzip={gzip}");
        let body = sample_request(&name).encode_to_vec();
        let reply = http_post(&receiver, body, gzip, "/v1/traces").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers["content-type"], "application/x-protobuf");
        let response = ExportTraceServiceResponse::decode(reply.body).unwrap();
        assert_eq!(response.partial_success, None);

        let spans = receiver.wait_for_spans(i + 1).await;
        assert_eq!(spans.len(), i + 1);
        assert_sample(&spans[i], &name, "http");
    }
    assert_eq!(receiver.requests(), 2);
    let headers = receiver.http_headers();
    assert_eq!(headers.len(), 2);
    assert_eq!(headers[0]["x-api-key"], "secret-http");
    assert!(!headers[0].contains_key("content-encoding"));
    assert_eq!(headers[1]["content-encoding"], "gzip");
}

#[tokio::test]
async fn http_rejects_other_paths_and_bad_bodies() {
    let receiver = Receiver::start().await;
    let body = sample_request("x").encode_to_vec();
    let reply = http_post(&receiver, body, false, "/v1/metrics").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    let reply = http_post(
        &receiver,
        b"\xff\xff\xff not protobuf".to_vec(),
        false,
        "/v1/traces",
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    let reply = http_post(&receiver, b"not gzip".to_vec(), true, "/v1/traces").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    let json_request = Request::post(receiver.http_url())
        .header("content-type", "application/json")
        .body(full("{}"))
        .unwrap();
    let response = http1_client().request(json_request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    assert_eq!(receiver.requests(), 0);
    assert_eq!(receiver.failed_requests(), 3);
    assert!(receiver.spans().is_empty());
}

#[tokio::test]
async fn grpc_injected_failures_return_the_right_codes() {
    let receiver = Receiver::start().await;
    let mut client = grpc_client(&receiver).await;

    receiver.set_failures(2, Failure::Unavailable);
    for _ in 0..2 {
        let status = grpc_export(&mut client, "a").await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
    receiver.set_failures(1, Failure::Internal);
    let status = grpc_export(&mut client, "b").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    grpc_export(&mut client, "c").await.unwrap();
    assert_eq!(receiver.failed_requests(), 3);
    assert_eq!(receiver.requests(), 1);
    assert_eq!(receiver.http_headers().len(), 4);
    let spans = receiver.spans();
    assert_eq!(spans.len(), 1, "failed requests keep no spans");
    assert_eq!(spans[0].name, "c");
}

#[tokio::test]
async fn http_injected_failures_return_the_right_codes() {
    let receiver = Receiver::start().await;
    let body = sample_request("x").encode_to_vec();

    receiver.set_failures(1, Failure::Unavailable);
    let reply = http_post(&receiver, body.clone(), true, "/v1/traces").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers["retry-after"], "0");

    receiver.set_failures(1, Failure::Internal);
    let reply = http_post(&receiver, body.clone(), false, "/v1/traces").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(!reply.headers.contains_key("retry-after"));

    let reply = http_post(&receiver, body, false, "/v1/traces").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(receiver.failed_requests(), 2);
    assert_eq!(receiver.requests(), 1);
    assert_eq!(receiver.spans().len(), 1);
}

#[tokio::test]
async fn partial_success_is_reported_on_both_transports() {
    let receiver = Receiver::start().await;
    receiver.set_partial_success(3, "spans too old");

    let mut client = grpc_client(&receiver).await;
    let response = grpc_export(&mut client, "g").await.unwrap();
    let partial = response.partial_success.expect("grpc partial_success");
    assert_eq!(partial.rejected_spans, 3);
    assert_eq!(partial.error_message, "spans too old");

    let reply = http_post(
        &receiver,
        sample_request("h").encode_to_vec(),
        false,
        "/v1/traces",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let response = ExportTraceServiceResponse::decode(reply.body).unwrap();
    let partial = response.partial_success.expect("http partial_success");
    assert_eq!(partial.rejected_spans, 3);
    assert_eq!(partial.error_message, "spans too old");
    assert_eq!(receiver.requests(), 2);
}

/// A span as the SDK hands it to an exporter.
fn sdk_span(name: &'static str) -> opentelemetry_sdk::trace::SpanData {
    use opentelemetry::trace::{
        Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let trace_state = TraceState::from_key_value([("vendor", "abc")]).unwrap();
    let mut events = SpanEvents::default();
    events.events.push(Event::new(
        "retry",
        start + Duration::from_millis(100),
        vec![KeyValue::new("attempt", 2_i64)],
        0,
    ));
    let mut links = SpanLinks::default();
    links.links.push(Link::new(
        SpanContext::new(
            TraceId::from_bytes(LINK_TRACE),
            SpanId::from_bytes(LINK_SPAN),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ),
        vec![],
        0,
    ));
    opentelemetry_sdk::trace::SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(TRACE_ID),
            SpanId::from_bytes(SPAN_ID),
            TraceFlags::SAMPLED,
            false,
            trace_state,
        ),
        parent_span_id: SpanId::from_bytes(PARENT_ID),
        parent_span_is_remote: true,
        span_kind: SpanKind::Server,
        name: name.into(),
        start_time: start,
        end_time: start + Duration::from_millis(250),
        attributes: vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.response.status_code", 201_i64),
            KeyValue::new("hoptrace.retried", false),
            KeyValue::new("hoptrace.ratio", 0.25),
        ],
        dropped_attributes_count: 0,
        events,
        links,
        status: Status::error("bad gateway"),
        instrumentation_scope: InstrumentationScope::builder("hoptrace-real-exporter")
            .with_version("1.2.3")
            .build(),
    }
}

fn assert_sdk_span(span: &ReceivedSpan, name: &str, transport: &str) {
    assert_eq!(span.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span.span_id, "00f067aa0ba902b7");
    assert_eq!(span.parent_span_id, "53995c3f42cd8ad8");
    assert_eq!(span.name, name);
    assert_eq!(span.kind, 2, "SERVER");
    assert_eq!(span.start_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(span.end_unix_nano, 1_700_000_000_250_000_000);
    assert_eq!(span.attr_str("http.request.method"), Some("POST"));
    assert_eq!(span.attr_i64("http.response.status_code"), Some(201));
    assert_eq!(span.attributes["hoptrace.retried"], json!(false));
    assert_eq!(span.attributes["hoptrace.ratio"], json!(0.25));
    assert_eq!(span.status_code, 2);
    assert_eq!(span.status_message, "bad gateway");
    assert_eq!(span.events.len(), 1);
    assert_eq!(span.events[0].0, "retry");
    assert_eq!(span.events[0].1, 1_700_000_000_100_000_000);
    assert_eq!(span.events[0].2["attempt"], json!(2));
    assert_eq!(span.links, vec![("11".repeat(16), "22".repeat(8))]);
    assert_eq!(span.service_name(), Some("real-exporter"));
    assert_eq!(span.scope_name, "hoptrace-real-exporter");
    assert_eq!(span.transport, transport);
    assert_eq!(span.trace_state, "vendor=abc");
}

#[tokio::test]
async fn real_otlp_exporter_spans_are_decoded_on_both_transports() {
    use opentelemetry_otlp::{
        Compression, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
    };
    use opentelemetry_sdk::trace::SpanExporter as _;

    let receiver = Receiver::start().await;
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name("real-exporter")
        .build();

    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("x-api-key", "grpc-key".parse().unwrap());
    let mut grpc = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(receiver.grpc_url())
        .with_compression(Compression::Gzip)
        .with_metadata(metadata)
        .with_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    grpc.set_resource(&resource);
    grpc.export(vec![sdk_span("via tonic")]).await.unwrap();

    let mut http = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(receiver.http_url())
        .with_protocol(Protocol::HttpBinary)
        .with_compression(Compression::Gzip)
        .with_headers(HashMap::from([("x-api-key".into(), "http-key".into())]))
        .with_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    http.set_resource(&resource);
    http.export(vec![sdk_span("via http")]).await.unwrap();

    let spans = receiver.wait_for_spans(2).await;
    assert_eq!(spans.len(), 2);
    let grpc_span = spans.iter().find(|s| s.transport == "grpc").unwrap();
    let http_span = spans.iter().find(|s| s.transport == "http").unwrap();
    assert_sdk_span(grpc_span, "via tonic", "grpc");
    assert_sdk_span(http_span, "via http", "http");
    assert_eq!(receiver.requests(), 2);

    let headers = receiver.http_headers();
    assert!(
        headers
            .iter()
            .any(|h| h.get("x-api-key").is_some_and(|v| v == "grpc-key")),
        "{headers:?}"
    );
    let http_headers = headers
        .iter()
        .find(|h| h.get("x-api-key").is_some_and(|v| v == "http-key"))
        .unwrap_or_else(|| panic!("no http-key header in {headers:?}"));
    assert_eq!(http_headers["content-type"], "application/x-protobuf");
    assert_eq!(http_headers["content-encoding"], "gzip");

    // The start time survived as nanoseconds since the epoch, not truncated.
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(http_span.start_unix_nano);
    assert_eq!(start, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
}
