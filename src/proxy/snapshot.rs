//! The routing snapshot: every listener's route table and every upstream, built from one
//! `Config` and swapped in whole (`ArcSwap`), so a request sees one consistent config from
//! start to end.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::route::{RouteSpec, RouteTable};
use super::upstream::Upstream;
use crate::config::{Config, RouteConfig};
use crate::metrics::{Metrics, RouteMetrics};
use crate::tls::TlsError;

/// Where a route leads, and its request counters.
#[derive(Debug)]
pub struct RouteTarget {
    pub upstream: Arc<Upstream>,
    pub metrics: RouteMetrics,
    /// The route's `max_request_body`.
    pub max_request_body: Option<u64>,
}

#[derive(Debug)]
pub struct Snapshot {
    /// Counts applied configs, starting at 1.
    pub generation: u64,
    pub config: Arc<Config>,
    /// Route tables indexed like `config.listeners` (the listener set is static).
    pub tables: Box<[RouteTable<RouteTarget>]>,
    /// Per listener (same index): counters of requests no route matched.
    pub no_route: Box<[RouteMetrics]>,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    /// `[tracing] redact_query_keys`, shared by every span of this snapshot.
    pub redact_query_keys: Arc<[String]>,
    /// Inbound requests are registered for stitching: it is enabled and an outbound
    /// listener exists to ask for their ids (with none, registering would be pure cost).
    pub stitch_inbound: bool,
}

/// The current snapshot, shared by every listener.
pub type Shared = ArcSwap<Snapshot>;

impl Snapshot {
    /// Compiles a config. An upstream whose definition equals one in `previous` is carried
    /// over as is, keeping its connection pool warm across a reload (a TLS upstream whose
    /// certificate files changed is not equal: it gets a new client with the new files).
    /// Fails only if an upstream's TLS settings cannot be built.
    pub fn build(
        config: Arc<Config>,
        generation: u64,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
    ) -> Result<Snapshot, TlsError> {
        let upstreams: HashMap<String, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, def)| {
                let reused = previous
                    .and_then(|p| p.upstreams.get(name))
                    .filter(|u| u.config == *def)
                    .cloned();
                let upstream = match reused {
                    Some(upstream) => upstream,
                    None => Arc::new(Upstream::new(
                        name,
                        def,
                        metrics.upstream(name),
                        metrics.retries(name),
                    )?),
                };
                Ok((name.clone(), upstream))
            })
            .collect::<Result<_, TlsError>>()?;
        let tables = config
            .listeners
            .iter()
            .map(|listener| {
                RouteTable::new(
                    config
                        .routes
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.listener == listener.name)
                        .filter_map(|(index, r)| {
                            // Validation guarantees the upstream exists.
                            let upstream = upstreams.get(&r.upstream)?.clone();
                            let metrics =
                                metrics.route(&listener.name, route_label(r), &r.upstream);
                            let spec = RouteSpec {
                                name: r.name.clone(),
                                index,
                                host: r.host.clone(),
                                path_prefix: r.path_prefix.clone(),
                                methods: r.methods.clone(),
                                headers: r.headers.clone(),
                                tracing: r.tracing,
                                sampling_ratio: r.sampling_ratio,
                            };
                            let target = RouteTarget {
                                upstream,
                                metrics,
                                max_request_body: r.max_request_body,
                            };
                            Some((spec, target))
                        }),
                )
            })
            .collect();
        let no_route = config
            .listeners
            .iter()
            .map(|l| metrics.route(&l.name, "", ""))
            .collect();
        Ok(Snapshot {
            generation,
            no_route,
            redact_query_keys: config.tracing.redact_query_keys.clone().into(),
            stitch_inbound: config.stitching.enabled
                && config
                    .listeners
                    .iter()
                    .any(|l| l.role == crate::config::Role::Outbound),
            config,
            tables,
            upstreams,
        })
    }
}

/// The `route` label of a route's series: its name, else its path prefix.
fn route_label(route: &RouteConfig) -> &str {
    route.name.as_deref().unwrap_or(&route.path_prefix)
}

/// Removes the metric series of routes and upstreams that `old` had and `new` has not (the
/// labels of series that are still in use are kept, with their values).
pub fn remove_stale_series(old: &Config, new: &Config, metrics: &Metrics) {
    let routes = |c: &Config| -> BTreeSet<(String, String, String)> {
        c.routes
            .iter()
            .map(|r| {
                let route = route_label(r).to_string();
                (r.listener.clone(), route, r.upstream.clone())
            })
            .collect()
    };
    let (old_routes, new_routes) = (routes(old), routes(new));
    for (listener, route, upstream) in old_routes.difference(&new_routes) {
        metrics.remove_route(listener, route, upstream);
        if !new_routes
            .iter()
            .any(|(l, r, _)| l == listener && r == route)
        {
            metrics.remove_route_duration(listener, route);
        }
    }
    for name in old.upstreams.keys() {
        if !new.upstreams.contains_key(name) {
            metrics.remove_upstream(name);
        }
    }
}
