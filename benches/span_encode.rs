//! Cost per span of getting a recorded span onto the wire: `cargo bench --bench span_encode`.
//!
//! For a batch of 512 SERVER spans with the usual HTTP attributes:
//! - `record_to_span_data`: `SpanRecord` → OpenTelemetry `SpanData` (what the OTLP/HTTP,
//!   stdout and Zipkin exporters are fed);
//! - `record_to_otlp_protobuf`: that, then `ExportTraceServiceRequest` encoded as
//!   opentelemetry-otlp does (its gRPC path, and hoptrace's before `wire`);
//! - `record_to_otlp_protobuf_direct`: hoptrace's own encoder (`export::wire`), which the
//!   OTLP/gRPC export uses: the same request, written straight from the records.
//!
//! Criterion reports the time per batch and, through `Throughput::Elements`, per span.
//! Inputs are built outside the loop.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hoptrace::export::convert::{scope, to_span_data};
use hoptrace::export::wire::SpanBatch;
use hoptrace::trace::context::{SpanId, TraceFlags, TraceId};
use hoptrace::trace::span::{SpanKind, SpanRecord};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use prost::Message as _;

const BATCH: usize = 512;

fn record(i: usize) -> SpanRecord {
    SpanRecord {
        kind: SpanKind::Server,
        trace_id: TraceId::random(),
        span_id: SpanId::random(),
        parent_span_id: Some(SpanId::random()),
        parent_is_remote: true,
        flags: TraceFlags(1),
        debug: false,
        tracestate: None,
        start: SystemTime::now(),
        duration: Duration::from_micros(350 + i as u64),
        method: http::Method::GET,
        route: Some("checkout".into()),
        target: "/api/v1/orders/42?cart=7".parse().unwrap(),
        host: Some(http::HeaderValue::from_static("shop.internal")),
        scheme: "http",
        version: http::Version::HTTP_11,
        client_addr: "10.0.0.7:51234".parse().unwrap(),
        local_addr: "10.0.0.9:4143".parse().unwrap(),
        user_agent: Some(http::HeaderValue::from_static("curl/8.5.0")),
        peer: None,
        status: Some(200),
        error_type: None,
        resend_count: 0,
        connection: None,
        first_byte: None,
        request_headers: Vec::new(),
        response_headers: Vec::new(),
        redact_query_keys: vec!["token".to_string()].into(),
        kept_reason: None,
        attributes: Vec::new(),
        links: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let records: Vec<SpanRecord> = (0..BATCH).map(record).collect();
    let scope = scope();
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name("bench")
        .build();
    let resource = ResourceAttributesWithSchema::from(&resource);
    let mut group = c.benchmark_group("span_encode");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("record_to_span_data", |b| {
        b.iter(|| {
            let spans: Vec<_> = records
                .iter()
                .map(|r| to_span_data(black_box(r), &scope))
                .collect();
            black_box(spans)
        })
    });
    group.bench_function("record_to_otlp_protobuf", |b| {
        b.iter(|| {
            let spans: Vec<_> = records
                .iter()
                .map(|r| to_span_data(black_box(r), &scope))
                .collect();
            let request = ExportTraceServiceRequest {
                resource_spans: group_spans_by_resource_and_scope(spans, &resource),
            };
            black_box(request.encode_to_vec())
        })
    });
    let sdk_resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name("bench")
        .build();
    let mut batch = SpanBatch::new(&sdk_resource, &scope);
    group.bench_function("record_to_otlp_protobuf_direct", |b| {
        b.iter(|| {
            for r in &records {
                batch.push(black_box(r));
            }
            black_box(batch.take())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
