//! The routing snapshot: every listener's route table and every upstream, built from one
//! `Config` and swapped in whole (`ArcSwap`), so a request sees one consistent config from
//! start to end.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::route::{RouteSpec, RouteTable};
use super::upstream::Upstream;
use crate::config::Config;
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
                            let template = r.name.as_deref().unwrap_or(&r.path_prefix);
                            let metrics = metrics.route(&listener.name, template, &r.upstream);
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
            config,
            tables,
            upstreams,
        })
    }
}
