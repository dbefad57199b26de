//! Tests of `[tracing]`, `[tracing.otlp]` and the per-route tracing keys: defaults, every
//! key, and each error's exact text and line. `MINIMAL` ends on line 15, so appended text
//! starts on line 16.

use std::path::PathBuf;
use std::time::Duration;

use super::super::tests::{MINIMAL, errors, with};
use crate::config::{
    Compression, Config, DEFAULT_REDACT_QUERY_KEYS, ExporterKind, OtlpProtocol, Secret,
    TracingConfig,
};

fn tracing(text: &str) -> TracingConfig {
    match Config::from_toml_str(text) {
        Ok(config) => config.tracing,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

#[test]
fn defaults_without_a_tracing_table() {
    let config = Config::from_toml_str(MINIMAL).expect("valid");
    assert_eq!(config.tracing, TracingConfig::default());
    assert!(config.service.resource_attributes.is_empty());
    let t = &config.tracing;
    assert_eq!(t.exporter, ExporterKind::Otlp);
    assert_eq!(
        (t.sampling_ratio, t.parent_based, t.traceresponse),
        (1.0, true, true)
    );
    assert_eq!(t.trace_id_header, None);
    assert!(t.capture_request_headers.is_empty() && t.capture_response_headers.is_empty());
    assert_eq!(t.redact_query_keys, DEFAULT_REDACT_QUERY_KEYS);
    assert_eq!((t.queue_size, t.batch_size), (2048, 512));
    assert_eq!(t.batch_delay, Duration::from_secs(5));
    assert_eq!(t.otlp.protocol, OtlpProtocol::Grpc);
    assert_eq!(t.otlp.endpoint, "http://localhost:4317");
    assert_eq!(t.otlp.compression, Compression::None);
    assert_eq!(t.otlp.timeout, Duration::from_secs(10));
    assert_eq!((t.otlp.headers.len(), t.otlp.ca_file.clone()), (0, None));
    let route = &config.routes[0];
    assert_eq!((route.tracing, route.sampling_ratio), (true, None));
    // Empty tables are the same as absent ones.
    assert_eq!(
        tracing(&with("[tracing]\n[tracing.otlp]\n")),
        TracingConfig::default()
    );
}

#[test]
fn every_key_set() {
    let t = tracing(&with(
        r#"[tracing]
exporter = "stdout"
sampling_ratio = 0.25
traceresponse = false
trace_id_header = "X-Trace-Id"
capture_request_headers = ["X-Request-Id", "user-agent"]
capture_response_headers = ["content-type"]
redact_query_keys = ["Token", "sig"]
queue_size = 100
batch_size = 100
batch_delay = "250ms"
[tracing.otlp]
protocol = "http/protobuf"
endpoint = "https://collector.example.com:4318"
headers = { "X-Api-Key" = "s3cret", "x-tenant" = "a" }
compression = "gzip"
timeout = "2s"
ca_file = "/etc/ssl/collector-ca.pem"
"#,
    ));
    assert_eq!(t.exporter, ExporterKind::Stdout);
    assert_eq!(
        (t.sampling_ratio, t.parent_based, t.traceresponse),
        (0.25, true, false)
    );
    assert_eq!(
        t.trace_id_header.as_ref().map(|h| h.as_str()),
        Some("x-trace-id")
    );
    let names = |v: &[http::HeaderName]| v.iter().map(|h| h.to_string()).collect::<Vec<_>>();
    assert_eq!(
        names(&t.capture_request_headers),
        ["x-request-id", "user-agent"]
    );
    assert_eq!(names(&t.capture_response_headers), ["content-type"]);
    assert_eq!(t.redact_query_keys, ["token", "sig"]);
    assert_eq!((t.queue_size, t.batch_size), (100, 100));
    assert_eq!(t.batch_delay, Duration::from_millis(250));
    let o = &t.otlp;
    assert_eq!(o.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(o.endpoint, "https://collector.example.com:4318/v1/traces");
    assert_eq!(
        o.headers,
        [
            ("x-api-key".to_owned(), Secret("s3cret".into())),
            ("x-tenant".to_owned(), Secret("a".into()))
        ]
    );
    assert!(
        !format!("{o:?}").contains("s3cret"),
        "secret in Debug output"
    );
    assert_eq!(o.compression, Compression::Gzip);
    assert_eq!(o.timeout, Duration::from_secs(2));
    assert_eq!(o.ca_file, Some(PathBuf::from("/etc/ssl/collector-ca.pem")));
}

#[test]
fn otlp_endpoint_defaults_and_paths_follow_the_protocol() {
    let endpoint = |otlp: &str| {
        tracing(&with(&format!("[tracing.otlp]\n{otlp}")))
            .otlp
            .endpoint
    };
    assert_eq!(
        endpoint("protocol = \"http/protobuf\"\n"),
        "http://localhost:4318/v1/traces"
    );
    assert_eq!(
        endpoint("protocol = \"http/protobuf\"\nendpoint = \"http://c:4318/\"\n"),
        "http://c:4318/v1/traces"
    );
    assert_eq!(
        endpoint("protocol = \"http/protobuf\"\nendpoint = \"http://c/custom/path\"\n"),
        "http://c/custom/path"
    );
    assert_eq!(endpoint("endpoint = \"http://c:4317\"\n"), "http://c:4317");
}

#[test]
fn integer_ratios_and_batch_default_shrinks_to_the_queue() {
    let t = tracing(&with("[tracing]\nsampling_ratio = 0\nqueue_size = 64\n"));
    assert_eq!(
        (t.sampling_ratio, t.queue_size, t.batch_size),
        (0.0, 64, 64)
    );
    assert_eq!(
        tracing(&with("[tracing]\nsampling_ratio = 1\n")).sampling_ratio,
        1.0
    );
    let t = tracing(&with(
        "[tracing]\nredact_query_keys = []\ncapture_request_headers = []\n",
    ));
    assert!(t.redact_query_keys.is_empty() && t.capture_request_headers.is_empty());
}

#[test]
fn route_keys() {
    let text = with(
        "[[routes]]\nlistener = \"inbound\"\npath_prefix = \"/healthz\"\nupstream = \"app\"\n\
         tracing = false\nsampling_ratio = 0.1\n",
    );
    let config = Config::from_toml_str(&text).expect("valid");
    assert_eq!(
        (config.routes[1].tracing, config.routes[1].sampling_ratio),
        (false, Some(0.1))
    );
    let text = with(
        "[[routes]]\nlistener = \"inbound\"\npath_prefix = \"/a\"\nupstream = \"app\"\n\
         tracing = \"no\"\nsampling_ratio = 2\n",
    );
    assert_eq!(
        errors(&text),
        [
            "routes[1].tracing: invalid type: string \"no\", expected a boolean (line 20)",
            "routes[1].sampling_ratio: must be between 0.0 and 1.0, got 2 (line 21)",
        ]
    );
}

#[test]
fn tracing_value_errors() {
    let text = with(
        r#"[tracing]
exporter = "jaeger"
sampling_ratio = 1.5
trace_id_header = "x trace"
capture_request_headers = ["Authorization", "x-a", "X-A", ""]
capture_response_headers = ["set-cookie", "cookie"]
redact_query_keys = ["token", "", "TOKEN"]
queue_size = 0
batch_delay = "0s"
"#,
    );
    assert_eq!(
        errors(&text),
        [
            "tracing.exporter: invalid value \"jaeger\"; expected one of: otlp, zipkin, stdout, \
             none (line 17)",
            "tracing.sampling_ratio: must be between 0.0 and 1.0, got 1.5 (line 18)",
            "tracing.trace_id_header: invalid header name \"x trace\" (line 19)",
            "tracing.capture_request_headers[0]: \"authorization\" carries credentials and is \
             never recorded (line 20)",
            "tracing.capture_request_headers[2]: duplicates capture_request_headers[1] (x-a) \
             (line 20)",
            "tracing.capture_request_headers[3]: invalid header name \"\" (line 20)",
            "tracing.capture_response_headers[0]: \"set-cookie\" carries credentials and is \
             never recorded (line 21)",
            "tracing.capture_response_headers[1]: \"cookie\" carries credentials and is never \
             recorded (line 21)",
            "tracing.redact_query_keys[1]: must not be empty (line 22)",
            "tracing.redact_query_keys[2]: duplicates redact_query_keys[0] (token) (line 22)",
            "tracing.queue_size: must be at least 1 (got 0) (line 23)",
            "tracing.batch_delay: must be greater than 0 (got \"0s\") (line 24)",
        ]
    );
}

#[test]
fn batch_larger_than_queue() {
    let text = with("[tracing]\nqueue_size = 100\nbatch_size = 512\n");
    assert_eq!(
        errors(&text),
        ["tracing.batch_size: must not exceed queue_size (100), got 512 (line 18)"]
    );
    let text = with("[tracing]\nbatch_size = 4096\n");
    assert_eq!(
        errors(&text),
        ["tracing.batch_size: must not exceed queue_size (2048), got 4096 (line 17)"]
    );
    let text = with("[tracing]\nbatch_size = 0\n");
    assert_eq!(
        errors(&text),
        ["tracing.batch_size: must be at least 1 (got 0) (line 17)"]
    );
}

#[test]
fn otlp_value_errors_never_show_secrets() {
    let text = with(
        "[tracing.otlp]\nprotocol = \"http/json\"\nendpoint = \"collector:4317\"\n\
         headers = { \"bad name\" = \"a\", \"x-key\" = \"s3cret\\n\", \"X-A\" = \"1\", \"x-a\" = \"2\" }\n\
         compression = \"zstd\"\ntimeout = \"0s\"\nca_file = \"\"\n",
    );
    let found = errors(&text);
    assert_eq!(
        found,
        [
            "tracing.otlp.protocol: invalid value \"http/json\"; expected one of: grpc, \
             http/protobuf (line 17)",
            "tracing.otlp.endpoint: invalid URL \"collector:4317\": expected http://host:port or \
             https://host:port (line 18)",
            "tracing.otlp.headers.\"bad name\": invalid header name \"bad name\" (line 19)",
            "tracing.otlp.headers.x-a: header \"x-a\" is listed twice (line 19)",
            "tracing.otlp.headers.x-key: invalid header value (not shown: it may be a secret) \
             (line 19)",
            "tracing.otlp.compression: invalid value \"zstd\"; expected one of: none, gzip \
             (line 20)",
            "tracing.otlp.timeout: must be greater than 0 (got \"0s\") (line 21)",
            "tracing.otlp.ca_file: must not be empty (line 22)",
        ]
    );
    assert!(!found.iter().any(|e| e.contains("s3cret")));
}

#[test]
fn structural_errors() {
    let text = with(
        "[tracing]\nsample_rate = 0.5\ntraceresponse = \"yes\"\nqueue_size = 1.5\n\
         [tracing.otlp]\nendpiont = \"x\"\n",
    );
    assert_eq!(
        errors(&text),
        [
            "tracing.sample_rate: unknown key; expected one of: exporter, sampling_ratio, \
             traceresponse, trace_id_header, capture_request_headers, capture_response_headers, \
             redact_query_keys, queue_size, batch_size, batch_delay, propagators, keep_errors, keep_slower_than, zipkin, otlp (line 17)",
            "tracing.traceresponse: invalid type: string \"yes\", expected a boolean (line 18)",
            "tracing.queue_size: invalid type: floating point `1.5`, expected i64 (line 19)",
            "tracing.otlp.endpiont: unknown key; expected one of: protocol, endpoint, headers, \
             compression, timeout, ca_file, client_cert, client_key (line 21)",
        ]
    );
    assert_eq!(
        errors(&format!("tracing = 1\n{MINIMAL}")),
        ["tracing: expected a table, found integer (line 1)"]
    );
    assert_eq!(
        errors(&with("[tracing]\notlp = \"grpc\"\n")),
        ["tracing.otlp: expected a table, found string (line 17)"]
    );
}
