//! Routes: matchers, references to listeners and upstreams, and routes that an earlier
//! route on the same listener would always shadow.

use std::collections::BTreeMap;

use toml::Spanned;

use super::{Check, value};
use crate::config::raw::{self, Document, Table};
use crate::config::{HostMatch, RouteConfig};

impl Check<'_> {
    pub(super) fn routes(&mut self, doc: &Document) -> Vec<Option<RouteConfig>> {
        // If a listener has no usable name, the set is unknown: don't call references to it
        // undefined on top of the error already reported.
        let all_named = doc
            .listeners
            .iter()
            .all(|l| l.listener.as_ref().is_some_and(|t| t.fields.name.is_some()));
        let listeners: Option<Vec<&str>> = all_named.then(|| {
            let named = doc.listeners.iter().filter_map(|l| l.listener.as_ref());
            named
                .filter_map(|t| t.fields.name.as_ref())
                .map(|n| n.get_ref().as_str())
                .collect()
        });
        let upstreams: Vec<&str> = doc
            .upstreams
            .iter()
            .map(|(n, _, _)| n.get_ref().as_str())
            .collect();

        let mut routes = Vec::new();
        let mut seen: Vec<(usize, MatcherKey)> = Vec::new();
        for (i, table) in doc.routes.iter().enumerate() {
            let Some(t) = table else {
                routes.push(None);
                continue;
            };
            let route = self.route(i, t, listeners.as_deref(), &upstreams);
            if let Some(route) = &route {
                let key = MatcherKey::of(route);
                match seen.iter().find(|(_, k)| *k == key) {
                    Some((j, _)) => {
                        let message = format!(
                            "duplicates routes[{j}] (same listener and matchers); it could never match"
                        );
                        self.error(format!("routes[{i}]"), &t.span, message);
                    }
                    None => seen.push((i, key)),
                }
            }
            routes.push(route);
        }
        routes
    }

    fn route(
        &mut self,
        i: usize,
        t: &Table<raw::Route>,
        listeners: Option<&[&str]>,
        upstreams: &[&str],
    ) -> Option<RouteConfig> {
        let path = &format!("routes[{i}]");
        let f = &t.fields;
        let name = self.optional(path, "name", &f.name, value::non_empty);
        let listener = self.required(t, path, "listener", &f.listener, |s| match listeners {
            Some(names) if !names.contains(&s) => Err(format!("{s:?} is not defined")),
            _ => Ok(s.to_owned()),
        });
        let host = self.optional(path, "host", &f.host, value::host);
        let path_prefix = self.or_default(
            path,
            "path_prefix",
            &f.path_prefix,
            "/".to_owned(),
            value::path_prefix,
        );
        let methods = self.methods(path, f.methods.as_ref());
        let headers = self.headers(path, f.headers.as_ref());
        let upstream = self.required(t, path, "upstream", &f.upstream, |s| {
            if upstreams.contains(&s) {
                Ok(s.to_owned())
            } else {
                Err(format!("{s:?} is not defined"))
            }
        });
        let tracing = f.tracing.as_ref().is_none_or(|b| *b.get_ref());
        let sampling_ratio = self.ratio(path, "sampling_ratio", f.sampling_ratio.as_ref());
        let max_request_body = self.optional(
            path,
            "max_request_body",
            &f.max_request_body,
            value::byte_size,
        );
        Some(RouteConfig {
            name: name?,
            listener: listener?,
            host: host?,
            path_prefix: path_prefix?,
            methods: methods?,
            headers: headers?,
            upstream: upstream?,
            tracing,
            sampling_ratio: sampling_ratio?,
            max_request_body: max_request_body?,
        })
    }

    fn methods(
        &mut self,
        path: &str,
        field: Option<&Spanned<Vec<Spanned<String>>>>,
    ) -> Option<Vec<http::Method>> {
        let Some(list) = field else {
            return Some(Vec::new());
        };
        if list.get_ref().is_empty() {
            let message = "must not be empty; leave the key out to match any method";
            self.error(format!("{path}.methods"), &list.span(), message);
            return None;
        }
        let items = list.get_ref().iter().enumerate();
        let parsed: Vec<_> = items
            .map(|(i, m)| {
                (
                    i,
                    m,
                    self.parse(format!("{path}.methods[{i}]"), m, value::method),
                )
            })
            .collect();
        self.no_duplicates(path, "methods", &parsed);
        parsed.into_iter().map(|(_, _, m)| m).collect()
    }

    fn headers(
        &mut self,
        path: &str,
        field: Option<&Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    ) -> Option<Vec<(http::HeaderName, http::HeaderValue)>> {
        let Some(map) = field else {
            return Some(Vec::new());
        };
        let mut headers: Vec<(http::HeaderName, http::HeaderValue)> = Vec::new();
        let mut ok = true;
        for (name, val) in map.get_ref() {
            let key = format!("{path}.headers.{}", raw::key_segment(name.get_ref()));
            let parsed_name = self.parse(key.clone(), name, value::header_name);
            let parsed_value = self.parse(key.clone(), val, value::header_value);
            let (Some(n), Some(v)) = (parsed_name, parsed_value) else {
                ok = false;
                continue;
            };
            // Names are case-insensitive: `X-A` and `x-a` are the same header.
            if headers.iter().any(|(seen, _)| *seen == n) {
                self.error(
                    key,
                    &name.span(),
                    format!("header {:?} is listed twice", n.as_str()),
                );
                ok = false;
                continue;
            }
            headers.push((n, v));
        }
        headers.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        ok.then_some(headers)
    }
}

/// What decides whether a request matches a route; two routes with equal keys on one
/// listener mean the later can never be chosen.
#[derive(PartialEq)]
struct MatcherKey {
    listener: String,
    host: Option<HostMatch>,
    path_prefix: String,
    methods: Vec<String>,
    headers: Vec<(String, Vec<u8>)>,
}

impl MatcherKey {
    fn of(route: &RouteConfig) -> Self {
        let mut methods: Vec<String> = route.methods.iter().map(|m| m.to_string()).collect();
        methods.sort();
        let mut headers: Vec<(String, Vec<u8>)> = route
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        headers.sort();
        MatcherKey {
            listener: route.listener.clone(),
            host: route.host.clone(),
            path_prefix: route.path_prefix.clone(),
            methods,
            headers,
        }
    }
}
