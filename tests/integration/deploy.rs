//! The files under `deploy/`: every hoptrace config passes the real `hoptrace check`; the
//! YAML parses, the Kubernetes manifests validate against the Kubernetes schemas and the
//! Compose file against the Compose specification (tests/interop/validate_deploy.py, in the
//! `.venv` that tests/interop/setup.sh makes); `systemd-analyze verify` accepts the unit; and
//! `hoptrace health`, the image's health check, answers for a real admin listener; the stop
//! timeouts (systemd, Kubernetes, Compose) outlast a whole shutdown.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_hoptrace");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `hoptrace check` with no `OTEL_*` variables (the files alone must be valid).
fn check(path: &Path) {
    let mut command = Command::new(BIN);
    command.args(["check", "--config"]).arg(path);
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") {
            command.env_remove(key);
        }
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "hoptrace check {}:\n{}",
        path.display(),
        text(&output)
    );
}

fn files_under(dir: &Path, extension: &str, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, extension, found);
        } else if path.extension().is_some_and(|e| e == extension) {
            found.push(path);
        }
    }
}

#[test]
fn every_toml_under_deploy_passes_check() {
    let mut tomls = Vec::new();
    files_under(&repo().join("deploy"), "toml", &mut tomls);
    tomls.sort();
    let names: Vec<String> = tomls
        .iter()
        .map(|p| p.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "deploy/compose/buzzer/config.toml",
            "deploy/compose/fizzer/config.toml",
            "deploy/compose/hub/config.toml",
        ]
    );
    for path in &tomls {
        check(path);
    }
}

#[test]
fn yaml_kubernetes_and_compose_validate_and_configmaps_pass_check() {
    let setup = Command::new("bash")
        .arg(repo().join("tests/interop/setup.sh"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(setup.status.success(), "setup.sh failed:\n{}", text(&setup));
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(repo().join(".venv/bin/python"))
        .arg(repo().join("tests/interop/validate_deploy.py"))
        .arg(repo())
        .arg(out.path())
        .output()
        .unwrap();
    let report = text(&output);
    assert!(output.status.success(), "validate_deploy.py:\n{report}");
    for expected in [
        "deploy/compose/docker-compose.yml: valid Compose file",
        "Deployment/hub valid",
        "Deployment/fizzer valid",
        "Deployment/buzzer valid",
        "Service/hub valid",
        "Deployment/jaeger valid",
        "Service/jaeger valid",
    ] {
        assert!(report.contains(expected), "{expected:?} not in:\n{report}");
    }
    // The ConfigMaps' config.toml, as the sidecars will read them.
    let mut tomls = Vec::new();
    files_under(out.path(), "toml", &mut tomls);
    assert_eq!(tomls.len(), 3, "{report}");
    for path in &tomls {
        check(path);
    }
}

/// The longest a shutdown may take with the default `[shutdown] grace` of 30 s: the drain
/// (grace), then the span flush (max(grace, 5 s)); see src/app.rs `Running::shutdown`.
const WHOLE_SHUTDOWN_SECS: u64 = 30 + 30;

/// The numbers after `key` on each line that has it (`TimeoutStopSec=70`, `stop_grace_period:
/// 70s`).
fn values_of(text: &str, key: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix(key))
        .map(|rest| {
            let digits: String = rest
                .trim_start_matches([' ', ':', '='])
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().unwrap()
        })
        .collect()
}

#[test]
fn stop_timeouts_outlast_a_whole_shutdown() {
    let read = |path: &str| std::fs::read_to_string(repo().join(path)).unwrap();
    let (unit, kubernetes, compose) = (
        read("deploy/systemd/hoptrace.service"),
        read("deploy/kubernetes/fizzbuzz.yaml"),
        read("deploy/compose/docker-compose.yml"),
    );
    // No sidecar config here changes the grace, so each may take WHOLE_SHUTDOWN_SECS.
    let mut configs = vec![kubernetes.clone()];
    for app in ["hub", "fizzer", "buzzer"] {
        configs.push(read(&format!("deploy/compose/{app}/config.toml")));
    }
    assert!(configs.iter().all(|c| !c.contains("grace =")));

    for (file, key, count, text) in [
        ("systemd unit", "TimeoutStopSec", 1, &unit),
        (
            "Kubernetes",
            "terminationGracePeriodSeconds",
            3,
            &kubernetes,
        ),
        ("Compose", "stop_grace_period", 3, &compose),
    ] {
        let values = values_of(text, key);
        assert_eq!(values.len(), count, "{file}: {key} {values:?}");
        for value in values {
            assert!(
                value >= WHOLE_SHUTDOWN_SECS + 5,
                "{file}: {key} {value}s leaves no headroom over {WHOLE_SHUTDOWN_SECS}s"
            );
        }
    }
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        panic!("systemd-analyze is missing: test.sh installs the Debian package systemd");
    };
    assert!(version.status.success());
    // The unit names /usr/local/bin/hoptrace, which verify requires to exist: point it at the
    // binary under test, everything else as shipped.
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/hoptrace.service")).unwrap();
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hoptrace.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/hoptrace", BIN)).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    // verify exits 0 on unknown keys and bad values, but reports them: nothing is allowed.
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    assert!(
        report.trim().is_empty(),
        "systemd-analyze verify:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_command_probes_the_admin_endpoint() {
    let upstream = common::echo_server("app").await;
    let proxy =
        common::start_proxy(&common::simple_config("inbound", upstream.addr, "http1")).await;
    let admin = proxy.admin_addr();
    let health = |url: String| async move {
        tokio::process::Command::new(BIN)
            .args(["health", "--url", &url, "--timeout", "5s"])
            .output()
            .await
            .unwrap()
    };
    let live = health(format!("http://{admin}/live")).await;
    assert!(live.status.success(), "{}", text(&live));
    assert!(String::from_utf8_lossy(&live.stdout).contains("200 OK"));
    let missing = health(format!("http://{admin}/nothing-here")).await;
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    // A port nothing listens on: a closed listener's.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let refused = health(format!("http://{closed_addr}/live")).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    proxy.shutdown().await;
}
