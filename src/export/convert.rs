//! `SpanRecord` → OpenTelemetry `SpanData`, following the stable HTTP semantic conventions.
//! Runs in the export task, never on the request path.

use std::borrow::Cow;

use opentelemetry::trace::{
    Link, SpanContext, SpanId as OtelSpanId, SpanKind as OtelKind, Status, TraceFlags as OtelFlags,
    TraceId as OtelTraceId, TraceState as OtelTraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::trace::span::{Attribute, AttributeValue, SpanKind, SpanRecord};

pub fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("hoptrace")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

pub fn to_span_data(span: &SpanRecord, scope: &InstrumentationScope) -> SpanData {
    let trace_state = span
        .tracestate
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<OtelTraceState>().ok())
        .unwrap_or_default();
    let span_context = SpanContext::new(
        OtelTraceId::from_bytes(span.trace_id.0),
        OtelSpanId::from_bytes(span.span_id.0),
        OtelFlags::new(span.flags.0),
        false,
        trace_state,
    );
    let mut events = SpanEvents::default();
    if let Some(conn) = span.connection {
        events.events.push(opentelemetry::trace::Event::new(
            "connection acquired",
            span.start + conn.at,
            vec![KeyValue::new(
                "hoptrace.connection",
                if conn.reused { "reused" } else { "new" },
            )],
            0,
        ));
    }
    if let Some(at) = span.first_byte {
        events.events.push(opentelemetry::trace::Event::new(
            "response headers received",
            span.start + at,
            Vec::new(),
            0,
        ));
    }
    SpanData {
        span_context,
        parent_span_id: span
            .parent_span_id
            .map_or(OtelSpanId::INVALID, |id| OtelSpanId::from_bytes(id.0)),
        parent_span_is_remote: span.parent_is_remote,
        span_kind: match span.kind {
            SpanKind::Server => OtelKind::Server,
            SpanKind::Client => OtelKind::Client,
        },
        name: Cow::Owned(span.name()),
        start_time: span.start,
        end_time: span.start + span.duration,
        attributes: attributes(span),
        dropped_attributes_count: 0,
        events,
        links: links(span),
        status: status(span),
        instrumentation_scope: scope.clone(),
    }
}

fn links(span: &SpanRecord) -> SpanLinks {
    let mut links = SpanLinks::default();
    for link in &span.links {
        let trace_state = link
            .tracestate
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<OtelTraceState>().ok())
            .unwrap_or_default();
        let context = SpanContext::new(
            OtelTraceId::from_bytes(link.trace_id.0),
            OtelSpanId::from_bytes(link.span_id.0),
            OtelFlags::new(link.flags.0),
            link.remote,
            trace_state,
        );
        links
            .links
            .push(Link::new(context, extra_attributes(&link.attributes), 0));
    }
    links
}

fn extra_attributes(attributes: &[Attribute]) -> Vec<KeyValue> {
    let mut out = Vec::with_capacity(attributes.len());
    visit_extra(attributes, &mut out);
    out
}

pub(crate) fn visit_extra(attributes: &[Attribute], out: &mut impl AttributeSink) {
    for a in attributes {
        match a.value {
            AttributeValue::Bool(b) => out.bool(a.key, b),
            AttributeValue::F64(f) => out.double(a.key, f),
            AttributeValue::Str(s) => out.string(a.key, Text::Static(s)),
        }
    }
}

/// A span's status: the OTLP status code (0 unset, 2 error) and its message.
/// Semantic conventions: 5xx is an error on both kinds, 4xx only on CLIENT spans (for a
/// server a 4xx is the caller's mistake); transport failures are errors.
pub(crate) fn status_code(span: &SpanRecord) -> (i32, &'static str) {
    if let Some(kind) = span.error_type {
        return (2, kind);
    }
    match (span.kind, span.status) {
        (_, Some(code)) if code >= 500 => (2, ""),
        (SpanKind::Client, Some(code)) if code >= 400 => (2, ""),
        _ => (0, ""),
    }
}

fn status(span: &SpanRecord) -> Status {
    match status_code(span) {
        (2, message) => Status::error(message),
        _ => Status::Unset,
    }
}

