//! Parsers for single config values (durations, addresses, hosts, endpoints, methods,
//! headers). Each returns the typed value or a message naming the bad input.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::config::{Endpoint, HostMatch, OtlpProtocol};

pub(super) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// A timeout: zero would fire at once, so it is rejected.
pub(super) fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d.is_zero() {
        return Err(format!("must be greater than 0 (got {s:?})"));
    }
    Ok(d)
}

/// A size in bytes: a plain number of bytes, or a number with a unit: `KiB`, `MiB`, `GiB`
/// (powers of 1024) or `kB`, `MB`, `GB` (powers of 1000), e.g. `"1MiB"`, `"64 KiB"`.
pub(super) fn byte_size(s: &str) -> Result<u64, String> {
    const UNITS: &[(&str, u64)] = &[
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("kB", 1_000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("B", 1),
    ];
    let bad =
        || format!("invalid size {s:?} (expected e.g. \"512KiB\", \"1MiB\", \"10MB\", \"4096\")");
    let text = s.trim();
    let (number, multiplier) = UNITS
        .iter()
        .find_map(|(unit, m)| text.strip_suffix(unit).map(|n| (n.trim_end(), *m)))
        .unwrap_or((text, 1));
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(multiplier).ok_or_else(bad)?;
    if bytes == 0 {
        return Err(format!("must be greater than 0 (got {s:?})"));
    }
    Ok(bytes)
}

pub(super) fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("invalid socket address {s:?} (expected ip:port)"))
}

/// One of a fixed set of names, e.g. `role = "inbound"`.
pub(in crate::config) fn one_of<T: Copy>(s: &str, options: &[(&str, T)]) -> Result<T, String> {
    options
        .iter()
        .find(|(name, _)| *name == s)
        .map(|&(_, value)| value)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
            format!("invalid value {s:?}; expected one of: {}", names.join(", "))
        })
}

pub(super) fn non_empty(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

/// An integer within `min..=max`, as a `usize`.
pub(super) fn in_range(n: i64, min: i64, max: i64) -> Result<usize, String> {
    if n < min || n > max {
        return Err(format!("must be between {min} and {max} (got {n})"));
    }
    usize::try_from(n).map_err(|_| format!("{n} does not fit this platform"))
}

/// A count that must be positive (queue and batch sizes).
pub(in crate::config) fn at_least_one(n: i64) -> Result<usize, String> {
    if n < 1 {
        return Err(format!("must be at least 1 (got {n})"));
    }
    usize::try_from(n).map_err(|_| format!("{n} does not fit this platform"))
}

/// A sampling probability. NaN fails the range check too.
pub(in crate::config) fn ratio(r: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!("must be between 0.0 and 1.0, got {r}"))
    }
}

