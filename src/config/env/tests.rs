//! Tests of `apply_otel_env`: each variable, the OTLP precedence rules, and exact errors.
//! Table-driven, with a `HashMap` standing in for the environment.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Compression, Config, ExporterKind, OtlpProtocol, Secret, TracingConfig};

const FILE: &str = r#"
[service]
name = "checkout"
[[listeners]]
name = "inbound"
bind = "0.0.0.0:4143"
role = "inbound"
[[routes]]
listener = "inbound"
upstream = "app"
[upstreams.app]
endpoints = ["127.0.0.1:8080"]
"#;

/// `FILE` plus `tracing` (TOML), then `vars` applied.
fn apply(tracing: &str, vars: &[(&str, &str)]) -> Result<Config, Vec<String>> {
    let mut config = Config::from_toml_str(&format!("{FILE}{tracing}")).expect("valid file");
    let env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let before = config.clone();
    match config.apply_otel_env(|k| env.get(k).cloned()) {
        Ok(()) => Ok(config),
        Err(errors) => {
            assert_eq!(config, before, "config changed by a failed apply");
            Err(errors.iter().map(|e| e.to_string()).collect())
        }
    }
}

fn ok(tracing: &str, vars: &[(&str, &str)]) -> Config {
    apply(tracing, vars).unwrap_or_else(|e| panic!("{vars:?}: {e:?}"))
}

#[test]
fn no_variables_change_nothing() {
    let file = Config::from_toml_str(FILE).expect("valid");
    assert_eq!(ok("", &[]), file);
    // OTel env spec: empty means unset.
    let empty = [
        ("OTEL_SERVICE_NAME", ""),
        ("OTEL_TRACES_SAMPLER", " "),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
        ("OTEL_BSP_MAX_QUEUE_SIZE", ""),
        ("OTEL_PROPAGATORS", ""),
    ];
    assert_eq!(ok("", &empty), file);
}

#[test]
fn service_and_resource_attributes() {
    let c = ok(
        "",
        &[
            ("OTEL_SERVICE_NAME", "billing"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                " deployment.environment = prod ,team=a%2Cb%3Dc,, k8s.pod.name=x ,team=pay",
            ),
        ],
    );
    assert_eq!(c.service.name, "billing");
    let attrs = [
        ("deployment.environment", "prod"),
        ("team", "pay"),
        ("k8s.pod.name", "x"),
    ];
    let attrs: Vec<(String, String)> = attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(c.service.resource_attributes, attrs);
    let c = ok("", &[("OTEL_RESOURCE_ATTRIBUTES", "team=a%2Cb%3Dc")]);
    assert_eq!(c.service.resource_attributes[0].1, "a,b=c");
    // service.name from the attributes, unless OTEL_SERVICE_NAME is set.
    let c = ok("", &[("OTEL_RESOURCE_ATTRIBUTES", "service.name=cart,a=1")]);
    assert_eq!(c.service.name, "cart");
    assert_eq!(c.service.resource_attributes.len(), 1);
    let both = [
        ("OTEL_RESOURCE_ATTRIBUTES", "service.name=cart"),
        ("OTEL_SERVICE_NAME", "billing"),
    ];
    assert_eq!(ok("", &both).service.name, "billing");
}