/// A string attribute value (or a captured header's key), borrowed where the record
/// holds it: the OTLP encoder copies it onto the wire, the `KeyValue` form keeps static
/// and shared strings without a copy.
pub(crate) enum Text<'a> {
    Static(&'static str),
    Shared(&'a std::sync::Arc<str>),
    Borrowed(&'a str),
    Owned(String),
}

impl Text<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Text::Static(s) => s,
            Text::Shared(s) => s,
            Text::Borrowed(s) => s,
            Text::Owned(s) => s,
        }
    }
}

/// Where a span's attributes go, in order: `Vec<KeyValue>` (the OpenTelemetry model) or
/// the OTLP protobuf encoder (`super::wire`), which writes them straight to the wire.
pub(crate) trait AttributeSink {
    fn string(&mut self, key: &'static str, value: Text<'_>);
    fn int(&mut self, key: &'static str, value: i64);
    fn bool(&mut self, key: &'static str, value: bool);
    fn double(&mut self, key: &'static str, value: f64);
    /// A `string[]` attribute (captured headers), its key built from a prefix and a name.
    fn strings(&mut self, prefix: &'static str, name: &str, values: &[Cow<'_, str>]);
}

impl AttributeSink for Vec<KeyValue> {
    fn string(&mut self, key: &'static str, value: Text<'_>) {
        let value: opentelemetry::Value = match value {
            Text::Static(s) => s.into(),
            Text::Shared(s) => s.clone().into(),
            Text::Borrowed(s) => s.to_string().into(),
            Text::Owned(s) => s.into(),
        };
        self.push(KeyValue::new(key, value));
    }

    fn int(&mut self, key: &'static str, value: i64) {
        self.push(KeyValue::new(key, value));
    }

    fn bool(&mut self, key: &'static str, value: bool) {
        self.push(KeyValue::new(key, value));
    }

    fn double(&mut self, key: &'static str, value: f64) {
        self.push(KeyValue::new(key, value));
    }

    fn strings(&mut self, prefix: &'static str, name: &str, values: &[Cow<'_, str>]) {
        let values = values
            .iter()
            .map(|v| opentelemetry::StringValue::from(v.to_string()))
            .collect();
        self.push(KeyValue::new(
            format!("{prefix}{name}"),
            opentelemetry::Value::Array(opentelemetry::Array::String(values)),
        ));
    }
}

fn attributes(span: &SpanRecord) -> Vec<KeyValue> {
    let mut attrs = Vec::with_capacity(16);
    visit_attributes(span, &mut attrs);
    attrs
}

/// A span's attributes, following the stable HTTP semantic conventions, in the order both
/// exports use.
pub(crate) fn visit_attributes(span: &SpanRecord, attrs: &mut impl AttributeSink) {
    match known_method(&span.method) {
        Some(name) => attrs.string("http.request.method", Text::Static(name)),
        // Semantic conventions: a method outside the known set is `_OTHER`, with the
        // original kept beside it.
        None => {
            attrs.string("http.request.method", Text::Static("_OTHER"));
            attrs.string(
                "http.request.method_original",
                Text::Borrowed(span.method.as_str()),
            );
        }
    }
    let (host, port, credentials) = host_and_port(span);
    if let Some(code) = span.status {
        attrs.int("http.response.status_code", i64::from(code));
    }
    if let Some(kind) = span.error_type {
        attrs.string("error.type", Text::Static(kind));
    }
    if let Some(reason) = span.kept_reason {
        attrs.string("hoptrace.kept_reason", Text::Static(reason));
    }
    if let Some(route) = &span.route {
        // Shared with the route table: no copy.
        attrs.string("http.route", Text::Shared(route));
    }
    let query = span
        .target
        .query()
        .map(|q| redact_query(q, &span.redact_query_keys));
    match span.kind {
        SpanKind::Server => {
            attrs.string("url.path", Text::Borrowed(span.target.path()));
            attrs.string("url.scheme", Text::Static(span.scheme));
            if let Some(query) = query {
                attrs.string("url.query", Text::Owned(query));
            }
            let client = crate::text::ip(span.client_addr.ip());
            let client_port = i64::from(span.client_addr.port());
            attrs.string("client.address", Text::Borrowed(&client));
            attrs.int("client.port", client_port);
            attrs.string("network.peer.address", Text::Borrowed(&client));
            attrs.int("network.peer.port", client_port);
            match host {
                Some(host) => attrs.string("server.address", Text::Borrowed(host)),
                None => attrs.string(
                    "server.address",
                    Text::Borrowed(&crate::text::ip(span.local_addr.ip())),
                ),
            }
            attrs.int(
                "server.port",
                i64::from(port.unwrap_or(span.local_addr.port())),
            );
            if let Some(agent) = span.user_agent.as_ref().and_then(|v| v.to_str().ok()) {
                attrs.string("user_agent.original", Text::Borrowed(agent));
            }
        }
        SpanKind::Client => {
            let host = host.unwrap_or_default();
            // The scheme's default port: 443 when the upstream connection is TLS.
            let default_port = if span.scheme == "https" { 443 } else { 80 };
            let port = port.unwrap_or(default_port);
            attrs.string("server.address", Text::Borrowed(host));
            attrs.int("server.port", i64::from(port));
            // Semantic conventions (url.full): credentials in the URL are replaced, not
            // dropped, so the reader knows some were sent.
            let userinfo = if credentials {
                "REDACTED:REDACTED@"
            } else {
                ""
            };
            let mut full = crate::text::StackText::<256>::default();
            full.push_str(span.scheme);
            full.push_str("://");
            full.push_str(userinfo);
            full.push_str(host);
            if port != default_port {
                full.push_str(":");
                full.push_u16(port);
            }
            full.push_str(span.target.path());
            if let Some(query) = &query {
                full.push_str("?");
                full.push_str(query);
            }
            attrs.string("url.full", Text::Borrowed(&full));
            if let Some(peer) = &span.peer {
                attrs.string("network.peer.address", Text::Borrowed(peer.host()));
                if let Some(port) = peer.port_u16() {
                    attrs.int("network.peer.port", i64::from(port));
                }
            }
            if span.resend_count > 0 {
                attrs.int("http.request.resend_count", i64::from(span.resend_count));
            }
        }
    }
    attrs.string(
        "network.protocol.version",
        Text::Static(match span.version {
            http::Version::HTTP_09 => "0.9",
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_2 => "2",
            http::Version::HTTP_3 => "3",
            _ => "1.1",
        }),
    );
    header_attributes(attrs, "http.request.header.", &span.request_headers);
    header_attributes(attrs, "http.response.header.", &span.response_headers);
    visit_extra(&span.attributes, attrs);
}

/// The methods the HTTP semantic conventions know (RFC 9110 and PATCH), as static strings;
/// `None` for any other (`PURGE`, or `get` in lower case).
pub(crate) fn known_method(method: &http::Method) -> Option<&'static str> {
    use http::Method;
    Some(match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return None,
    })
}

