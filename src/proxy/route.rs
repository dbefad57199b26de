//! The route table of one listener: which route a request matches.
//!
//! A request matches a route when every matcher the route sets matches (host, path prefix,
//! method, headers). Among matching routes the most specific wins, in this order:
//! exact host over `*.suffix` host (longer suffix first) over no host; then the longest
//! `path_prefix`; then a route with `methods` over one without; then more header matchers;
//! then file order.
//!
//! The table is sorted once when built and indexed: routes are bucketed by exact host, by
//! wildcard suffix and "no host", and within a bucket by the first path segment of their
//! prefix. A lookup visits only the buckets the request's host can reach (its exact host, then
//! each of its suffixes, longest first, then no-host), in specificity order, and in each only
//! the routes sharing its first path segment (then the `/` routes). So a lookup costs about the
//! number of host labels plus the routes that could actually match, not the table size, and
//! allocates nothing.

use std::cmp::Reverse;
use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::config::HostMatch;

/// One compiled route. `T` is what the route leads to (an upstream in the proxy).
#[derive(Debug)]
pub struct Route<T> {
    /// `name` if the route has one, else its `path_prefix`: the span's route template.
    pub template: std::sync::Arc<str>,
    /// Position in the config's `routes` array.
    pub index: usize,
    host: Option<HostMatch>,
    path_prefix: Box<str>,
    methods: Box<[Method]>,
    headers: Box<[(HeaderName, HeaderValue)]>,
    /// `false`: no span, `traceparent` passed through untouched.
    pub tracing: bool,
    /// Overrides the global sampling ratio for new traces on this route.
    pub sampling_ratio: Option<f64>,
    pub target: T,
}

/// Matchers of a route, as the config gives them.
pub struct RouteSpec {
    pub name: Option<String>,
    pub index: usize,
    pub host: Option<HostMatch>,
    pub path_prefix: String,
    pub methods: Vec<Method>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub tracing: bool,
    pub sampling_ratio: Option<f64>,
}

#[derive(Debug)]
pub struct RouteTable<T> {
    /// Sorted by specificity, most specific first.
    routes: Box<[Route<T>]>,
    /// Lowercase exact host → its routes.
    exact: HashMap<Box<str>, Bucket>,
    /// Lowercase `.suffix` (with the dot) → its routes.
    suffix: HashMap<Box<str>, Bucket>,
    any_host: Bucket,
}

/// Routes of one host class, by the first segment of their path prefix. Indices point into
/// `RouteTable::routes` and keep its order.
#[derive(Debug, Default)]
struct Bucket {
    /// First segment (`"api"` for `/api/v2`) → routes.
    by_segment: HashMap<Box<str>, Vec<u32>>,
    /// Routes whose prefix is `/`: they match every path.
    root: Vec<u32>,
}

/// Tables up to this size are scanned rather than looked up (measured: the index costs about
/// as much as scanning 16 routes; `cargo bench --bench route_match`).
const SCAN_MAX: usize = 16;

/// Longest host name looked up through the index (DNS allows 253); longer ones are scanned.
const MAX_HOST: usize = 255;

/// The parts of a request that routing looks at.
pub struct RequestInfo<'a> {
    /// Host without port, from the absolute-form target or the `Host` header.
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

impl<T> RouteTable<T> {
    pub fn new(specs: impl IntoIterator<Item = (RouteSpec, T)>) -> Self {
        let mut routes: Vec<Route<T>> = specs
            .into_iter()
            .map(|(spec, target)| Route {
                template: spec.name.unwrap_or_else(|| spec.path_prefix.clone()).into(),
                index: spec.index,
                host: spec.host,
                path_prefix: spec.path_prefix.into_boxed_str(),
                methods: spec.methods.into_boxed_slice(),
                headers: spec.headers.into_boxed_slice(),
                tracing: spec.tracing,
                sampling_ratio: spec.sampling_ratio,
                target,
            })
            .collect();
        // Stable sort: equal specificity keeps file order.
        routes.sort_by_key(|r| Reverse(r.specificity()));
        let mut table = RouteTable {
            routes: routes.into_boxed_slice(),
            exact: HashMap::new(),
            suffix: HashMap::new(),
            any_host: Bucket::default(),
        };
        for (i, route) in table.routes.iter().enumerate() {
            let bucket = match &route.host {
                Some(HostMatch::Exact(h)) => table
                    .exact
                    .entry(h.to_ascii_lowercase().into())
                    .or_default(),
                Some(HostMatch::Suffix(s)) => table
                    .suffix
                    .entry(s.to_ascii_lowercase().into())
                    .or_default(),
                None => &mut table.any_host,
            };
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            match first_segment(&route.path_prefix) {
                Some(segment) => bucket.by_segment.entry(segment.into()).or_default().push(i),
                None => bucket.root.push(i),
            }
        }
        table
    }