#[test]
fn exporter_and_sampler() {
    type Case = (
        &'static [(&'static str, &'static str)],
        ExporterKind,
        f64,
        bool,
    );
    let cases: &[Case] = &[
        (
            &[("OTEL_TRACES_EXPORTER", "console")],
            ExporterKind::Stdout,
            0.5,
            true,
        ),
        (
            &[("OTEL_TRACES_EXPORTER", "NONE")],
            ExporterKind::None,
            0.5,
            true,
        ),
        (
            &[("OTEL_TRACES_SAMPLER", "always_on")],
            ExporterKind::Otlp,
            1.0,
            false,
        ),
        (
            &[("OTEL_TRACES_SAMPLER", "always_off")],
            ExporterKind::Otlp,
            0.0,
            false,
        ),
        (
            &[("OTEL_TRACES_SAMPLER", "traceidratio")],
            ExporterKind::Otlp,
            1.0,
            false,
        ),
        (
            &[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ],
            ExporterKind::Otlp,
            0.1,
            false,
        ),
        (
            &[("OTEL_TRACES_SAMPLER", "parentbased_always_on")],
            ExporterKind::Otlp,
            1.0,
            true,
        ),
        (
            &[("OTEL_TRACES_SAMPLER", "parentbased_always_off")],
            ExporterKind::Otlp,
            0.0,
            true,
        ),
        (
            &[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0"),
            ],
            ExporterKind::Otlp,
            0.0,
            true,
        ),
        // ARG is read by the ratio samplers only (OTel env spec); alone it changes nothing.
        (
            &[("OTEL_TRACES_SAMPLER_ARG", "abc")],
            ExporterKind::Otlp,
            0.5,
            true,
        ),
        (
            &[
                ("OTEL_TRACES_SAMPLER", "always_on"),
                ("OTEL_TRACES_SAMPLER_ARG", "abc"),
            ],
            ExporterKind::Otlp,
            1.0,
            false,
        ),
    ];
    for (vars, exporter, ratio, parent_based) in cases {
        let t = ok("[tracing]\nsampling_ratio = 0.5\n", vars).tracing;
        assert_eq!(
            (t.exporter, t.sampling_ratio, t.parent_based),
            (*exporter, *ratio, *parent_based),
            "{vars:?}"
        );
    }
}

#[test]
fn otlp_endpoint_and_protocol_precedence() {
    const TRACES: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    const GENERIC: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    const HTTP: (&str, &str) = ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        OtlpProtocol,
        &'static str,
    );
    let cases: &[Case] = &[
        // Protocol change alone: the default endpoint follows the protocol.
        (
            "",
            &[HTTP],
            OtlpProtocol::HttpProtobuf,
            "http://localhost:4318/v1/traces",
        ),
        (
            "[tracing.otlp]\nprotocol = \"http/protobuf\"\n",
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
            OtlpProtocol::Grpc,
            "http://localhost:4317",
        ),
        // ... but an endpoint from the file is kept (with the OTLP/HTTP path added).
        (
            "[tracing.otlp]\nendpoint = \"http://c:4317\"\n",
            &[HTTP],
            OtlpProtocol::HttpProtobuf,
            "http://c:4317/v1/traces",
        ),
        // The signal-specific protocol wins.
        (
            "",
            &[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"), HTTP],
            OtlpProtocol::Grpc,
            "http://localhost:4317",
        ),
        // Generic endpoint: OTLP/HTTP appends /v1/traces to the base path, no double slash.
        (
            "",
            &[HTTP, (GENERIC, "http://c:4318")],
            OtlpProtocol::HttpProtobuf,
            "http://c:4318/v1/traces",
        ),
        (
            "",
            &[HTTP, (GENERIC, "http://c:4318/")],
            OtlpProtocol::HttpProtobuf,
            "http://c:4318/v1/traces",
        ),
        (
            "",
            &[HTTP, (GENERIC, "https://c/otlp/")],
            OtlpProtocol::HttpProtobuf,
            "https://c/otlp/v1/traces",
        ),
        // ... gRPC uses it as is.
        (
            "",
            &[(GENERIC, "http://c:4317")],
            OtlpProtocol::Grpc,
            "http://c:4317",
        ),
        // The signal-specific endpoint is used as is and wins over the generic one.
        (
            "",
            &[
                HTTP,
                (GENERIC, "http://g:4318"),
                (TRACES, "http://t:4318/custom"),
            ],
            OtlpProtocol::HttpProtobuf,
            "http://t:4318/custom",
        ),
        (
            "",
            &[HTTP, (TRACES, "http://t:4318")],
            OtlpProtocol::HttpProtobuf,
            "http://t:4318",
        ),
        // Environment wins over the file.
        (
            "[tracing.otlp]\nendpoint = \"http://file:4317\"\n",
            &[(GENERIC, "http://env:4317")],
            OtlpProtocol::Grpc,
            "http://env:4317",
        ),
    ];
    for (file, vars, protocol, endpoint) in cases {
        let o = ok(file, vars).tracing.otlp;
        // `Uri` equality treats an empty path as "/", as HTTP does.
        assert_eq!(o.protocol, *protocol, "{file} {vars:?}");
        assert_eq!(o.endpoint, *endpoint, "{file} {vars:?}");
    }
}

