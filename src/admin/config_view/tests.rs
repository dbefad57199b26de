use serde_json::json;

use super::*;

/// The example file plus an OTLP API key and a wildcard-host route with a header matcher.
fn example_with_secret() -> Config {
    let text = std::fs::read_to_string("config.example.toml")
        .unwrap()
        .replace(
            "# headers = { \"x-api-key\" = \"...\" }",
            "headers = { \"x-api-key\" = \"SECRET-123\" }",
        );
    assert!(text.contains("SECRET-123"), "example file changed");
    Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn debug_output_never_shows_a_secret() {
    let config = example_with_secret();
    assert_eq!(config.tracing.otlp.headers[0].1.0, "SECRET-123");
    for text in [format!("{config:?}"), format!("{config:#?}")] {
        assert!(!text.contains("SECRET-123"), "secret in Debug output");
        assert!(text.contains("x-api-key"));
    }
}

#[test]
fn the_view_uses_the_toml_names_and_masks_secrets() {
    let config = example_with_secret();
    let v = view(&config);
    assert!(!v.to_string().contains("SECRET-123"), "secret in the view");
    assert_eq!(
        v["tracing"]["otlp"]["headers"],
        json!({"x-api-key": "****"})
    );
    assert_eq!(v["tracing"]["otlp"]["protocol"], "grpc");
    assert_eq!(v["tracing"]["otlp"]["endpoint"], "http://127.0.0.1:4317/");
    assert_eq!(v["tracing"]["batch_delay"], "5s");
    assert_eq!(v["tracing"]["trace_id_header"], "x-trace-id");
    assert_eq!(v["shutdown"]["grace"], "30s");
    assert_eq!(
        v["stitching"],
        json!({
            "enabled": true,
            "min_confidence": 0.9,
            "max_candidates": 64,
            "max_inflight": 4096,
            "max_models": 1024,
            "linger": "50ms",
            "content_headers": ["x-request-id"],
            "report_interval": "1m",
        })
    );
    assert_eq!(
        v["listeners"][0],
        json!({
            "name": "inbound",
            "bind": "0.0.0.0:4143",
            "role": "inbound",
            "header_read_timeout": "10s",
            "max_header_bytes": 65536,
            "tls": null,
            "trace": {"incoming": "continue"},
            "max_headers": 100,
            "max_connections": null,
        })
    );
    assert_eq!(v["listeners"][2]["trace"]["incoming"], "restart");
    assert_eq!(v["tracing"]["propagators"], json!(["tracecontext", "b3"]));
    assert_eq!(v["tracing"]["keep_errors"], true);
    assert_eq!(v["tracing"]["keep_slower_than"], "500ms");
    assert_eq!(
        v["tracing"]["zipkin"],
        json!({"endpoint": "http://localhost:9411/api/v2/spans", "timeout": "10s"})
    );
    assert_eq!(v["routes"][3]["host"], "*.inventory.internal");
    assert_eq!(
        v["routes"][4],
        json!({
            "name": "api-pay-canary",
            "listener": "edge",
            "host": "api.example.com",
            "path_prefix": "/pay/",
            "methods": ["POST"],
            "headers": {"x-canary": "1"},
            "upstream": "payments-canary",
            "tracing": true,
            "sampling_ratio": null,
            "max_request_body": null,
        })
    );
    assert_eq!(
        v["upstreams"]["payments"],
        json!({
            "endpoints": ["10.0.1.10:8080", "10.0.1.11:8080"],
            "protocol": "http1",
            "balance": "p2c",
            "connect_timeout": "250ms",
            "request_timeout": "5s",
            "body_timeout": "1m",
            "idle_timeout": "1m 30s",
            "max_idle_per_endpoint": 32,
            "failure_backoff": "5s",
            "tls": null,
            "retries": 1,
            "retry_on": [503],
            "retry_budget": 0.2,
            "retry_budget_min_per_second": 10,
        })
    );
    assert_eq!(
        v["upstreams"]["inventory"]["endpoints"],
        json!(["inventory.internal:9090", "[fd00::12]:9090"])
    );
}

/// The view written back as TOML reads into the same config (secrets aside): the key names,
/// shapes and value formats are the file's, and cannot drift from the parser's.
#[test]
fn the_view_reads_back_as_the_same_config() {
    let mut config = example_with_secret();
    config.tracing.otlp.headers[0].1 = crate::config::Secret(MASK.to_owned());
    let mut v = view(&config);
    // Set by the environment only: not TOML keys.
    v["service"]
        .as_object_mut()
        .unwrap()
        .remove("resource_attributes");
    v["tracing"].as_object_mut().unwrap().remove("parent_based");
    let toml = toml::to_string(&without_nulls(v)).unwrap();
    let back = Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}\n---\n{toml}"));
    assert_eq!(back, config);
}

/// TOML has no null: an unset optional key is left out.
fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(map) => map
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k, without_nulls(v)))
            .collect(),
        Value::Array(items) => items.into_iter().map(without_nulls).collect(),
        other => other,
    }
}

#[test]
fn the_body_has_generation_config_and_reload() {
    let config = example_with_secret();
    let b = body(3, &config, None);
    assert_eq!(b["generation"], 3);
    assert_eq!(b["reload"], Value::Null);
    assert_eq!(b["config"], view(&config));
}

/// TLS settings show their file paths; a key file's contents never appear.
#[test]
fn tls_files_are_shown_by_path_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let write = |name: &str, contents: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    };
    let key_pem = ca.signing_key.serialize_pem();
    let cert = write("cert.pem", &ca.cert.pem());
    let key = write("key.pem", &key_pem);
    let toml = format!(
        "[service]\nname = \"s\"\n[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nrole = \"inbound\"\n\
         [listeners.tls]\ncert = '{cert}'\nkey = '{key}'\n\
         [[routes]]\nlistener = \"l\"\nupstream = \"u\"\n\
         [upstreams.u]\nendpoints = [\"127.0.0.1:1\"]\n[upstreams.u.tls]\nca = '{cert}'\n\
         client_cert = '{cert}'\nclient_key = '{key}'\n"
    );
    let config = Config::from_toml_str(&toml).unwrap();
    let v = view(&config);
    assert_eq!(
        v["listeners"][0]["tls"],
        json!({"cert": cert, "key": key, "client_ca": null, "client_auth": "none"})
    );
    assert_eq!(
        v["upstreams"]["u"]["tls"],
        json!({"enabled": true, "ca": cert, "server_name": null, "client_cert": cert, "client_key": key})
    );
    let key_body = key_pem.lines().nth(1).unwrap();
    assert!(
        !v.to_string().contains(key_body),
        "key contents in the view"
    );
    assert!(
        !format!("{config:?}").contains(key_body),
        "key contents in Debug"
    );
}
