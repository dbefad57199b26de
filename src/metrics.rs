//! Prometheus metrics (prometheus-client): the families, the handles the data path holds,
//! and values read at scrape time. Imports nothing else of hoptrace's; `app` wires the
//! scrape-time sources, `admin` serves the text.
//!
//! The request path never builds labels: handles for each route, listener and upstream are
//! created when a config is compiled, and a request only increments atomics.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub type Labels = Vec<(&'static str, String)>;

/// 0.25 ms to ~16 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_25, 2.0, 17)
}

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Every metric of one hoptrace instance.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    request_duration: HistogramFamily,
    connect_attempts: Family<Labels, Counter>,
    connect_failures: Family<Labels, Counter>,
    connect_timeouts: Family<Labels, Counter>,
    open_connections: Family<Labels, Gauge>,
    invalid_contexts: Family<Labels, Counter>,
    rejected_connections: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    retry_budget_exhausted: Family<Labels, Counter>,
    export_batch_duration: Histogram,
    tls_handshake_failures: Family<Labels, Counter>,
    tls_cert_reloads: Family<Labels, Counter>,
    config_watch_events: Family<Labels, Counter>,
}

/// A listener's counters of rejected trace-context headers, one per propagation format.
#[derive(Clone, Debug)]
pub struct ContextMetrics {
    by_format: Vec<(&'static str, Counter)>,
}

impl ContextMetrics {
    /// Counts one rejected header of `format` (its `OTEL_PROPAGATORS` name).
    pub fn invalid(&self, format: &str) {
        if let Some((_, counter)) = self.by_format.iter().find(|(f, _)| *f == format) {
            counter.inc();
        }
    }
}

/// A request's counters for one route (or a listener's no-route requests).
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    /// Requests by status class: index 0 = 1xx ... 4 = 5xx.
    by_class: [Counter; 5],
    duration: Histogram,
}

/// An upstream's connection counters.
#[derive(Clone, Debug, Default)]
pub struct ConnectMetrics {
    pub attempts: Counter,
    pub failures: Counter,
    pub timeouts: Counter,
}

/// An upstream's retry counters.
#[derive(Clone, Debug, Default)]
pub struct RetryMetrics {
    /// Retries sent.
    pub retries: Counter,
    /// Retries not sent because the budget was spent.
    pub budget_exhausted: Counter,
}

