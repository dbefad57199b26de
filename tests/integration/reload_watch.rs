//! What the config watcher reacts to: the config file only, not the other files of its
//! directory (a log file next to it), and a write in several steps as one reload.

use crate::common;
use crate::reload_common;

use std::io::Write as _;
use std::net::SocketAddr;

use common::*;
use reload_common::*;

/// The watcher's event counters: (reload, ignored).
async fn watch_events(admin: SocketAddr) -> (f64, f64) {
    let series =
        |action: &str| format!("hoptrace_config_watch_events_total{{action=\"{action}\"}}");
    (
        metric(admin, &series("reload")).await.unwrap(),
        metric(admin, &series("ignored")).await.unwrap(),
    )
}

/// Appends a line to `path` `times` times, each a separate open, write and close, as a
/// process logging into the file does.
fn append_lines(path: &std::path::Path, times: usize) {
    for i in 0..times {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(file, "log line {i}").unwrap();
    }
}

/// Waits until the watcher has ignored `n` more events than `from`: every event of the
/// writes before has then been seen.
async fn wait_ignored(admin: SocketAddr, from: f64, n: f64) {
    wait_until("the writes seen and ignored", DEADLINE, || async move {
        watch_events(admin).await.1 >= from + n
    })
    .await;
}

/// Waits (polling quickly: this is within a write that the debounce must see as one burst)
/// until the watcher has counted a config event beyond `seen`; returns the new count.
async fn wait_relevant(admin: SocketAddr, seen: f64) -> f64 {
    let start = std::time::Instant::now();
    loop {
        let now = watch_events(admin).await.0;
        if now > seen {
            return now;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the watcher never saw the write"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn another_file_written_in_the_directory_triggers_no_reload() {
    let (a, b) = (echo_server("a").await, echo_server("b").await);
    let dir = tempfile::tempdir().unwrap();
    let setup = |route_to| Setup::new(a.addr, b.addr, route_to);
    let (running, path) = start(dir.path(), &config(&setup("a")), true).await;
    let admin = running.admin_addr();
    // `hoptrace run --config cfg.toml 2> err.log` in the config's directory: every reload
    // logs a line into err.log, which must not reload again.
    let log = dir.path().join("err.log");
    let (reload, ignored) = watch_events(admin).await;
    append_lines(&log, 20);
    // Each append is at least a write and a close.
    wait_ignored(admin, ignored, 40.0).await;
    assert_eq!(
        watch_events(admin).await.0,
        reload,
        "no event counted for a reload"
    );
    assert_eq!(outcomes(&running), [0, 0, 0, 0], "no reload at all");

    // A real change: exactly one reload, applied (the temporary file of the atomic write
    // is ignored too).
    write_atomic(&path, &config(&setup("b")));
    wait_generation(&running, 2).await;
    assert_eq!(served_by(running.listener_addr("main").unwrap()).await, "b");
    let (reload, ignored) = watch_events(admin).await;
    append_lines(&log, 20);
    wait_ignored(admin, ignored, 40.0).await;
    assert_eq!(watch_events(admin).await.0, reload);
    assert_eq!(
        outcomes(&running),
        [1, 0, 0, 0],
        "one applied reload, no unchanged or rejected one"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn a_write_in_several_steps_is_one_reload_of_the_whole_file() {
    let (a, b) = (echo_server("a").await, echo_server("b").await);
    let dir = tempfile::tempdir().unwrap();
    let setup = |route_to| Setup::new(a.addr, b.addr, route_to);
    let (running, path) = start(dir.path(), &config(&setup("a")), true).await;

    // Not atomic: truncate, write half, write the rest, in place. Each step alone is an
    // invalid (or empty) config. After each step the test waits until the watcher has seen
    // it, so a reload that did not wait for quiet would read the partial file; the debounce
    // reads only the finished one.
    let admin = running.admin_addr();
    let text = config(&setup("b"));
    let (first, rest) = text.split_at(text.len() / 2);
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut seen = watch_events(admin).await.0;
    for step in [&b""[..], first.as_bytes(), rest.as_bytes()] {
        if step.is_empty() {
            file.set_len(0).unwrap();
        } else {
            file.write_all(step).unwrap();
        }
        seen = wait_relevant(admin, seen).await;
    }
    drop(file);

    wait_generation(&running, 2).await;
    assert_eq!(served_by(running.listener_addr("main").unwrap()).await, "b");
    // Any reload that read a partial file ran before the one that applied the whole file.
    let [applied, _, rejected, _] = outcomes(&running);
    assert_eq!(
        (applied, rejected),
        (1, 0),
        "one applied reload, none rejected"
    );
    assert_eq!(running.reloader().unwrap().failures(), 0);
    running.shutdown().await;
}
