//! An upstream: its endpoints, their balancer, and the pooled HTTP client that reaches them.
//!
//! One client per upstream, so HTTP/1.1 vs h2c and pool settings are per upstream and a reload
//! can carry an unchanged upstream (and its warm connections) over as one `Arc`. The client
//! keeps a pool per endpoint, found by the index the balancer picked.

use std::sync::Arc;

use hyper_util::client::legacy::connect::HttpConnector;

use rustls::pki_types::ServerName;

use super::client::{Client, Conn};
use super::connector::{TaggingConnector, TlsConnect};
use crate::tls::TlsError;

use super::balance::{Balancer, EndpointState};
use super::retry::RetryBudget;
use crate::config::{Protocol, UpstreamConfig};
use crate::metrics::{ConnectMetrics, RetryMetrics};

#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub config: UpstreamConfig,
    pub client: Client,
    pub balancer: Balancer,
    pub retry_budget: RetryBudget,
    pub retry_metrics: RetryMetrics,
}

impl Upstream {
    /// Builds the upstream's client. Fails only when its TLS settings cannot be turned into
    /// a rustls config (validation has already read and checked the files).
    pub fn new(
        name: &str,
        config: &UpstreamConfig,
        metrics: ConnectMetrics,
        retry_metrics: RetryMetrics,
    ) -> Result<Upstream, TlsError> {
        let tls =
            match &config.tls {
                None => None,
                Some(tls) => Some(TlsConnect {
                    connector: tokio_rustls::TlsConnector::from(Arc::new(
                        crate::tls::client_config(name, tls, config.protocol)?,
                    )),
                    // Validation checked the name.
                    server_name: tls
                        .server_name
                        .as_ref()
                        .and_then(|n| ServerName::try_from(n.clone()).ok()),
                    timeout: config.connect_timeout,
                }),
            };
        let mut connector = HttpConnector::new();
        // TLS upstreams send `https` URIs; the TLS layer above this connector handles them.
        connector.enforce_http(tls.is_none());
        connector.set_connect_timeout(Some(config.connect_timeout));
        // Small requests must not wait for Nagle.
        connector.set_nodelay(true);
        let scheme = if tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        };
        let endpoints: Vec<EndpointState> = config
            .endpoints
            .iter()
            .filter_map(|ep| {
                // Validation guarantees host:port forms a valid authority.
                let authority = ep.to_string().parse().ok()?;
                Some(EndpointState::new(ep.clone(), authority))
            })
            .collect();
        let client = Client::new(
            TaggingConnector::new(connector, metrics, tls),
            config.protocol,
            scheme,
            config.idle_timeout,
            config.max_idle_per_endpoint,
            endpoints.iter().map(|ep| ep.authority.clone()),
        );
        Ok(Upstream {
            name: name.into(),
            config: config.clone(),
            client,
            balancer: Balancer::new(config.balance, endpoints),
            retry_budget: RetryBudget::new(&config.retry),
            retry_metrics,
        })
    }

    /// Whether connections to the endpoints are TLS.
    pub fn tls(&self) -> bool {
        self.config.tls.is_some()
    }

    /// The scheme of the requests sent to the endpoints (HTTP/2's `:scheme`).
    pub fn scheme(&self) -> http::uri::Scheme {
        if self.tls() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        }
    }

    pub fn version(&self) -> http::Version {
        match self.config.protocol {
            Protocol::Http1 => http::Version::HTTP_11,
            Protocol::Http2 => http::Version::HTTP_2,
        }
    }
}

/// One request's claim on an endpoint: counts as outstanding for p2c until dropped. The
/// proxy keeps it inside the response body, so the claim lasts until the body ends.
#[derive(Debug)]
pub struct InFlight {
    upstream: Arc<Upstream>,
    index: usize,
}

impl InFlight {
    /// Picks an endpoint of `upstream`; `None` when it has none.
    pub fn pick(upstream: &Arc<Upstream>) -> Option<InFlight> {
        let index = upstream.balancer.pick()?;
        Some(InFlight {
            upstream: upstream.clone(),
            index,
        })
    }

    pub fn index(&self) -> usize {
        self.index
    }

    /// The response body has been read to its end and `conn` can carry another request: back
    /// to its endpoint's pool.
    pub fn reuse(&self, conn: Conn) {
        self.upstream.client.release(self.index, conn);
    }

    pub fn endpoint(&self) -> Option<&EndpointState> {
        self.upstream.balancer.endpoint(self.index)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.upstream.balancer.release(self.index);
    }
}