#[test]
fn otlp_headers_compression_timeout_certificate() {
    let file = "[tracing.otlp]\nheaders = { \"x-api-key\" = \"file\", \"x-tenant\" = \"t\" }\n\
                timeout = \"3s\"\n";
    let o = ok(
        file,
        &[
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-ignored=1"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "X-Api-Key=env%20key , x-new=a%3Db",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "GZIP"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "9000"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/ignored.pem"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                "/client.pem",
            ),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/client.key"),
        ],
    )
    .tracing
    .otlp;
    let headers: Vec<(String, Secret)> = [
        ("x-api-key", "env key"),
        ("x-new", "a=b"),
        ("x-tenant", "t"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), Secret(v.to_string())))
    .collect();
    assert_eq!(o.headers, headers);
    assert_eq!(o.compression, Compression::Gzip);
    assert_eq!(o.timeout, Duration::from_millis(2500));
    assert_eq!(o.ca_file, Some(PathBuf::from("/ca.pem")));
    assert_eq!(o.client_cert, Some(PathBuf::from("/client.pem")));
    assert_eq!(o.client_key, Some(PathBuf::from("/client.key")));
    // OTEL_BSP_EXPORT_TIMEOUT only when no OTLP timeout variable is set.
    let o = ok(file, &[("OTEL_BSP_EXPORT_TIMEOUT", "9000")])
        .tracing
        .otlp;
    assert_eq!(o.timeout, Duration::from_secs(9));
    let o = ok(
        file,
        &[
            ("OTEL_BSP_EXPORT_TIMEOUT", "9000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "100"),
        ],
    )
    .tracing
    .otlp;
    assert_eq!(o.timeout, Duration::from_millis(100));
}

#[test]
fn batch_processor() {
    let t = ok(
        "",
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4096"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096"),
            ("OTEL_PROPAGATORS", "tracecontext,baggage"),
        ],
    )
    .tracing;
    assert_eq!(t.batch_delay, Duration::from_millis(200));
    assert_eq!((t.queue_size, t.batch_size), (4096, 4096));
    // A smaller queue alone shrinks the batch, as the SDK does.
    let t = ok("", &[("OTEL_BSP_MAX_QUEUE_SIZE", "100")]).tracing;
    assert_eq!((t.queue_size, t.batch_size), (100, 100));
    let d = TracingConfig::default();
    let t = ok("", &[("OTEL_PROPAGATORS", " TraceContext ")]).tracing;
    assert_eq!(t, d);
}

#[test]
fn propagators_replace_the_file_list_in_their_order() {
    use crate::config::Propagator as P;
    let file = "[tracing]\npropagators = [\"b3\"]\n";
    let t = ok(
        file,
        &[(
            "OTEL_PROPAGATORS",
            "xray, Jaeger,baggage,b3multi,tracecontext,b3",
        )],
    )
    .tracing;
    assert_eq!(
        t.propagators,
        [P::XRay, P::Jaeger, P::B3Multi, P::TraceContext, P::B3]
    );
    assert_eq!(ok(file, &[]).tracing.propagators, [P::B3]);
    assert!(
        ok(file, &[("OTEL_PROPAGATORS", "none")])
            .tracing
            .propagators
            .is_empty()
    );
    assert!(
        ok(file, &[("OTEL_PROPAGATORS", "baggage")])
            .tracing
            .propagators
            .is_empty()
    );
}

#[test]
fn zipkin_variables() {
    let t = ok(
        "",
        &[
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            (
                "OTEL_EXPORTER_ZIPKIN_ENDPOINT",
                "http://zipkin:9411/api/v2/spans",
            ),
            ("OTEL_EXPORTER_ZIPKIN_TIMEOUT", "2500"),
        ],
    )
    .tracing;
    assert_eq!(t.exporter, ExporterKind::Zipkin);
    assert_eq!(t.zipkin.endpoint, "http://zipkin:9411/api/v2/spans");
    assert_eq!(t.zipkin.timeout, Duration::from_millis(2500));
}