/// Captured headers as `string[]` attributes (semantic conventions), one per header name
/// with all its values in order.
fn header_attributes(
    attrs: &mut impl AttributeSink,
    prefix: &'static str,
    headers: &[(http::HeaderName, http::HeaderValue)],
) {
    let mut names: Vec<&http::HeaderName> = Vec::new();
    for (name, _) in headers {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    for name in names {
        let values: Vec<Cow<'_, str>> = headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v.as_bytes()))
            .collect();
        attrs.strings(prefix, name.as_str(), &values);
    }
}

/// Host and port the request was addressed to: the absolute-form target's authority, else
/// `Host`, and whether it carried credentials (`user:pass@`, never included). Borrowed
/// from the record.
fn host_and_port(span: &SpanRecord) -> (Option<&str>, Option<u16>, bool) {
    if let Some(a) = span.target.authority() {
        return (Some(a.host()), a.port_u16(), a.as_str().contains('@'));
    }
    let Some(value) = span.host.as_ref() else {
        return (None, None, false);
    };
    if let Some((host, port)) = plain_host(value.as_bytes()) {
        return (Some(host), port, false);
    }
    let Ok(host) = value.to_str() else {
        return (None, None, false);
    };
    let (credentials, authority) = match host.rsplit_once('@') {
        Some((_, host)) => (true, host),
        None => (false, host),
    };
    let (host, port) = split_port(authority);
    (Some(host), port, credentials)
}

/// `Host` as nearly every request sends it (`name` or `name:port`, the name of letters,
/// digits, dots and dashes) split in one pass, with what `split_port` would give; `None` for
/// anything else (userinfo, brackets, a port that is not 1-5 digits up to 65535), which
/// goes the general way.
fn plain_host(host: &[u8]) -> Option<(&str, Option<u16>)> {
    let mut end = host.len();
    let mut port: Option<u32> = None;
    for (i, &b) in host.iter().enumerate() {
        match (b, port) {
            (b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-', None) => {}
            (b':', None) if i > 0 => {
                end = i;
                port = Some(0);
            }
            (b'0'..=b'9', Some(p)) if i - end <= 5 => port = Some(p * 10 + u32::from(b - b'0')),
            _ => return None,
        }
    }
    let name = std::str::from_utf8(host.get(..end)?).ok()?;
    match port {
        None => Some((name, None)),
        Some(p) if end + 1 < host.len() => Some((name, Some(u16::try_from(p).ok()?))),
        Some(_) => None,
    }
}

/// `host[:port]` (an IPv6 address in brackets) split as `http::uri::Authority` does: a
/// port that is not a number is no port.
fn split_port(authority: &str) -> (&str, Option<u16>) {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => {
            (host, port.parse().ok())
        }
        _ => (authority, None),
    }
}

/// Replaces the values of sensitive query keys with `REDACTED` (case-insensitive keys).
pub fn redact_query(query: &str, keys: &[String]) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if keys.iter().any(|k| k.eq_ignore_ascii_case(key)) => {
                format!("{key}=REDACTED")
            }
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A CLIENT span with credentials and a sensitive query value in its target, for unit tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_record() -> SpanRecord {
    use crate::trace::context::{SpanId, TraceFlags, TraceId};
    SpanRecord {
        kind: SpanKind::Client,
        trace_id: TraceId([1; 16]),
        span_id: SpanId([2; 8]),
        parent_span_id: None,
        parent_is_remote: false,
        flags: TraceFlags(1),
        debug: false,
        tracestate: None,
        start: std::time::SystemTime::UNIX_EPOCH,
        duration: std::time::Duration::ZERO,
        method: http::Method::GET,
        route: None,
        target: "http://alice:s3cret@pay.internal:8080/charge?api_key=k&x=1"
            .parse()
            .unwrap(),
        host: None,
        scheme: "http",
        version: http::Version::HTTP_11,
        client_addr: "127.0.0.1:1".parse().unwrap(),
        local_addr: "127.0.0.1:2".parse().unwrap(),
        user_agent: None,
        peer: None,
        status: Some(200),
        error_type: None,
        resend_count: 0,
        connection: None,
        first_byte: None,
        request_headers: Vec::new(),
        response_headers: Vec::new(),
        redact_query_keys: vec!["api_key".to_string()].into(),
        kept_reason: None,
        attributes: Vec::new(),
        links: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_target_never_reach_url_full() {
        let span = record();
        let attrs = attributes(&span);
        let get = |k: &str| {
            attrs
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(
            get("url.full").as_deref(),
            Some("http://REDACTED:REDACTED@pay.internal:8080/charge?api_key=REDACTED&x=1")
        );
        assert_eq!(get("server.address").as_deref(), Some("pay.internal"));
        assert!(
            attrs
                .iter()
                .all(|kv| !kv.value.to_string().contains("s3cret"))
        );
    }

    #[test]
    fn links_and_the_kept_reason_are_exported() {
        use crate::trace::context::{SpanId, TraceFlags, TraceId};
        use crate::trace::span::SpanLink;
        let mut span = record();
        span.kept_reason = Some("error");
        span.links.push(SpanLink {
            trace_id: TraceId([3; 16]),
            span_id: SpanId([4; 8]),
            flags: TraceFlags(1),
            tracestate: Some(http::HeaderValue::from_static("k=v")),
            remote: true,
            attributes: vec![crate::trace::span::Attribute {
                key: "hoptrace.link.reason",
                value: crate::trace::span::AttributeValue::Str("restart"),
            }],
        });
        let data = to_span_data(&span, &scope());
        assert!(
            data.attributes
                .iter()
                .any(|kv| kv.key.as_str() == "hoptrace.kept_reason" && kv.value.as_str() == "error")
        );
        let [link] = &data.links.links[..] else {
            panic!("one link expected: {:?}", data.links);
        };
        assert_eq!(
            link.span_context.trace_id(),
            OtelTraceId::from_bytes([3; 16])
        );
        assert_eq!(link.span_context.span_id(), OtelSpanId::from_bytes([4; 8]));
        assert!(link.span_context.is_sampled() && link.span_context.is_remote());
        assert_eq!(link.span_context.trace_state().get("k"), Some("v"));
        assert_eq!(
            link.attributes,
            [KeyValue::new("hoptrace.link.reason", "restart")]
        );
    }

    fn record() -> SpanRecord {
        super::test_record()
    }

    #[test]
    fn an_unknown_method_is_other_with_its_original_and_names_the_span_http() {
        let mut span = record();
        span.method = http::Method::from_bytes(b"PURGE").unwrap();
        span.route = Some("/cache".into());
        let data = to_span_data(&span, &scope());
        let get = |k: &str| {
            data.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(get("http.request.method").as_deref(), Some("_OTHER"));
        assert_eq!(
            get("http.request.method_original").as_deref(),
            Some("PURGE")
        );
        assert_eq!(data.name, "HTTP /cache");
        span.route = None;
        assert_eq!(span.name(), "HTTP");
        // A known one has no `method_original`.
        span.method = http::Method::DELETE;
        let data = to_span_data(&span, &scope());
        assert!(
            data.attributes
                .iter()
                .all(|kv| kv.key.as_str() != "http.request.method_original")
        );
        assert_eq!(data.name, "DELETE");
    }

    #[test]
    fn a_host_header_splits_as_an_authority_would() {
        let cases = [
            ("shop.example:8443", "shop.example", Some(8443)),
            ("shop.example", "shop.example", None),
            ("[::1]:80", "[::1]", Some(80)),
            ("[::1]", "[::1]", None),
            ("h:", "h", None),
            ("h:x1", "h", None),
            ("h:99999", "h", None),
            ("::1", "::1", None),
        ];
        for (input, host, port) in cases {
            assert_eq!(split_port(input), (host, port), "{input}");
            if let Ok(a) = input.parse::<http::uri::Authority>() {
                assert_eq!((a.host(), a.port_u16()), (host, port), "http: {input}");
            }
        }
    }

    #[test]
    fn the_plain_host_fast_path_agrees_with_the_general_split() {
        let alphabet = b"ab.-Z09:@[]_ ";
        let mut rng = fastrand::Rng::with_seed(11);
        let mut fast = 0;
        for _ in 0..20_000 {
            let len = rng.usize(0..12);
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            if rng.bool() {
                // A port-like tail, sometimes out of range or too long.
                bytes.extend_from_slice(format!(":{}", rng.u32(0..200_000)).as_bytes());
            }
            let input = std::str::from_utf8(&bytes).unwrap();
            if let Some(got) = plain_host(&bytes) {
                fast += 1;
                assert!(!input.contains('@'), "{input}");
                assert_eq!(got, split_port(input), "{input:?}");
            }
        }
        // The fast path is taken for the usual shapes.
        assert!(fast > 1000, "{fast}");
        assert_eq!(
            plain_host(b"shop.example:8443"),
            Some(("shop.example", Some(8443)))
        );
        assert_eq!(plain_host(b"shop.example"), Some(("shop.example", None)));
        assert_eq!(plain_host(b"h:99999"), None);
        assert_eq!(plain_host(b"u@h"), None);
        assert_eq!(plain_host(b"[::1]:80"), None);
    }

    #[test]
    fn sensitive_query_values_are_redacted() {
        let keys = vec!["token".to_string(), "sig".to_string()];
        assert_eq!(
            redact_query("a=1&Token=abc&sig=x&b=2&flag", &keys),
            "a=1&Token=REDACTED&sig=REDACTED&b=2&flag"
        );
    }
}
