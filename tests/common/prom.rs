//! `/metrics` read the way Prometheus would: the exposition parsed by a real parser (Python
//! `prometheus_client`'s strict OpenMetrics parser, set up by `tests/interop/setup.sh`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

use crate::common::*;

/// Every sample of `text` as `{"name", "labels", "value"}`; panics if it does not parse.
pub async fn parse_with_python(text: &str) -> Vec<Value> {
    let setup = tokio::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/setup.sh"
        ))
        .output()
        .await
        .unwrap();
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let mut parser =
        tokio::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/interop/parse_metrics.py"
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .await
        .unwrap();
    let output = parser.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "the exposition does not parse:\n{}\n---\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The value of the sample `name` with exactly `labels`.
pub fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s["name"] == name
                && labels.iter().all(|(k, v)| s["labels"][k] == *v)
                && s["labels"].as_object().unwrap().len() == labels.len()
        })
        .map(|s| s["value"].as_f64().unwrap())
}

/// `GET /metrics` on `admin`: the text and its parsed samples.
pub async fn scrape(admin: SocketAddr) -> (String, Vec<Value>) {
    let response = get(&http1_client(), format!("http://{admin}/metrics")).await;
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = body_string(response).await;
    let samples = parse_with_python(&text).await;
    (text, samples)
}
