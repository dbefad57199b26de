//! Tests of `validate`: defaults, each error's exact text and line, and hostile input.

use std::time::Duration;

use crate::config::{Balance, Config, Endpoint, HostMatch, Protocol, Role};

pub(super) const MINIMAL: &str = r#"
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

/// The Display lines of every error `text` produces (panics if it is valid).
pub(super) fn errors(text: &str) -> Vec<String> {
    match Config::from_toml_str(text) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

/// `MINIMAL` with `extra` appended.
pub(super) fn with(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

#[test]
fn defaults_are_filled_in() {
    let config = Config::from_toml_str(MINIMAL).expect("valid");
    assert_eq!(config.service.name, "checkout");
    assert_eq!(config.admin.bind, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(config.shutdown.grace, Duration::from_secs(30));

    let listener = &config.listeners[0];
    assert_eq!(listener.role, Role::Inbound);
    assert_eq!(listener.header_read_timeout, Duration::from_secs(10));
    assert_eq!(listener.max_header_bytes, 65536);

    let route = &config.routes[0];
    assert_eq!(route.name, None);
    assert_eq!(route.host, None);
    assert_eq!(route.path_prefix, "/");
    assert!(route.methods.is_empty() && route.headers.is_empty());

    let app = &config.upstreams["app"];
    assert_eq!(
        app.endpoints,
        [Endpoint {
            host: "127.0.0.1".into(),
            port: 8080
        }]
    );
    assert_eq!(app.protocol, Protocol::Http1);
    assert_eq!(app.balance, Balance::RoundRobin);
    assert_eq!(app.connect_timeout, Duration::from_secs(1));
    assert_eq!(app.request_timeout, Duration::from_secs(30));
    assert_eq!(app.idle_timeout, Duration::from_secs(90));
    assert_eq!(app.max_idle_per_endpoint, 32);
    assert_eq!(app.failure_backoff, Duration::from_secs(5));
}

#[test]
fn every_key_set() {
    let text = r#"
[service]
name = "edge"
[admin]
bind = "127.0.0.1:0"
[shutdown]
grace = "0s"
[[listeners]]
name = "gw"
bind = "[::]:8443"
role = "gateway"
header_read_timeout = "250ms"
max_header_bytes = 8192
[[routes]]
name = "pay"
listener = "gw"
host = "*.Example.com"
path_prefix = "/pay/"
methods = ["POST", "GET"]
headers = { "X-Canary" = "1" }
upstream = "pay"
[upstreams.pay]
endpoints = ["[::1]:8080", "Pay.Internal:80"]
protocol = "http2"
balance = "p2c"
connect_timeout = "1m 30s"
request_timeout = "2s"
idle_timeout = "1s"
max_idle_per_endpoint = 0
failure_backoff = "0s"
"#;
    let config = Config::from_toml_str(text).expect("valid");
    assert_eq!(config.shutdown.grace, Duration::ZERO);
    assert_eq!(
        config.listeners[0].header_read_timeout,
        Duration::from_millis(250)
    );
    let route = &config.routes[0];
    assert_eq!(route.name.as_deref(), Some("pay"));
    assert_eq!(route.host, Some(HostMatch::Suffix(".example.com".into())));
    assert_eq!(route.methods, [http::Method::POST, http::Method::GET]);
    assert_eq!(route.headers[0].0.as_str(), "x-canary");
    let pay = &config.upstreams["pay"];
    assert_eq!(
        pay.endpoints[0],
        Endpoint {
            host: "::1".into(),
            port: 8080
        }
    );
    assert_eq!(pay.endpoints[1].host, "pay.internal");
    assert_eq!((pay.protocol, pay.balance), (Protocol::Http2, Balance::P2c));
    assert_eq!(pay.connect_timeout, Duration::from_secs(90));
    assert_eq!(pay.failure_backoff, Duration::ZERO);
}

#[test]
fn undefined_references() {
    let text = with("[[routes]]\nlistener = \"nope\"\nupstream = \"pay\"\n");
    assert_eq!(
        errors(&text),
        [
            "routes[1].listener: \"nope\" is not defined (line 17)",
            "routes[1].upstream: \"pay\" is not defined (line 18)",
        ]
    );
}

#[test]
fn unknown_keys_list_the_allowed_ones() {
    let text =
        with("bogus = 1\n[[routes]]\nlistener = \"inbound\"\nupsteam = \"app\"\n[metrics]\n");
    assert_eq!(
        errors(&text),
        [
            "upstreams.app.bogus: unknown key; expected one of: endpoints, protocol, balance, \
             connect_timeout, request_timeout, body_timeout, idle_timeout, \
             max_idle_per_endpoint, failure_backoff, tls, retries, retry_on, retry_budget, \
             retry_budget_min_per_second (line 16)",
            "routes[1].upstream: missing required key (line 17)",
            "routes[1].upsteam: unknown key; expected one of: name, listener, host, path_prefix, \
             methods, headers, upstream, tracing, sampling_ratio, max_request_body (line 19)",
            "metrics: unknown key; expected one of: service, admin, shutdown, access_log, listeners, routes, \
             upstreams, tracing, stitching (line 20)",
        ]
    );
}

#[test]
fn bad_values_name_the_input() {
    let text = with(
        r#"connect_timeout = "1 sek"
request_timeout = "0s"
protocol = "http3"
max_idle_per_endpoint = -1
[[listeners]]
name = "inbound"
bind = "0.0.0.0"
role = "sideways"
max_header_bytes = 100
"#,
    );
    assert_eq!(
        errors(&text),
        [
            "upstreams.app.connect_timeout: invalid duration \"1 sek\": unknown time unit \"sek\", \
             supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few \
             variations) (line 16)",
            "upstreams.app.request_timeout: must be greater than 0 (got \"0s\") (line 17)",
            "upstreams.app.protocol: invalid value \"http3\"; expected one of: http1, http2 \
             (line 18)",
            "upstreams.app.max_idle_per_endpoint: must be between 0 and 9223372036854775807 \
             (got -1) (line 19)",
            "listeners[1].name: \"inbound\" is already used by listeners[0] (line 21)",
            "listeners[1].bind: invalid socket address \"0.0.0.0\" (expected ip:port) (line 22)",
            "listeners[1].role: invalid value \"sideways\"; expected one of: inbound, outbound, \
             gateway (line 23)",
            "listeners[1].max_header_bytes: must be between 8192 and 1048576 (got 100) (line 24)",
        ]
    );
}

#[test]
fn bind_conflicts() {
    let text = with(
        "[admin]\nbind = \"127.0.0.1:4143\"\n\
         [[listeners]]\nname = \"a\"\nbind = \"0.0.0.0:0\"\nrole = \"outbound\"\n\
         [[listeners]]\nname = \"b\"\nbind = \"0.0.0.0:0\"\nrole = \"outbound\"\n",
    );
    assert_eq!(
        errors(&text),
        ["listeners[0].bind: 0.0.0.0:4143 conflicts with admin.bind (127.0.0.1:4143) (line 7)"]
    );
}

#[test]
fn route_matchers() {
    let text = with(
        r#"[[routes]]
listener = "inbound"
host = "a.*.b"
path_prefix = "api"
methods = ["get", "POST", "POST"]
headers = { "bad header" = "x", "X-A" = "1", "x-a" = "2" }
upstream = "app"
"#,
    );
    assert_eq!(
        errors(&text),
        [
            "routes[1].host: invalid host \"a.*.b\": a wildcard must be the whole first label, \
             as in \"*.example.com\" (line 18)",
            "routes[1].path_prefix: invalid path prefix \"api\": must start with '/' (line 19)",
            "routes[1].methods[0]: method \"get\" must be uppercase: \"GET\" (line 20)",
            "routes[1].methods[2]: duplicates methods[1] (POST) (line 20)",
            "routes[1].headers.\"bad header\": invalid header name \"bad header\" (line 21)",
            "routes[1].headers.x-a: header \"x-a\" is listed twice (line 21)",
        ]
    );
}

#[test]
fn shadowed_route() {
    let text = with(
        "[[routes]]\nlistener = \"inbound\"\nupstream = \"app\"\npath_prefix = \"/\"\n\
         [[routes]]\nlistener = \"inbound\"\nupstream = \"app\"\nmethods = [\"GET\", \"PUT\"]\n\
         [[routes]]\nlistener = \"inbound\"\nupstream = \"app\"\nmethods = [\"PUT\", \"GET\"]\n",
    );
    assert_eq!(
        errors(&text),
        [
            "routes[1]: duplicates routes[0] (same listener and matchers); it could never match \
             (line 16)",
            "routes[3]: duplicates routes[2] (same listener and matchers); it could never match \
             (line 24)",
        ]
    );
}

#[test]
fn endpoints() {
    let text = with(
        "[upstreams.b]\nendpoints = []\n[upstreams.c]\nprotocol = \"http2\"\n\
         [upstreams.d]\nendpoints = [\"x\", \"::1:80\", \"a:1\", \"A:1\"]\n",
    );
    assert_eq!(
        errors(&text),
        [
            "upstreams.b.endpoints: must list at least one endpoint (line 17)",
            "upstreams.c.endpoints: missing required key (line 18)",
            "upstreams.d.endpoints[0]: invalid endpoint \"x\": missing port (expected host:port) \
             (line 21)",
            "upstreams.d.endpoints[1]: invalid endpoint \"::1:80\": an IPv6 address needs \
             brackets, as in \"[::1]:8080\" (line 21)",
            "upstreams.d.endpoints[3]: duplicates endpoints[2] (a:1) (line 21)",
        ]
    );
}

#[test]
fn missing_sections_and_keys() {
    assert_eq!(
        errors(""),
        [
            "listeners: at least one [[listeners]] table is required",
            "service: missing required table [service]",
        ]
    );
    let text = "[service]\n[[listeners]]\nbind = \"127.0.0.1:1\"\n";
    assert_eq!(
        errors(text),
        [
            "service.name: missing required key (line 1)",
            "listeners[0].name: missing required key (line 2)",
            "listeners[0].role: missing required key (line 2)",
        ]
    );
}

/// Structural errors (unknown key, wrong type) in one table don't hide errors elsewhere.
#[test]
fn three_kinds_of_error_at_once() {
    let text = r#"[service]
name = "checkout"

[[listeners]]
name = "inbound"
bind = "0.0.0.0:4143"
role = "inbound"

[[routes]]
listener = "inbound"
upstream = "app"
upsteam = "app"

[[routes]]
listener = "inbound"
path_prefix = "/pay"
upstream = "pay"

[upstreams.app]
endpoints = "127.0.0.1:8080"
"#;
    assert_eq!(
        errors(text),
        [
            "routes[0].upsteam: unknown key; expected one of: name, listener, host, path_prefix, \
             methods, headers, upstream, tracing, sampling_ratio, max_request_body (line 12)",
            "routes[1].upstream: \"pay\" is not defined (line 17)",
            "upstreams.app.endpoints: invalid type: string \"127.0.0.1:8080\", expected a \
             sequence (line 20)",
        ]
    );
}

#[test]
fn wrong_types_do_not_also_count_as_missing() {
    let text = with("[[routes]]\nlistener = 1\nupstream = [\"app\"]\nmethods = [\"GET\", 2]\n");
    assert_eq!(
        errors(&text),
        [
            "routes[1].listener: invalid type: integer `1`, expected a string (line 17)",
            "routes[1].upstream: invalid type: sequence, expected a string (line 18)",
            "routes[1].methods: invalid type: integer `2`, expected a string (line 19)",
        ]
    );
}

#[test]
fn wrong_section_shapes() {
    let text = "service = 1\nlisteners = { name = \"x\" }\nroutes = [1]\nupstreams = []\n";
    assert_eq!(
        errors(text),
        [
            "service: expected a table, found integer (line 1)",
            "listeners: expected an array of tables ([[listeners]]), found table (line 2)",
            "routes[0]: expected a table, found integer (line 3)",
            "upstreams: expected a table of upstreams ([upstreams.NAME]), found array (line 4)",
        ]
    );
}

#[test]
fn syntax_error_is_reported_alone_with_its_line() {
    let errors = errors("[service]\nname = \"x\"\n\n[[routes]\n");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("syntax error: "), "{errors:?}");
    assert!(errors[0].ends_with("(line 4)"), "{errors:?}");
}

#[test]
fn garbage_never_panics() {
    let inputs = [
        "\u{0}",
        "\u{feff}",
        "[[[",
        "=",
        "a = \"\\u{110000}\"",
        "[service]\nname = \"\u{1F600}\"\n[[listeners]]\nbind = \"\u{1F600}:80\"",
        "routes = [[], {}, \"x\"]\nupstreams = { a = 1, b = { endpoints = [[]] } }",
        "listeners = [{ name = 1, bind = 2, role = 3, max_header_bytes = 99999999999999999999 }]",
        "[upstreams.\"\"]\nendpoints = [\"[\", \"]:\", \"[::1]:\", \":\", \"\u{e9}:1\"]",
        "[[routes]]\nhost = \"*\"\nheaders = { \"\" = \"\\n\" }\nmethods = [\"\"]",
        "[admin]\nbind = 9901\n[shutdown]\ngrace = \"99999999999999999999999s\"",
    ];
    for input in inputs {
        assert!(Config::from_toml_str(input).is_err(), "{input:?} accepted");
    }
    // Every prefix of a valid file: cut anywhere, including inside strings.
    for end in 0..MINIMAL.len() {
        if let Some(prefix) = MINIMAL.get(..end) {
            let _ = Config::from_toml_str(prefix);
        }
    }
}
