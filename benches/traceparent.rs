//! W3C trace-context cost: `cargo bench --bench traceparent`.
//!
//! hoptrace's `TraceParent::parse` / `format` and `extract` (both headers from a `HeaderMap`)
//! against the baseline, opentelemetry_sdk's `TraceContextPropagator` extracting from and
//! injecting into a `HashMap<String, String>` carrier. Inputs are built outside the timed loop.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hoptrace::trace::context::{
    SpanId, TRACEPARENT, TRACESTATE, TraceFlags, TraceId, TraceParent, extract,
};
use http::{HeaderMap, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;

const TRACEPARENT_VALUE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE_VALUE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("traceparent_parse");

    let bytes = TRACEPARENT_VALUE.as_bytes();
    group.bench_function("hoptrace/TraceParent::parse", |b| {
        b.iter(|| TraceParent::parse(black_box(bytes)))
    });

    let mut headers = HeaderMap::new();
    headers.insert(TRACEPARENT, HeaderValue::from_static(TRACEPARENT_VALUE));
    group.bench_function("hoptrace/extract(traceparent)", |b| {
        b.iter(|| extract(black_box(&headers)))
    });

    let propagator = TraceContextPropagator::new();
    let carrier: HashMap<String, String> =
        HashMap::from([("traceparent".to_owned(), TRACEPARENT_VALUE.to_owned())]);
    group.bench_function("otel/TraceContextPropagator::extract(traceparent)", |b| {
        b.iter(|| propagator.extract(black_box(&carrier)))
    });

    headers.insert(TRACESTATE, HeaderValue::from_static(TRACESTATE_VALUE));
    group.bench_function("hoptrace/extract(traceparent+tracestate)", |b| {
        b.iter(|| extract(black_box(&headers)))
    });

    let mut carrier = carrier.clone();
    carrier.insert("tracestate".to_owned(), TRACESTATE_VALUE.to_owned());
    group.bench_function(
        "otel/TraceContextPropagator::extract(traceparent+tracestate)",
        |b| b.iter(|| propagator.extract(black_box(&carrier))),
    );
    group.finish();
}

fn format(c: &mut Criterion) {
    let mut group = c.benchmark_group("traceparent_format");

    let tp = TraceParent {
        trace_id: TraceId::from_u128(0x4bf92f3577b34da6a3ce929d0e0e4736),
        parent_id: SpanId::from_u64(0x00f067aa0ba902b7),
        flags: TraceFlags(0x01),
    };
    group.bench_function("hoptrace/TraceParent::format", |b| {
        b.iter(|| black_box(&tp).format())
    });
    group.bench_function("hoptrace/TraceParent::to_header_value", |b| {
        b.iter(|| black_box(&tp).to_header_value())
    });

    // The baseline injects both headers (its `inject` always writes `tracestate`, empty here),
    // into a carrier reused across iterations so only the formatting and insert are timed.
    let propagator = TraceContextPropagator::new();
    let cx = Context::new().with_remote_span_context(SpanContext::new(
        opentelemetry::trace::TraceId::from(tp.trace_id.to_u128()),
        opentelemetry::trace::SpanId::from(tp.parent_id.to_u64()),
        opentelemetry::trace::TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ));
    let mut carrier: HashMap<String, String> = HashMap::new();
    propagator.inject_context(&cx, &mut carrier);
    assert_eq!(
        carrier.get("traceparent").map(String::as_str),
        Some(TRACEPARENT_VALUE)
    );
    group.bench_function("otel/TraceContextPropagator::inject_context", |b| {
        b.iter(|| propagator.inject_context(black_box(&cx), black_box(&mut carrier)))
    });
    group.finish();
}

criterion_group!(benches, parse, format);
criterion_main!(benches);
