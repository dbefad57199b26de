//! Upstreams: endpoints, protocol, balancing and timeouts.

use std::time::Duration;

use super::{BALANCES, Check, PROTOCOLS, value};
use crate::config::raw::{self, Table};
use crate::config::{Balance, Endpoint, Fraction, Protocol, RetryConfig, UpstreamConfig};

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
        let body_timeout = self.or_default(
            path,
            "body_timeout",
            &f.body_timeout,
            secs(60),
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
        let retry = self.retry(path, t);
        Some(UpstreamConfig {
            endpoints: endpoints?,
            protocol: protocol?,
            balance: balance?,
            connect_timeout: connect_timeout?,
            request_timeout: request_timeout?,
            body_timeout: body_timeout?,
            idle_timeout: idle_timeout?,
            max_idle_per_endpoint: max_idle_per_endpoint?,
            failure_backoff: failure_backoff?,
            tls: None,
            retry: retry?,
        })
    }

    /// `retries`, `retry_on`, `retry_budget`, `retry_budget_min_per_second`.
    fn retry(&mut self, path: &str, t: &Table<raw::Upstream>) -> Option<RetryConfig> {
        let f = &t.fields;
        let d = RetryConfig::default();
        let retries = self.int_or_default(path, "retries", &f.retries, 0, (0, 10));
        let retry_on = match &f.retry_on {
            None => Some(d.retry_on),
            Some(list) => {
                let mut statuses = Vec::new();
                let mut ok = true;
                for (i, code) in list.get_ref().iter().enumerate() {
                    let n = *code.get_ref();
                    let key = format!("{path}.retry_on[{i}]");
                    match u16::try_from(n) {
                        Ok(status) if (500..=599).contains(&status) || status == 429 => {
                            if statuses.contains(&status) {
                                self.error(key, &code.span(), format!("{status} is listed twice"));
                                ok = false;
                            }
                            statuses.push(status);
                        }
                        _ => {
                            let message = format!("must be 429 or a 5xx status code (got {n})");
                            self.error(key, &code.span(), message);
                            ok = false;
                        }
                    }
                }
                ok.then_some(statuses)
            }
        };
        let budget_ratio = self
            .ratio(path, "retry_budget", f.retry_budget.as_ref())
            .map(|r| Fraction(r.unwrap_or(d.budget_ratio.0)));
        let budget_min = self.int_or_default(
            path,
            "retry_budget_min_per_second",
            &f.retry_budget_min_per_second,
            d.budget_min_per_second as usize,
            (0, 1_000_000),
        );
        Some(RetryConfig {
            retries: u32::try_from(retries?).ok()?,
            retry_on: retry_on?,
            budget_ratio: budget_ratio?,
            budget_min_per_second: u32::try_from(budget_min?).ok()?,
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
