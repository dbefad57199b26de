//! The shipped example config and the invalid fixtures, loaded through `Config::load` exactly
//! as `hoptrace check` and startup do.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fixtures;
use hoptrace::config::{Balance, Config, HostMatch, LoadError, Protocol, Role};

fn manifest_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[test]
fn example_config_is_valid() {
    let config = Config::load(&manifest_path("config.example.toml"))
        .unwrap_or_else(|e| panic!("config.example.toml must validate:\n{e}"));

    assert_eq!(config.service.name, "checkout");
    let inbound = &config.listeners[0];
    assert_eq!(inbound.name, "inbound");
    assert_eq!(inbound.bind, "0.0.0.0:4143".parse().unwrap());
    assert_eq!(inbound.role, Role::Inbound);
    assert_eq!(config.listeners[1].bind, "127.0.0.1:4140".parse().unwrap());
    assert_eq!(config.listeners[1].role, Role::Outbound);

    let payments = config
        .routes
        .iter()
        .find(|r| r.name.as_deref() == Some("payments"));
    let payments = payments.expect("payments route");
    assert_eq!(
        payments.host,
        Some(HostMatch::Exact("payments.internal".into()))
    );

    let healthz = config.routes.iter().find(|r| r.path_prefix == "/healthz");
    assert!(!healthz.expect("healthz route").tracing);
    assert!(payments.tracing);
    assert_eq!(
        config.tracing.trace_id_header.as_ref().map(|h| h.as_str()),
        Some("x-trace-id")
    );
    assert_eq!(config.tracing.otlp.endpoint, "http://127.0.0.1:4317");

    let app = &config.upstreams["app"];
    assert_eq!(app.endpoints[0].to_string(), "127.0.0.1:8080");
    assert_eq!(config.upstreams["payments"].balance, Balance::P2c);
    assert_eq!(config.upstreams["payments"].endpoints.len(), 2);
    assert_eq!(config.upstreams["inventory"].protocol, Protocol::Http2);
    assert_eq!(
        config.upstreams["inventory"].idle_timeout,
        Duration::from_secs(300)
    );
}

#[test]
fn missing_file_names_the_path() {
    let path = manifest_path("tests/fixtures/no-such-file.toml");
    let err = Config::load(&path).expect_err("missing file");
    assert!(matches!(err, LoadError::Io { .. }));
    assert!(
        err.to_string().starts_with("cannot read config file "),
        "{err}"
    );
    assert!(err.to_string().contains("no-such-file.toml"), "{err}");
}

/// Each fixture lists in `# expect:` comments exactly the error lines it must produce.
/// `Config::load` resolves the fixtures' relative TLS paths from the working directory, which
/// `cargo test` sets to the repository root; checked first so a different one fails clearly.
#[test]
fn invalid_fixtures_fail_with_expected_errors() {
    let cwd = std::env::current_dir().expect("working directory");
    assert_eq!(
        cwd.canonicalize().ok(),
        fixtures::repo_root().canonicalize().ok(),
        "run from the repository root: the fixtures' relative paths start there"
    );
    let mut failures = Vec::new();
    for path in fixtures::invalid_fixtures() {
        let printed = match Config::load(&path) {
            Ok(_) => {
                failures.push(format!("{}: loaded without error", path.display()));
                continue;
            }
            Err(e) => e.to_string(),
        };
        if let Err(e) = fixtures::compare(&path, &printed) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
