//! Replays the committed fuzz corpora (`fuzz/corpus/TARGET/*`, minimized with
//! `cargo fuzz cmin`) through the fuzz targets' checks, so every input libFuzzer found
//! interesting stays a regression test in CI, without libFuzzer or a nightly toolchain.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "{target}: {} fails its check",
            path.display()
        );
        inputs += 1;
    }
    assert!(inputs > 0, "{}: empty corpus", dir.display());
}

#[test]
fn traceparent_corpus() {
    replay("traceparent", checks::traceparent);
}

#[test]
fn tracestate_corpus() {
    replay("tracestate", checks::tracestate);
}

#[test]
fn config_corpus() {
    replay("config", checks::config);
}

#[test]
fn propagation_corpus() {
    replay("propagation", checks::propagation);
}