/// An OTLP collector URL: `http` or `https`, with a host.
pub(in crate::config) fn collector_url(s: &str) -> Result<http::Uri, String> {
    let bad = |why: &str| format!("invalid URL {s:?}: {why}");
    let uri: http::Uri = s.parse().map_err(|_| bad("not a valid URI"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(_) => return Err(bad("the scheme must be http or https")),
        None => return Err(bad("expected http://host:port or https://host:port")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("missing host"));
    }
    Ok(uri)
}

/// OTLP spec, "OTLP/HTTP Request": traces are POSTed to `/v1/traces` under the base URL.
/// Appends it to the URL's path without doubling a trailing `/`; the query is kept.
pub(in crate::config) fn append_traces_path(uri: &http::Uri) -> Result<http::Uri, String> {
    let base = uri.path().trim_end_matches('/');
    let path = match uri.query() {
        Some(query) => format!("{base}/v1/traces?{query}"),
        None => format!("{base}/v1/traces"),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        path.parse()
            .map_err(|_| format!("invalid URL path {path:?}"))?,
    );
    http::Uri::from_parts(parts).map_err(|e| format!("invalid URL {uri}: {e}"))
}

/// For OTLP/HTTP, a URL with no path means the collector's base URL: add `/v1/traces`.
/// gRPC URLs name the service by the method, so they are used as given.
pub(in crate::config) fn otlp_endpoint(
    uri: http::Uri,
    protocol: OtlpProtocol,
) -> Result<http::Uri, String> {
    match protocol {
        OtlpProtocol::HttpProtobuf if matches!(uri.path(), "" | "/") => append_traces_path(&uri),
        _ => Ok(uri),
    }
}

/// The endpoint used when none is configured: the OTLP spec's defaults
/// (gRPC port 4317; HTTP port 4318 with path `/v1/traces`).
pub(in crate::config) fn default_otlp_endpoint(protocol: OtlpProtocol) -> http::Uri {
    match protocol {
        OtlpProtocol::Grpc => http::Uri::from_static("http://localhost:4317"),
        OtlpProtocol::HttpProtobuf => http::Uri::from_static("http://localhost:4318/v1/traces"),
    }
}

/// `api.example.com` or `*.example.com`, matched against the request's host without its port.
pub(super) fn host(s: &str) -> Result<HostMatch, String> {
    let bad = |why: &str| format!("invalid host {s:?}: {why}");
    if s.contains("://") {
        return Err(bad("a host has no scheme"));
    }
    // RFC 4343: DNS names compare case-insensitively; keep one form.
    let lower = s.to_ascii_lowercase();
    if let Some(suffix) = lower.strip_prefix("*.") {
        dns_name(suffix).map_err(bad)?;
        return Ok(HostMatch::Suffix(format!(".{suffix}")));
    }
    if lower.contains('*') {
        return Err(bad(
            "a wildcard must be the whole first label, as in \"*.example.com\"",
        ));
    }
    dns_name(&lower).map_err(bad)?;
    Ok(HostMatch::Exact(lower))
}

/// RFC 1123 §2.1 host name syntax (letters, digits, hyphens; labels of 1 to 63 characters,
/// 253 in all). IPv4 literals pass as well.
fn dns_name(name: &str) -> Result<(), &'static str> {
    if name.contains(':') {
        return Err("a host has no port");
    }
    if name.is_empty() || name.len() > 253 {
        return Err("a host name has 1 to 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated label has 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("only letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label cannot start or end with '-'");
        }
    }
    Ok(())
}

/// `host:port` with an explicit port; IPv6 literals in brackets (RFC 3986 §3.2.2).
pub(super) fn endpoint(s: &str) -> Result<Endpoint, String> {
    let bad = |why: &str| format!("invalid endpoint {s:?}: {why}");
    if s.contains("://") {
        return Err(bad("no scheme; write host:port"));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (ip, port) = rest
            .split_once("]:")
            .ok_or_else(|| bad("expected [ipv6]:port"))?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| bad("not an IPv6 address"))?;
        (ip.to_string(), port)
    } else {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| bad("missing port (expected host:port)"))?;
        if host.contains(':') {
            return Err(bad("an IPv6 address needs brackets, as in \"[::1]:8080\""));
        }
        let host = host.to_ascii_lowercase();
        dns_name(&host).map_err(bad)?;
        (host, port)
    };
    let port = match port.parse::<u16>() {
        Ok(port) if port != 0 => port,
        _ => return Err(bad("the port must be a number from 1 to 65535")),
    };
    Ok(Endpoint { host, port })
}

/// An HTTP method token (RFC 9110 §9.1). Methods are case-sensitive, so `get` is not `GET`:
/// require the uppercase form rather than silently matching nothing.
pub(super) fn method(s: &str) -> Result<http::Method, String> {
    if s.bytes().any(|b| b.is_ascii_lowercase()) {
        let upper = s.to_ascii_uppercase();
        return Err(format!("method {s:?} must be uppercase: {upper:?}"));
    }
    http::Method::from_bytes(s.as_bytes()).map_err(|_| format!("invalid HTTP method {s:?}"))
}

/// Stored lowercase (RFC 9110 §5.1: field names are case-insensitive).
pub(in crate::config) fn header_name(s: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("invalid header name {s:?}"))
}

pub(super) fn header_value(s: &str) -> Result<http::HeaderValue, String> {
    http::HeaderValue::from_str(s).map_err(|_| format!("invalid header value {s:?}"))
}