    pub fn find(&self, req: &RequestInfo<'_>) -> Option<&Route<T>> {
        if self.routes.len() <= SCAN_MAX {
            // A short scan beats hashing the host.
            return self.routes.iter().find(|r| r.matches(req));
        }
        let mut buf = [0u8; MAX_HOST];
        let host = match req.host {
            Some(host) => {
                let host = host.strip_suffix('.').unwrap_or(host);
                match lowercase(host, &mut buf) {
                    Some(lower) => Some(lower),
                    // Too long to index (not a valid DNS name anyway): check every route.
                    None => return self.routes.iter().find(|r| r.matches(req)),
                }
            }
            None => None,
        };
        let segment = first_segment(req.path);
        let in_bucket = |bucket: &Bucket| self.find_in(bucket, segment, req);
        if let Some(host) = host {
            if let Some(found) = self.exact.get(host).and_then(in_bucket) {
                return Some(found);
            }
            // Every suffix `.b.c`, `.c` of `a.b.c`, longest first.
            let mut rest = host;
            while let Some(dot) = rest.get(1..).and_then(|r| r.find('.')) {
                let suffix = rest.get(dot + 1..).unwrap_or_default();
                if let Some(found) = self.suffix.get(suffix).and_then(in_bucket) {
                    return Some(found);
                }
                rest = suffix;
            }
        }
        in_bucket(&self.any_host)
    }

    fn find_in(
        &self,
        bucket: &Bucket,
        segment: Option<&str>,
        req: &RequestInfo<'_>,
    ) -> Option<&Route<T>> {
        let by_segment = segment
            .and_then(|s| bucket.by_segment.get(s))
            .map(Vec::as_slice)
            .unwrap_or_default();
        by_segment
            .iter()
            .chain(&bucket.root)
            .filter_map(|&i| self.routes.get(i as usize))
            .find(|r| r.matches(req))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route<T>> {
        self.routes.iter()
    }
}

impl<T> Route<T> {
    fn specificity(&self) -> (u8, usize, usize, bool, usize) {
        let (class, host_len) = match &self.host {
            Some(HostMatch::Exact(h)) => (2, h.len()),
            Some(HostMatch::Suffix(s)) => (1, s.len()),
            None => (0, 0),
        };
        (
            class,
            host_len,
            self.path_prefix.len(),
            !self.methods.is_empty(),
            self.headers.len(),
        )
    }

    fn matches(&self, req: &RequestInfo<'_>) -> bool {
        if let Some(want) = &self.host {
            match req.host {
                Some(host) if host_matches(want, host) => {}
                _ => return false,
            }
        }
        if !path_matches(&self.path_prefix, req.path) {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.contains(req.method) {
            return false;
        }
        self.headers
            .iter()
            .all(|(name, value)| req.headers.get_all(name).iter().any(|v| v == value))
    }
}

fn host_matches(want: &HostMatch, host: &str) -> bool {
    // A fully qualified name may end in a dot: "api.example.com." is "api.example.com".
    let host = host.strip_suffix('.').unwrap_or(host);
    match want {
        HostMatch::Exact(exact) => host.eq_ignore_ascii_case(exact),
        HostMatch::Suffix(suffix) => {
            // `*.example.com` needs at least one character before `.example.com`.
            host.len() > suffix.len()
                && host
                    .as_bytes()
                    .get(host.len() - suffix.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix.as_bytes()))
        }
    }
}

/// Prefixes match whole path segments: `/api` matches `/api` and `/api/x`, not `/apix`.
/// A prefix ending in `/` matches every path that starts with it.
fn path_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

/// `/api/v2` → `api`; `/` or `` → none.
fn first_segment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let segment = rest.split('/').next().unwrap_or_default();
    (!segment.is_empty()).then_some(segment)
}