impl RouteMetrics {
    /// Counts one finished request.
    pub fn record(&self, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(counter) = self.by_class.get(class) {
            counter.inc();
        }
        self.duration.observe(seconds);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hoptrace");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "Requests by listener, route, upstream and status class",
            requests.clone(),
        );
        let request_duration: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register_with_unit(
            "request_duration",
            "Time from receiving a request to the end of its response body",
            Unit::Seconds,
            request_duration.clone(),
        );
        let connect_attempts = Family::<Labels, Counter>::default();
        registry.register(
            "upstream_connection_attempts",
            "New connections attempted to an upstream's endpoints",
            connect_attempts.clone(),
        );
        let connect_failures = Family::<Labels, Counter>::default();
        registry.register(
            "upstream_connection_failures",
            "Connection attempts that failed (refused, unreachable, timed out)",
            connect_failures.clone(),
        );
        let connect_timeouts = Family::<Labels, Counter>::default();
        registry.register(
            "upstream_connection_timeouts",
            "Connection attempts that hit connect_timeout",
            connect_timeouts.clone(),
        );
        let open_connections = Family::<Labels, Gauge>::default();
        registry.register(
            "downstream_connections_open",
            "Client connections open on each listener",
            open_connections.clone(),
        );
        let invalid_contexts = Family::<Labels, Counter>::default();
        registry.register(
            "trace_context_invalid",
            "Requests whose trace-context header of this format was present but rejected",
            invalid_contexts.clone(),
        );
        let rejected_connections = Family::<Labels, Counter>::default();
        registry.register(
            "downstream_connections_rejected",
            "Client connections closed at once because the listener had max_connections open",
            rejected_connections.clone(),
        );
        let retries = Family::<Labels, Counter>::default();
        registry.register(
            "upstream_retries",
            "Requests sent to an upstream again after a failed attempt",
            retries.clone(),
        );
        let retry_budget_exhausted = Family::<Labels, Counter>::default();
        registry.register(
            "upstream_retry_budget_exhausted",
            "Retries not sent because the upstream's retry budget was spent",
            retry_budget_exhausted.clone(),
        );
        let export_batch_duration = Histogram::new(latency_buckets());
        registry.register_with_unit(
            "export_batch_duration",
            "Time to export one batch of spans, retries included",
            Unit::Seconds,
            export_batch_duration.clone(),
        );
        let tls_handshake_failures = Family::<Labels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "Client TLS handshakes that failed or timed out, by listener",
            tls_handshake_failures.clone(),
        );
        let tls_cert_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "tls_certificate_reloads",
            "Listener certificate reloads by outcome (applied, failed: the old one kept serving)",
            tls_cert_reloads.clone(),
        );
        let config_watch_events = Family::<Labels, Counter>::default();
        registry.register(
            "config_watch_events",
            "Changes seen in the config file's directory: reload (the config file, ..data or a \
             link it leads through; debounced into reloads) or ignored (other files, reads)",
            config_watch_events.clone(),
        );
        Metrics {
            config_watch_events,
            tls_handshake_failures,
            tls_cert_reloads,
            registry,
            requests,
            request_duration,
            connect_attempts,
            connect_failures,
            connect_timeouts,
            open_connections,
            invalid_contexts,
            rejected_connections,
            retries,
            retry_budget_exhausted,
            export_batch_duration,
        }
    }

    /// Handles for requests on `route` (empty for "no route matched") of `listener`.
    pub fn route(&self, listener: &str, route: &str, upstream: &str) -> RouteMetrics {
        let base: Labels = vec![
            ("listener", listener.to_string()),
            ("route", route.to_string()),
            ("upstream", upstream.to_string()),
        ];
        let class = |c: &str| {
            let mut labels = base.clone();
            labels.push(("status_class", c.to_string()));
            self.requests.get_or_create(&labels).clone()
        };
        let by_class = [
            class("1xx"),
            class("2xx"),
            class("3xx"),
            class("4xx"),
            class("5xx"),
        ];
        let duration = self
            .request_duration
            .get_or_create(&vec![
                ("listener", listener.to_string()),
                ("route", route.to_string()),
            ])
            .clone();
        RouteMetrics { by_class, duration }
    }

    pub fn upstream(&self, upstream: &str) -> ConnectMetrics {
        let labels: Labels = vec![("upstream", upstream.to_string())];
        ConnectMetrics {
            attempts: self.connect_attempts.get_or_create(&labels).clone(),
            failures: self.connect_failures.get_or_create(&labels).clone(),
            timeouts: self.connect_timeouts.get_or_create(&labels).clone(),
        }
    }

    /// An upstream's retry counters.
    pub fn retries(&self, upstream: &str) -> RetryMetrics {
        let labels: Labels = vec![("upstream", upstream.to_string())];
        RetryMetrics {
            retries: self.retries.get_or_create(&labels).clone(),
            budget_exhausted: self.retry_budget_exhausted.get_or_create(&labels).clone(),
        }
    }

    /// Connections a listener closed at once for `max_connections`.
    pub fn rejected_connections(&self, listener: &str) -> Counter {
        self.rejected_connections
            .get_or_create(&vec![("listener", listener.to_string())])
            .clone()
    }

    pub fn open_connections(&self, listener: &str) -> Gauge {
        self.open_connections
            .get_or_create(&vec![("listener", listener.to_string())])
            .clone()
    }

    /// Failed TLS handshakes on `listener`.
    pub fn tls_handshake_failures(&self, listener: &str) -> Counter {
        self.tls_handshake_failures
            .get_or_create(&vec![("listener", listener.to_string())])
            .clone()
    }

    /// Certificate reloads of `listener`: (applied, failed).
    pub fn tls_cert_reloads(&self, listener: &str) -> (Counter, Counter) {
        let outcome = |o: &str| {
            let labels = vec![
                ("listener", listener.to_string()),
                ("outcome", o.to_string()),
            ];
            self.tls_cert_reloads.get_or_create(&labels).clone()
        };
        (outcome("applied"), outcome("failed"))
    }

    /// Removes the request series of a route that a reload removed (every status class):
    /// they would otherwise be exposed, unchanging, until the process ends. Requests still
    /// running on the old config count into the removed series, which are not exposed.
    pub fn remove_route(&self, listener: &str, route: &str, upstream: &str) {
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            self.requests.remove(&vec![
                ("listener", listener.to_string()),
                ("route", route.to_string()),
                ("upstream", upstream.to_string()),
                ("status_class", class.to_string()),
            ]);
        }
    }

    /// Removes the duration histogram of `route` on `listener` (no route left has its name).
    pub fn remove_route_duration(&self, listener: &str, route: &str) {
        self.request_duration.remove(&vec![
            ("listener", listener.to_string()),
            ("route", route.to_string()),
        ]);
    }

    /// Removes the connection and retry series of an upstream that a reload removed.
    pub fn remove_upstream(&self, upstream: &str) {
        let labels: Labels = vec![("upstream", upstream.to_string())];
        for family in [
            &self.connect_attempts,
            &self.connect_failures,
            &self.connect_timeouts,
            &self.retries,
            &self.retry_budget_exhausted,
        ] {
            family.remove(&labels);
        }
    }

    /// The config watcher's event counters: (reload, ignored).
    pub fn config_watch_events(&self) -> (Counter, Counter) {
        let action = |a: &str| {
            self.config_watch_events
                .get_or_create(&vec![("action", a.to_string())])
                .clone()
        };
        (action("reload"), action("ignored"))
    }

    /// Handles for `listener`'s rejected trace-context headers of each of `formats`.
    pub fn invalid_contexts(&self, listener: &str, formats: &[&'static str]) -> ContextMetrics {
        let by_format = formats
            .iter()
            .map(|f| {
                let labels: Labels = vec![
                    ("listener", listener.to_string()),
                    ("format", f.to_string()),
                ];
                (*f, self.invalid_contexts.get_or_create(&labels).clone())
            })
            .collect();
        ContextMetrics { by_format }
    }

    pub fn export_batch_duration(&self) -> Histogram {
        self.export_batch_duration.clone()
    }

    /// Adds values read at scrape time.
    pub fn register_scraped(&mut self, source: impl Fn() -> Vec<Scraped> + Send + Sync + 'static) {
        self.registry
            .register_collector(Box::new(ScrapedCollector(Arc::new(source))));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// A value read at scrape time.
#[derive(Clone, Debug)]
pub struct Scraped {
    /// Without the `hoptrace_` prefix, for counters without `_total`, and without the unit.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: ScrapedKind,
    pub unit: Option<Unit>,
    pub labels: Labels,
    pub value: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrapedKind {
    Counter,
    Gauge,
}

struct ScrapedCollector(Arc<dyn Fn() -> Vec<Scraped> + Send + Sync>);

impl std::fmt::Debug for ScrapedCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapedCollector")
    }
}

impl Collector for ScrapedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let values = (self.0)();
        let mut i = 0;
        while let Some(first) = values.get(i) {
            // One descriptor per metric name, then every labelled value of that name.
            let same: Vec<&Scraped> = values[i..]
                .iter()
                .take_while(|v| v.name == first.name)
                .collect();
            i += same.len();
            // The registry adds the `hoptrace_` prefix.
            let name = first.name;
            let metric_type = match first.kind {
                ScrapedKind::Counter => ConstCounter::new(0u64).metric_type(),
                ScrapedKind::Gauge => ConstGauge::new(0i64).metric_type(),
            };
            let mut family =
                encoder.encode_descriptor(name, first.help, first.unit.as_ref(), metric_type)?;
            if first.labels.is_empty() {
                // An unlabelled metric has exactly one value.
                encode_value(first, family)?;
            } else {
                for value in same {
                    encode_value(value, family.encode_family(&value.labels)?)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(
    value: &Scraped,
    metric: prometheus_client::encoding::MetricEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    match value.kind {
        ScrapedKind::Counter => ConstCounter::new(value.value).encode(metric),
        ScrapedKind::Gauge => ConstGauge::new(value.value).encode(metric),
    }
}