#[test]
fn errors_name_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "abc"),
            ],
            "OTEL_TRACES_SAMPLER_ARG: \"abc\" is not a number",
        ),
        (
            &[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
            ],
            "OTEL_TRACES_SAMPLER_ARG: must be between 0.0 and 1.0, got 1.5",
        ),
        (
            &[("OTEL_TRACES_SAMPLER", "jaeger_remote")],
            "OTEL_TRACES_SAMPLER: invalid value \"jaeger_remote\"; expected one of: always_on, \
             always_off, traceidratio, parentbased_always_on, parentbased_always_off, \
             parentbased_traceidratio",
        ),
        (
            &[("OTEL_TRACES_EXPORTER", "jaeger")],
            "OTEL_TRACES_EXPORTER: invalid value \"jaeger\"; expected one of: otlp, zipkin, console, \
             none",
        ),
        (
            &[("OTEL_RESOURCE_ATTRIBUTES", "a=1,oops")],
            "OTEL_RESOURCE_ATTRIBUTES: malformed member \"oops\" (expected key=value)",
        ),
        (
            &[("OTEL_RESOURCE_ATTRIBUTES", "a=%zz")],
            "OTEL_RESOURCE_ATTRIBUTES: malformed member \"a=%zz\" (expected key=value)",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
            "OTEL_EXPORTER_OTLP_PROTOCOL: \"http/json\" is not supported; use \"grpc\" or \
             \"http/protobuf\"",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp")],
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: invalid value \"udp\"; expected one of: grpc, \
             http/protobuf",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")],
            "OTEL_EXPORTER_OTLP_ENDPOINT: invalid URL \"collector:4317\": expected \
             http://host:port or https://host:port",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://c")],
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: invalid URL \"ftp://c\": the scheme must be \
             http or https",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_HEADERS", "x-a=1,Bearer s3cret")],
            "OTEL_EXPORTER_OTLP_HEADERS: member 2 is not key=value (not shown: it may hold a \
             secret)",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-key=s3cret%0A")],
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS: value of \"x-key\" is not a valid header value",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")],
            "OTEL_EXPORTER_OTLP_COMPRESSION: invalid value \"zstd\"; expected one of: none, gzip",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")],
            "OTEL_EXPORTER_OTLP_TIMEOUT: \"10s\" is not a whole number of milliseconds",
        ),
        (
            &[("OTEL_BSP_SCHEDULE_DELAY", "0")],
            "OTEL_BSP_SCHEDULE_DELAY: must be greater than 0 (got 0)",
        ),
        (
            &[("OTEL_BSP_MAX_QUEUE_SIZE", "many")],
            "OTEL_BSP_MAX_QUEUE_SIZE: \"many\" is not an integer",
        ),
        (
            &[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096")],
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE: must not exceed the queue size (2048), got 4096",
        ),
        (
            &[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0")],
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE: must be at least 1 (got 0)",
        ),
        (
            &[("OTEL_PROPAGATORS", "tracecontext,ottrace")],
            "OTEL_PROPAGATORS: \"ottrace\" is not supported; supported: tracecontext, baggage \
             (passed through), b3, b3multi, jaeger, xray, none",
        ),
        (
            &[("OTEL_PROPAGATORS", "none,b3")],
            "OTEL_PROPAGATORS: \"none\" cannot be combined with other propagators",
        ),
    ];
    for (vars, expected) in cases {
        let found = apply("", vars).expect_err(expected);
        assert_eq!(found, [*expected], "{vars:?}");
        assert!(
            !found.iter().any(|e| e.contains("s3cret")),
            "secret shown: {found:?}"
        );
    }
}

#[test]
fn every_error_is_reported_and_nothing_is_applied() {
    let found = apply(
        "",
        &[
            ("OTEL_SERVICE_NAME", "billing"),
            ("OTEL_TRACES_EXPORTER", "jaeger"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "-1"),
        ],
    )
    .expect_err("invalid");
    assert_eq!(
        found,
        [
            "OTEL_BSP_MAX_QUEUE_SIZE: must be at least 1 (got -1)",
            "OTEL_TRACES_EXPORTER: invalid value \"jaeger\"; expected one of: otlp, zipkin, console, \
             none",
        ]
    );
}