/// `host` in ASCII lowercase, in `buf`; `None` when it does not fit.
fn lowercase<'b>(host: &str, buf: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let out = buf.get_mut(..host.len())?;
    for (o, b) in out.iter_mut().zip(host.bytes()) {
        *o = b.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

/// The host part of a `Host` header value or authority: port and IPv6 brackets removed.
pub fn host_without_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // IPv6 literal: "[::1]:8080" → "::1".
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn spec(index: usize, host: Option<&str>, prefix: &str) -> RouteSpec {
        RouteSpec {
            name: None,
            index,
            host: host.map(|h| match h.strip_prefix('*') {
                Some(s) => HostMatch::Suffix(s.to_string()),
                None => HostMatch::Exact(h.to_string()),
            }),
            path_prefix: prefix.to_string(),
            methods: vec![],
            headers: vec![],
            tracing: true,
            sampling_ratio: None,
        }
    }

    fn find(
        table: &RouteTable<&'static str>,
        host: Option<&str>,
        method: Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<&'static str> {
        table
            .find(&RequestInfo {
                host,
                path,
                method: &method,
                headers,
            })
            .map(|r| r.target)
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let t = RouteTable::new([
            (spec(0, None, "/"), "root"),
            (spec(1, None, "/api"), "api"),
            (spec(2, None, "/api/v2"), "v2"),
            (spec(3, None, "/static/"), "static"),
        ]);
        let h = HeaderMap::new();
        assert_eq!(find(&t, None, Method::GET, "/", &h), Some("root"));
        assert_eq!(find(&t, None, Method::GET, "/api", &h), Some("api"));
        assert_eq!(find(&t, None, Method::GET, "/api/x", &h), Some("api"));
        assert_eq!(find(&t, None, Method::GET, "/apix", &h), Some("root"));
        assert_eq!(find(&t, None, Method::GET, "/api/v2/pay", &h), Some("v2"));
        assert_eq!(find(&t, None, Method::GET, "/api/v20", &h), Some("api"));
        assert_eq!(
            find(&t, None, Method::GET, "/static/a.css", &h),
            Some("static")
        );
        assert_eq!(find(&t, None, Method::GET, "/static", &h), Some("root"));
    }

    #[test]
    fn host_exact_beats_wildcard_beats_none() {
        let t = RouteTable::new([
            (spec(0, None, "/"), "any"),
            (spec(1, Some("*.example.com"), "/"), "wild"),
            (spec(2, Some("*.eu.example.com"), "/"), "wild-eu"),
            (spec(3, Some("api.example.com"), "/"), "exact"),
        ]);
        let h = HeaderMap::new();
        assert_eq!(
            find(&t, Some("api.example.com"), Method::GET, "/", &h),
            Some("exact")
        );
        assert_eq!(
            find(&t, Some("API.Example.COM."), Method::GET, "/", &h),
            Some("exact")
        );
        assert_eq!(
            find(&t, Some("www.example.com"), Method::GET, "/", &h),
            Some("wild")
        );
        assert_eq!(
            find(&t, Some("a.b.example.com"), Method::GET, "/", &h),
            Some("wild")
        );
        assert_eq!(
            find(&t, Some("x.eu.example.com"), Method::GET, "/", &h),
            Some("wild-eu")
        );
        // The wildcard needs a label before the suffix.
        assert_eq!(
            find(&t, Some("example.com"), Method::GET, "/", &h),
            Some("any")
        );
        assert_eq!(
            find(&t, Some("other.org"), Method::GET, "/", &h),
            Some("any")
        );
        assert_eq!(find(&t, None, Method::GET, "/", &h), Some("any"));
    }

    #[test]
    fn host_is_more_specific_than_path() {
        let t = RouteTable::new([
            (spec(0, None, "/admin"), "admin"),
            (spec(1, Some("api.example.com"), "/"), "api"),
        ]);
        let h = HeaderMap::new();
        assert_eq!(
            find(&t, Some("api.example.com"), Method::GET, "/admin", &h),
            Some("api")
        );
        assert_eq!(
            find(&t, Some("x.org"), Method::GET, "/admin", &h),
            Some("admin")
        );
    }

    #[test]
    fn methods_and_headers_narrow_a_route() {
        let mut post = spec(0, None, "/");
        post.methods = vec![Method::POST, Method::PUT];
        let mut canary = spec(1, None, "/");
        canary.headers = vec![(
            HeaderName::from_static("x-canary"),
            HeaderValue::from_static("1"),
        )];
        let t = RouteTable::new([
            (post, "write"),
            (canary, "canary"),
            (spec(2, None, "/"), "default"),
        ]);
        let mut h = HeaderMap::new();
        assert_eq!(find(&t, None, Method::POST, "/x", &h), Some("write"));
        assert_eq!(find(&t, None, Method::GET, "/x", &h), Some("default"));
        h.append("x-canary", HeaderValue::from_static("0"));
        assert_eq!(find(&t, None, Method::GET, "/x", &h), Some("default"));
        h.append("x-canary", HeaderValue::from_static("1"));
        assert_eq!(find(&t, None, Method::GET, "/x", &h), Some("canary"));
    }

    #[test]
    fn no_match_is_none_and_ties_keep_file_order() {
        let t = RouteTable::new([
            (spec(0, None, "/a"), "first"),
            (spec(1, None, "/a"), "second"),
        ]);
        let h = HeaderMap::new();
        assert_eq!(find(&t, None, Method::GET, "/a", &h), Some("first"));
        assert_eq!(find(&t, None, Method::GET, "/b", &h), None);
    }

    #[test]
    fn the_index_answers_like_a_scan_on_large_tables() {
        // Enough filler routes that the index is used, plus the cases of the other tests.
        let mut specs: Vec<(RouteSpec, &'static str)> = (0..40)
            .map(|i| {
                let host: &'static str = Box::leak(format!("filler{i}.internal").into_boxed_str());
                (spec(100 + i, Some(host), "/x"), "filler")
            })
            .collect();
        specs.push((spec(0, None, "/"), "any"));
        specs.push((spec(1, Some("*.example.com"), "/"), "wild"));
        specs.push((spec(2, Some("*.eu.example.com"), "/"), "wild-eu"));
        specs.push((spec(3, Some("api.example.com"), "/v2"), "exact-v2"));
        specs.push((spec(4, None, "/api"), "api"));
        specs.push((spec(5, None, "/static/"), "static"));
        let t = RouteTable::new(specs);
        let h = HeaderMap::new();
        let cases = [
            (Some("API.Example.COM."), "/v2/x", Some("exact-v2")),
            (Some("api.example.com"), "/v1", Some("wild")),
            (Some("x.eu.example.com"), "/", Some("wild-eu")),
            (Some("a.b.example.com"), "/", Some("wild")),
            (Some("example.com"), "/api/x", Some("api")),
            (Some("example.com"), "/apix", Some("any")),
            (None, "/static/a.css", Some("static")),
            (None, "/static", Some("any")),
            (Some("filler7.internal"), "/x/y", Some("filler")),
            (Some("filler7.internal"), "/y", Some("any")),
        ];
        for (host, path, want) in cases {
            let scan = t.routes.iter().find(|r| {
                r.matches(&RequestInfo {
                    host,
                    path,
                    method: &Method::GET,
                    headers: &h,
                })
            });
            assert_eq!(
                find(&t, host, Method::GET, path, &h),
                want,
                "{host:?} {path}"
            );
            assert_eq!(scan.map(|r| r.target), want, "{host:?} {path}");
        }
    }

    #[test]
    fn host_without_port_handles_ipv6_and_ports() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "::1");
        assert_eq!(host_without_port("[::1]"), "::1");
        assert_eq!(host_without_port("10.0.0.1:80"), "10.0.0.1");
        assert_eq!(host_without_port("weird:port"), "weird:port");
    }
}
