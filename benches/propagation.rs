//! Propagation formats' cost: `cargo bench --bench propagation`.
//!
//! `propagation::extract` with only `tracecontext` configured (the default) against the W3C
//! `context::extract` it wraps, each other format's extract on its own, all five configured
//! with a B3 request (the worst order for it: W3C tried first and absent), and `inject` of
//! one format and of all five. Inputs are built outside the timed loop.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hoptrace::trace::context::{SpanId, TraceFlags, TraceId, extract as w3c_extract};
use hoptrace::trace::propagation::{Format, Outgoing, extract, inject};
use http::{HeaderMap, HeaderValue};

const ALL: [Format; 5] = [
    Format::TraceContext,
    Format::B3,
    Format::B3Multi,
    Format::Jaeger,
    Format::XRay,
];

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_static(v));
    }
    // Typical request headers the lookups have to pass over.
    h.insert("host", HeaderValue::from_static("api.example.com"));
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h
}

fn extracting(c: &mut Criterion) {
    let mut group = c.benchmark_group("propagation_extract");
    let w3c = headers(&[(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )]);
    group.bench_function("context::extract(traceparent)", |b| {
        b.iter(|| w3c_extract(black_box(&w3c)))
    });
    group.bench_function("extract([tracecontext], traceparent)", |b| {
        b.iter(|| extract(black_box(&w3c), [Format::TraceContext]))
    });
    let cases: [(&str, Format, HeaderMap); 4] = [
        (
            "b3",
            Format::B3,
            headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]),
        ),
        (
            "b3multi",
            Format::B3Multi,
            headers(&[
                ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
                ("x-b3-sampled", "1"),
            ]),
        ),
        (
            "jaeger",
            Format::Jaeger,
            headers(&[(
                "uber-trace-id",
                "80f198ee56343ba864fe8b2a57d3eff7:e457b5a2e4d86bd1:0:1",
            )]),
        ),
        (
            "xray",
            Format::XRay,
            headers(&[(
                "x-amzn-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            )]),
        ),
    ];
    for (name, format, h) in &cases {
        group.bench_function(format!("extract([{name}])"), |b| {
            b.iter(|| extract(black_box(h), [*format]))
        });
    }
    let b3 = &cases[0].2;
    group.bench_function("extract(all five, b3 request)", |b| {
        b.iter(|| extract(black_box(b3), ALL))
    });
    group.finish();
}

fn injecting(c: &mut Criterion) {
    let mut group = c.benchmark_group("propagation_inject");
    let out = Outgoing {
        trace_id: TraceId::from_u128(0x4bf92f3577b34da6a3ce929d0e0e4736),
        span_id: SpanId::from_u64(0x00f067aa0ba902b7),
        flags: TraceFlags(1),
        debug: false,
        short_trace_id: false,
        tracestate: None,
        xray: None,
    };
    // The map is reused: after the first iteration every insert replaces a value.
    let mut h = headers(&[]);
    group.bench_function("inject([tracecontext])", |b| {
        b.iter(|| inject(black_box(&mut h), [Format::TraceContext], black_box(&out)))
    });
    let mut h = headers(&[]);
    group.bench_function("inject(all five)", |b| {
        b.iter(|| inject(black_box(&mut h), ALL, black_box(&out)))
    });
    group.finish();
}

criterion_group!(benches, extracting, injecting);
criterion_main!(benches);
