//! The stitching evaluation's full sweep: `cargo bench --bench stitch_sweep`.
//!
//! Five services behind five in-process sidecars whose apps forward no trace header (see
//! `tests/common/eval.rs`), driven at 1, 2, 4, 8, 16, 32 and 64 concurrent client requests,
//! each point on fresh sidecars after a warm-up of one-at-a-time requests. Prints a Markdown
//! table: the measured mean inbound requests in flight at the calling service, edge accuracy,
//! precision and coverage of emitted parents, whole traces exactly right, expected
//! calibration error, and the baselines "no inference" and "oldest in flight"; then the same
//! point with shuffled nonces (the control: the inference never sees them).
//!
//! `STITCH_SWEEP_REQUESTS` (default 400) root requests per point.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/eval.rs"]
mod eval;

use std::time::Duration;

use eval::{Options, Score, System};

fn options(concurrency: usize, requests: usize, shuffle_nonces: bool) -> Options {
    Options {
        concurrency,
        requests: requests.max(10 * concurrency),
        warmup: 100,
        seed: 7 + concurrency as u64,
        shuffle_nonces,
        forward: false,
        serialize: false,
        timer: Some(Duration::from_millis(250)),
        delay_median: Duration::from_millis(1),
        delay_sigma: 1.0,
        delay_cap: Duration::from_millis(100),
        min_confidence: 0.9,
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn row(label: &str, s: &Score) -> String {
    format!(
        "| {label} | {:.2} | {} | {} | {} ({}) | {} | {} | {:.3} | {} | {} | {} |",
        s.mean_in_flight,
        s.calls,
        pct(s.accuracy),
        pct(s.precision),
        s.emitted,
        pct(s.coverage),
        pct(s.traces_right),
        s.ece,
        pct(s.baseline_none),
        pct(s.baseline_oldest),
        s.methods
            .iter()
            .map(|(m, n)| format!("{m} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo test --all-targets` builds and runs bench targets too (without `--bench`): the
    // sweep takes minutes and belongs to `cargo bench`, so the test run only checks it builds.
    if !std::env::args().any(|a| a == "--bench") {
        println!("stitch_sweep: run with `cargo bench --bench stitch_sweep`");
        return;
    }
    let requests: usize = std::env::var("STITCH_SWEEP_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| concurrency | mean in flight | calls | edge accuracy | precision (emitted) | coverage | traces exactly right | ECE | no inference | oldest in flight | decisions |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for concurrency in [1, 2, 4, 8, 16, 32, 64] {
        let score = runtime.block_on(async {
            System::start(options(concurrency, requests, false))
                .await
                .evaluate()
                .await
        });
        println!("{}", row(&concurrency.to_string(), &score));
    }
    for concurrency in [1, 8] {
        let score = runtime.block_on(async {
            System::start(options(concurrency, requests, true))
                .await
                .evaluate()
                .await
        });
        println!(
            "{}",
            row(&format!("{concurrency}, shuffled nonces"), &score)
        );
    }
}
