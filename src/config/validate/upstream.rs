//! Upstreams: endpoints, protocol, balancing and timeouts.

use std::time::Duration;

use super::{BALANCES, Check, PROTOCOLS, value};
use crate::config::raw::{self, Table};
use crate::config::{Balance, Endpoint, Protocol, UpstreamConfig};

impl Check<'_> {
    pub(super) fn upstream(
        &mut self,
        path: &str,
        t: &Table<raw::Upstream>,
    ) -> Option<UpstreamConfig> {
        let f = &t.fields;
        let endpoints = self.endpoints(path, t);
        let protocol = self.or_default(path, "protocol", &f.protocol, Protocol::Http1, |s| {
            value::one_of(s, PROTOCOLS)
        });
        let balance = self.or_default(path, "balance", &f.balance, Balance::RoundRobin, |s| {
            value::one_of(s, BALANCES)
        });
        let secs = Duration::from_secs;
        let connect_timeout = self.or_default(
            path,
            "connect_timeout",
            &f.connect_timeout,
            secs(1),
            value::positive_duration,
        );
        let request_timeout = self.or_default(
            path,
            "request_timeout",
            &f.request_timeout,
            secs(30),
            value::positive_duration,
        );
        let idle_timeout = self.or_default(
            path,
            "idle_timeout",
            &f.idle_timeout,
            secs(90),
            value::positive_duration,
        );
        let max_idle_per_endpoint = self.int_or_default(
            path,
            "max_idle_per_endpoint",
            &f.max_idle_per_endpoint,
            32,
            (0, i64::MAX),
        );
        let failure_backoff = self.or_default(
            path,
            "failure_backoff",
            &f.failure_backoff,
            secs(5),
            value::duration,
        );
        Some(UpstreamConfig {
            endpoints: endpoints?,
            protocol: protocol?,
            balance: balance?,
            connect_timeout: connect_timeout?,
            request_timeout: request_timeout?,
            idle_timeout: idle_timeout?,
            max_idle_per_endpoint: max_idle_per_endpoint?,
            failure_backoff: failure_backoff?,
            tls: None,
        })
    }

    fn endpoints(&mut self, path: &str, t: &Table<raw::Upstream>) -> Option<Vec<Endpoint>> {
        let Some(list) = &t.fields.endpoints else {
            if !t.was_rejected("endpoints") {
                self.error(format!("{path}.endpoints"), &t.span, "missing required key");
            }
            return None;
        };
        if list.get_ref().is_empty() {
            let message = "must list at least one endpoint";
            self.error(format!("{path}.endpoints"), &list.span(), message);
            return None;
        }
        let items = list.get_ref().iter().enumerate();
        let parsed: Vec<_> = items
            .map(|(i, e)| {
                (
                    i,
                    e,
                    self.parse(format!("{path}.endpoints[{i}]"), e, value::endpoint),
                )
            })
            .collect();
        self.no_duplicates(path, "endpoints", &parsed);
        parsed.into_iter().map(|(_, _, e)| e).collect()
    }
}
