//! Route lookup cost: `cargo bench --bench route_match`.
//!
//! Tables of 10, 1,000 and 10,000 routes (hosts, wildcards, prefixes), looked up for a request that
//! matches an exact host, one that falls to a wildcard, and one that matches nothing (the
//! worst case: a full scan). Inputs are built outside the timed loop.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hoptrace::config::HostMatch;
use hoptrace::proxy::route::{RequestInfo, RouteSpec, RouteTable};
use http::{HeaderMap, Method};

fn table(n: usize) -> RouteTable<usize> {
    RouteTable::new((0..n).map(|i| {
        let host = match i % 3 {
            0 => Some(HostMatch::Exact(format!("svc{i}.internal"))),
            1 => Some(HostMatch::Suffix(format!(".zone{i}.internal"))),
            _ => None,
        };
        let spec = RouteSpec {
            name: None,
            index: i,
            host,
            path_prefix: format!("/api/v{}/items", i % 7),
            methods: vec![],
            headers: vec![],
            tracing: true,
            sampling_ratio: None,
        };
        (spec, i)
    }))
}

fn bench(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let method = Method::GET;
    for n in [10, 1_000, 10_000] {
        let t = table(n);
        let cases = [
            ("exact_host", "svc3.internal", "/api/v3/items/42"),
            ("wildcard_host", "a.zone4.internal", "/api/v4/items/42"),
            ("no_match", "nothing.example", "/other"),
        ];
        for (case, host, path) in cases {
            let req = RequestInfo {
                host: Some(host),
                path,
                method: &method,
                headers: &headers,
            };
            c.bench_function(&format!("route_match/{n}_routes/{case}"), |b| {
                b.iter(|| black_box(t.find(black_box(&req)).map(|r| r.index)))
            });
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
