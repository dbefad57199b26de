//! The request-smuggling guard's cost per request: `cargo bench --bench framing`.
//!
//! What `src/proxy/framing.rs` adds to every HTTP/1 request: one more `httparse` pass over the
//! head, and for chunked bodies the chunk-size lines. Each case is one connection carrying 100
//! kept-alive requests, fed as the socket would deliver them (one read per request); the
//! figure is per request.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hoptrace::proxy::framing::scan;

const REQUESTS: usize = 100;

fn connection(one: &[u8]) -> Vec<Vec<u8>> {
    vec![one.to_vec(); REQUESTS]
}

fn bench(c: &mut Criterion) {
    // wrk's request: the benchmarks' load.
    let small = connection(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:4143\r\n\r\n");
    // A browser-like head: 12 fields, about 700 bytes.
    let browser = connection(
        b"GET /api/v1/orders/8c9f2a?page=2&sort=desc HTTP/1.1\r\n\
          Host: shop.example.com\r\n\
          User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
          Accept: application/json, text/plain, */*\r\n\
          Accept-Language: en-US,en;q=0.5\r\n\
          Accept-Encoding: gzip, deflate, br\r\n\
          Referer: https://shop.example.com/orders\r\n\
          Connection: keep-alive\r\n\
          Cookie: session=4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e; theme=dark; consent=1\r\n\
          traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
          tracestate: congo=t61rcWkgMzE,rojo=00f067aa0ba902b7\r\n\
          Sec-Fetch-Mode: cors\r\n\
          Priority: u=4\r\n\r\n",
    );
    // A chunked upload: 4 KiB in four 1 KiB chunks.
    let mut upload =
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        upload.extend_from_slice(b"400\r\n");
        upload.extend_from_slice(&[b'x'; 1024]);
        upload.extend_from_slice(b"\r\n");
    }
    upload.extend_from_slice(b"0\r\n\r\n");
    let upload = connection(&upload);

    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Elements(REQUESTS as u64));
    for (name, reads) in [
        ("small_head", &small),
        ("browser_head", &browser),
        ("chunked_4k", &upload),
    ] {
        assert_eq!(
            scan(reads.iter().map(Vec::as_slice)),
            (None, REQUESTS as u64)
        );
        group.bench_function(name, |b| {
            b.iter(|| scan(black_box(reads).iter().map(Vec::as_slice)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