/// Matched against the request path; a query or fragment could never match.
pub(super) fn path_prefix(s: &str) -> Result<String, String> {
    let bad = |why: &str| format!("invalid path prefix {s:?}: {why}");
    if !s.starts_with('/') {
        return Err(bad("must start with '/'"));
    }
    if s.contains(['?', '#']) {
        return Err(bad("must not contain '?' or '#'"));
    }
    http::uri::PathAndQuery::try_from(s).map_err(|_| bad("not a valid URI path"))?;
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_sizes() {
        assert_eq!(byte_size("4096"), Ok(4096));
        assert_eq!(byte_size("512KiB"), Ok(512 << 10));
        assert_eq!(byte_size("1 MiB"), Ok(1 << 20));
        assert_eq!(byte_size("2GiB"), Ok(2 << 30));
        assert_eq!(byte_size("10kB"), Ok(10_000));
        assert_eq!(byte_size("10MB"), Ok(10_000_000));
        assert_eq!(byte_size("7B"), Ok(7));
        for bad in [
            "",
            "MiB",
            "1.5MiB",
            "-1",
            "1 MeB",
            "1mib",
            "99999999999999999999GiB",
        ] {
            assert!(byte_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            byte_size("0KiB"),
            Err("must be greater than 0 (got \"0KiB\")".into())
        );
    }

    use super::*;

    #[test]
    fn collector_urls() {
        let url = |s: &str, p| collector_url(s).and_then(|u| otlp_endpoint(u, p));
        let http = OtlpProtocol::HttpProtobuf;
        let grpc = OtlpProtocol::Grpc;
        let ok = |s: &str| Ok(s.parse::<http::Uri>().unwrap());
        assert_eq!(url("http://c:4318", http), ok("http://c:4318/v1/traces"));
        assert_eq!(url("http://c:4318/", http), ok("http://c:4318/v1/traces"));
        assert_eq!(url("https://c/otlp", http), ok("https://c/otlp"));
        assert_eq!(url("http://c:4317", grpc), ok("http://c:4317"));
        assert_eq!(url("http://c:4317/", grpc), ok("http://c:4317/"));
        let append = |s: &str| append_traces_path(&s.parse().unwrap());
        assert_eq!(append("http://c/otlp/"), ok("http://c/otlp/v1/traces"));
        assert_eq!(
            append("http://c/otlp?a=1"),
            ok("http://c/otlp/v1/traces?a=1")
        );
        assert_eq!(
            url("ftp://c", grpc),
            Err(r#"invalid URL "ftp://c": the scheme must be http or https"#.into())
        );
        for bad in ["c:4317", "/v1/traces", "", "http://", "http://a b"] {
            assert!(collector_url(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            default_otlp_endpoint(http).to_string(),
            "http://localhost:4318/v1/traces"
        );
    }

    #[test]
    fn ratios_and_counts() {
        assert_eq!(ratio(0.0), Ok(0.0));
        assert_eq!(ratio(1.0), Ok(1.0));
        assert_eq!(
            ratio(1.5),
            Err("must be between 0.0 and 1.0, got 1.5".into())
        );
        assert!(ratio(f64::NAN).is_err());
        assert!(ratio(-0.1).is_err());
        assert_eq!(at_least_one(1), Ok(1));
        assert_eq!(at_least_one(0), Err("must be at least 1 (got 0)".into()));
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host("API.Example.com"),
            Ok(HostMatch::Exact("api.example.com".into()))
        );
        assert_eq!(
            host("*.Example.com"),
            Ok(HostMatch::Suffix(".example.com".into()))
        );
        assert_eq!(
            host("*.internal"),
            Ok(HostMatch::Suffix(".internal".into()))
        );
        for bad in [
            "*",
            "*.",
            "a.*.b",
            "*foo.com",
            "x.com:80",
            "http://x.com",
            "",
            "a..b",
            "-a.b",
        ] {
            assert!(host(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn endpoints() {
        let ep = |h: &str, p| {
            Ok(Endpoint {
                host: h.into(),
                port: p,
            })
        };
        assert_eq!(endpoint("127.0.0.1:8080"), ep("127.0.0.1", 8080));
        assert_eq!(endpoint("App.Internal:80"), ep("app.internal", 80));
        assert_eq!(endpoint("[::1]:8080"), ep("::1", 8080));
        for bad in [
            "app",
            "app:0",
            "app:65536",
            "::1:80",
            "[::1]",
            "[x]:80",
            "http://a:1",
            ":80",
            "a:",
        ] {
            assert!(endpoint(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn methods_and_paths() {
        assert_eq!(
            method("PURGE"),
            Ok(http::Method::from_bytes(b"PURGE").unwrap())
        );
        assert_eq!(
            method("get"),
            Err(r#"method "get" must be uppercase: "GET""#.into())
        );
        assert!(method("G T").is_err());
        assert!(method("").is_err());
        assert_eq!(path_prefix("/api/"), Ok("/api/".into()));
        for bad in ["api", "/a?b", "/a#b", "/a b", ""] {
            assert!(path_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }
}
