//! Stitching's cost on the request path: `cargo bench --bench stitch`.
//!
//! One outbound call without trace context, decided against 1, 8 and 64 inbound requests in
//! flight (registry scan + scoring + the call's end), with the model trained on four routes;
//! and one inbound request registered and answered, with none and with about 1,500 answered
//! requests lingering (what 30,000 requests/s leave within the default 50 ms `linger`). Inputs
//! are built outside the timed loop.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use hoptrace::config::StitchingConfig;
use hoptrace::stitch::Stitcher;
use hoptrace::trace::context::{SpanId, TraceFlags, TraceId, TraceParent};
use http::{HeaderMap, Uri};

fn parent() -> TraceParent {
    TraceParent {
        trace_id: TraceId::random(),
        parent_id: SpanId::random(),
        flags: TraceFlags(1),
    }
}

fn bench(c: &mut Criterion) {
    let config = StitchingConfig::default();
    let headers = HeaderMap::new();
    let routes: Vec<Arc<str>> = (0..4).map(|i| Arc::from(format!("route-{i}"))).collect();
    let dests: Vec<Arc<str>> = (0..4).map(|i| Arc::from(format!("dest-{i}"))).collect();
    let inbound_uri =
        |i: usize| -> Uri { format!("/orders/item-{i:06}?user=u{i:05}").parse().unwrap() };
    let call_uri: Uri = "/stock/item-000003".parse().unwrap();

    for in_flight in [1usize, 8, 64] {
        let stitcher = Arc::new(Stitcher::new());
        // Train: requests one at a time, each making one call to its route's destination.
        for i in 0..200 {
            let r = i % 4;
            let held = stitcher.inbound(
                &config,
                Some(&routes[r]),
                &inbound_uri(i),
                &headers,
                parent(),
                Instant::now(),
            );
            let call: Uri = format!("/stock/item-{i:06}").parse().unwrap();
            drop(stitcher.outbound(
                &config,
                Some(&dests[r]),
                &call,
                &headers,
                None,
                Instant::now(),
            ));
            drop(held);
        }
        let held: Vec<_> = (0..in_flight)
            .map(|i| {
                stitcher.inbound(
                    &config,
                    Some(&routes[i % 4]),
                    &inbound_uri(i),
                    &headers,
                    parent(),
                    Instant::now(),
                )
            })
            .collect();
        c.bench_function(
            &format!("stitch/outbound_call/{in_flight}_in_flight"),
            |b| {
                b.iter(|| {
                    let r = stitcher.outbound(
                        &config,
                        Some(&dests[3]),
                        black_box(&call_uri),
                        &headers,
                        None,
                        Instant::now(),
                    );
                    black_box(r.source);
                })
            },
        );
        drop(held);
    }

    // Answered requests leave the registry at the next operation after `linger`; with the
    // default 50 ms a tight loop would fill it, so measure with none.
    let config = StitchingConfig {
        linger: std::time::Duration::ZERO,
        ..config
    };
    let stitcher = Arc::new(Stitcher::new());
    let uri = inbound_uri(7);
    c.bench_function("stitch/inbound_request", |b| {
        b.iter(|| {
            let held = stitcher.inbound(
                &config,
                Some(&routes[0]),
                black_box(&uri),
                &headers,
                parent(),
                Instant::now(),
            );
            drop(black_box(held));
        })
    });

    // Under load the answered requests are many: a request rate times `linger` (about 1,500
    // at 30,000 requests/s and the default 50 ms). Steady state at about that many: `linger`
    // is tuned until about 1,500 stay registered at this loop's own pace.
    let stitcher = Arc::new(Stitcher::new());
    let register = |config: &StitchingConfig| {
        let held = stitcher.inbound(
            config,
            Some(&routes[0]),
            black_box(&uri),
            &headers,
            parent(),
            Instant::now(),
        );
        drop(black_box(held));
    };
    let mut config = StitchingConfig {
        linger: std::time::Duration::from_micros(500),
        max_inflight: 1 << 20,
        ..config
    };
    for _ in 0..6 {
        for _ in 0..20_000 {
            register(&config);
        }
        let tracked = stitcher.tracked().max(1) as u32;
        config.linger = config.linger * 1_500 / tracked;
    }
    c.bench_function("stitch/inbound_request/about_1500_answered", |b| {
        b.iter(|| register(&config))
    });
    println!(
        "stitch/inbound_request/about_1500_answered: {} requests tracked at the end",
        stitcher.tracked()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
