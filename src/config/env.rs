//! The OpenTelemetry SDK environment variables (`OTEL_*`), applied over a validated config.
//!
//! Follows the OpenTelemetry "Environment Variable Specification" and the OTLP exporter
//! configuration spec: an empty value counts as unset, enum values are case-insensitive, and
//! a signal-specific `OTEL_EXPORTER_OTLP_TRACES_*` variable wins over `OTEL_EXPORTER_OTLP_*`.
//! The environment is applied all or nothing: on any error the config is left unchanged.

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use super::validate::tracing::{COMPRESSIONS, OTLP_PROTOCOLS, PROPAGATORS};
use super::validate::value;
use super::{
    Config, ConfigError, ConfigErrors, ExporterKind, OtlpProtocol, Propagator, Secret,
    TracingConfig,
};

/// `OTEL_TRACES_EXPORTER`: the spec's names (`console`, not `stdout`).
const EXPORTERS: &[(&str, ExporterKind)] = &[
    ("otlp", ExporterKind::Otlp),
    ("zipkin", ExporterKind::Zipkin),
    ("console", ExporterKind::Stdout),
    ("none", ExporterKind::None),
];

/// `OTEL_TRACES_SAMPLER`: (fixed ratio, or `None` to read `OTEL_TRACES_SAMPLER_ARG`;
/// parent based).
const SAMPLERS: &[(&str, (Option<f64>, bool))] = &[
    ("always_on", (Some(1.0), false)),
    ("always_off", (Some(0.0), false)),
    ("traceidratio", (None, false)),
    ("parentbased_always_on", (Some(1.0), true)),
    ("parentbased_always_off", (Some(0.0), true)),
    ("parentbased_traceidratio", (None, true)),
];

impl Config {
    /// Applies the OpenTelemetry SDK environment variables over the file's values. `get`
    /// reads a variable (std::env::var in production, a map in tests). Errors name the
    /// variable: `OTEL_TRACES_SAMPLER_ARG: "abc" is not a number`.
    ///
    /// On error `self` is unchanged: the environment is never half-applied.
    pub fn apply_otel_env(
        &mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigErrors> {
        let mut env = Env {
            get,
            errors: Vec::new(),
        };
        let mut next = self.clone();
        env.apply(&mut next);
        if env.errors.is_empty() {
            *self = next;
            Ok(())
        } else {
            Err(ConfigErrors::new(env.errors))
        }
    }
}

/// A variable that is set and not empty.
struct Var {
    name: String,
    value: String,
}

struct Env<F> {
    get: F,
    errors: Vec<ConfigError>,
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// OTel env spec: "The SDK MUST interpret an empty value of an environment variable the
    /// same way as when the variable is unset." Surrounding spaces are dropped.
    fn var(&self, name: &str) -> Option<Var> {
        let value = (self.get)(name)?.trim().to_owned();
        (!value.is_empty()).then(|| Var {
            name: name.to_owned(),
            value,
        })
    }

    /// OTLP exporter spec: the signal-specific variable wins over the generic one.
    fn otlp_var(&self, option: &str) -> Option<Var> {
        self.var(&format!("OTEL_EXPORTER_OTLP_TRACES_{option}"))
            .or_else(|| self.var(&format!("OTEL_EXPORTER_OTLP_{option}")))
    }

    fn parse<T>(&mut self, var: &Var, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        parse(&var.value)
            .map_err(|m| {
                self.errors
                    .push(ConfigError::new(var.name.clone(), None, m));
            })
            .ok()
    }

    /// Reads `name` if set; an invalid value is reported and leaves `target` as it was.
    fn set<T>(
        &mut self,
        name: &str,
        target: &mut T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) {
        if let Some(var) = self.var(name) {
            if let Some(v) = self.parse(&var, parse) {
                *target = v;
            }
        }
    }

    fn apply(&mut self, config: &mut Config) {
        self.service(config);
        let t = &mut config.tracing;
        self.set("OTEL_TRACES_EXPORTER", &mut t.exporter, |s| {
            value::one_of(&s.to_ascii_lowercase(), EXPORTERS)
        });
        self.sampler(t);
        self.otlp(t);
        self.batch(t);
        self.zipkin(t);
        self.propagators(t);
    }

    /// Zipkin exporter spec: `OTEL_EXPORTER_ZIPKIN_ENDPOINT` (the full URL) and
    /// `OTEL_EXPORTER_ZIPKIN_TIMEOUT` (milliseconds).
    fn zipkin(&mut self, t: &mut TracingConfig) {
        self.set(
            "OTEL_EXPORTER_ZIPKIN_ENDPOINT",
            &mut t.zipkin.endpoint,
            value::collector_url,
        );
        self.set(
            "OTEL_EXPORTER_ZIPKIN_TIMEOUT",
            &mut t.zipkin.timeout,
            millis,
        );
    }

    fn service(&mut self, config: &mut Config) {
        if let Some(var) = self.var("OTEL_RESOURCE_ATTRIBUTES") {
            for (key, val) in self.parse(&var, resource_attributes).unwrap_or_default() {
                // OTel resource spec: `service.name` may come from here; OTEL_SERVICE_NAME,
                // read below, still wins over it.
                if key == "service.name" {
                    config.service.name = val;
                    continue;
                }
                let attrs = &mut config.service.resource_attributes;
                match attrs.iter_mut().find(|(k, _)| *k == key) {
                    Some(existing) => existing.1 = val,
                    None => attrs.push((key, val)),
                }
            }
        }
        self.set("OTEL_SERVICE_NAME", &mut config.service.name, |s| {
            Ok(s.to_owned())
        });
    }

    fn sampler(&mut self, t: &mut TracingConfig) {
        let Some(var) = self.var("OTEL_TRACES_SAMPLER") else {
            return;
        };
        let Some((fixed, parent_based)) =
            self.parse(&var, |s| value::one_of(&s.to_ascii_lowercase(), SAMPLERS))
        else {
            return;
        };
        // OTel env spec: OTEL_TRACES_SAMPLER_ARG is read only by the ratio samplers, and
        // their ratio defaults to 1.0.
        let ratio = match (fixed, self.var("OTEL_TRACES_SAMPLER_ARG")) {
            (Some(ratio), _) => Some(ratio),
            (None, None) => Some(1.0),
            (None, Some(arg)) => self.parse(&arg, |s| {
                let r: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
                value::ratio(r)
            }),
        };
        if let Some(ratio) = ratio {
            t.sampling_ratio = ratio;
            t.parent_based = parent_based;
        }
    }

    fn otlp(&mut self, t: &mut TracingConfig) {
        let o = &mut t.otlp;
        let file_protocol = o.protocol;
        let endpoint_is_default = o.endpoint == value::default_otlp_endpoint(file_protocol);
        if let Some(var) = self.otlp_var("PROTOCOL") {
            if let Some(p) = self.parse(&var, protocol) {
                o.protocol = p;
            }
        }
        if let Some(var) = self.var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            // OTLP exporter spec: the signal-specific endpoint is used as is.
            if let Some(url) = self.parse(&var, value::collector_url) {
                o.endpoint = url;
            }
        } else if let Some(var) = self.var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            // OTLP exporter spec: the generic endpoint is a base URL; OTLP/HTTP appends the
            // signal's path to it, gRPC uses it as is.
            let http = o.protocol == OtlpProtocol::HttpProtobuf;
            let endpoint = self.parse(&var, |s| {
                let url = value::collector_url(s)?;
                if http {
                    value::append_traces_path(&url)
                } else {
                    Ok(url)
                }
            });
            if let Some(url) = endpoint {
                o.endpoint = url;
            }
        } else if o.protocol != file_protocol {
            // The default endpoint follows the protocol finally chosen. An endpoint equal to
            // the old protocol's default is taken as not configured.
            o.endpoint = if endpoint_is_default {
                value::default_otlp_endpoint(o.protocol)
            } else {
                let url = o.endpoint.clone();
                value::otlp_endpoint(url.clone(), o.protocol).unwrap_or(url)
            };
        }
        if let Some(var) = self.otlp_var("HEADERS") {
            for (name, val) in self.parse(&var, otlp_headers).unwrap_or_default() {
                match o.headers.iter_mut().find(|(n, _)| *n == name) {
                    Some(existing) => existing.1 = val,
                    None => o.headers.push((name, val)),
                }
            }
            o.headers.sort_by(|a, b| a.0.cmp(&b.0));
        }
        if let Some(var) = self.otlp_var("COMPRESSION") {
            if let Some(c) = self.parse(&var, |s| {
                value::one_of(&s.to_ascii_lowercase(), COMPRESSIONS)
            }) {
                o.compression = c;
            }
        }
        // OTEL_BSP_EXPORT_TIMEOUT is the batch processor's name for the same deadline; the
        // exporter's own variable is the more specific one.
        let timeout = self
            .otlp_var("TIMEOUT")
            .or_else(|| self.var("OTEL_BSP_EXPORT_TIMEOUT"));
        if let Some(var) = timeout {
            if let Some(d) = self.parse(&var, millis) {
                o.timeout = d;
            }
        }
        if let Some(var) = self.otlp_var("CERTIFICATE") {
            o.ca_file = Some(PathBuf::from(var.value));
        }
        if let Some(var) = self.otlp_var("CLIENT_CERTIFICATE") {
            o.client_cert = Some(PathBuf::from(var.value));
        }
        if let Some(var) = self.otlp_var("CLIENT_KEY") {
            o.client_key = Some(PathBuf::from(var.value));
        }
    }

    /// Batch span processor. A batch larger than the queue could never fill: an explicit
    /// OTEL_BSP_MAX_EXPORT_BATCH_SIZE must fit; otherwise the batch shrinks to the queue, as
    /// the SDK's batch processor does.
    fn batch(&mut self, t: &mut TracingConfig) {
        self.set("OTEL_BSP_SCHEDULE_DELAY", &mut t.batch_delay, millis);
        self.set("OTEL_BSP_MAX_QUEUE_SIZE", &mut t.queue_size, count);
        let queue = t.queue_size;
        match self.var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
            Some(var) => {
                let batch = self.parse(&var, |s| {
                    let n = count(s)?;
                    if n > queue {
                        return Err(format!("must not exceed the queue size ({queue}), got {n}"));
                    }
                    Ok(n)
                });
                if let Some(n) = batch {
                    t.batch_size = n;
                }
            }
            None => t.batch_size = t.batch_size.min(queue),
        }
    }

    /// Replaces `[tracing] propagators`. `baggage` is accepted and changes nothing (the
    /// `baggage` header always passes through untouched); `none` alone means no format;
    /// `ottrace` and unknown names are errors.
    fn propagators(&mut self, t: &mut TracingConfig) {
        let Some(var) = self.var("OTEL_PROPAGATORS") else {
            return;
        };
        if let Some(list) = self.parse(&var, propagators) {
            t.propagators = list;
        }
    }
}

fn propagators(s: &str) -> Result<Vec<Propagator>, String> {
    let names: Vec<String> = members(s).map(str::to_ascii_lowercase).collect();
    if names.iter().any(|n| n == "none") {
        return match names.len() {
            1 => Ok(Vec::new()),
            _ => Err("\"none\" cannot be combined with other propagators".to_owned()),
        };
    }
    let mut list = Vec::new();
    for name in names.iter().filter(|n| *n != "baggage") {
        let p = value::one_of(name, PROPAGATORS).map_err(|_| {
            format!(
                "{name:?} is not supported; supported: tracecontext, baggage (passed through), \
                 b3, b3multi, jaeger, xray, none"
            )
        })?;
        if !list.contains(&p) {
            list.push(p);
        }
    }
    Ok(list)
}

fn protocol(s: &str) -> Result<OtlpProtocol, String> {
    let s = s.to_ascii_lowercase();
    if s == "http/json" {
        return Err("\"http/json\" is not supported; use \"grpc\" or \"http/protobuf\"".to_owned());
    }
    value::one_of(&s, OTLP_PROTOCOLS)
}

/// OTel env spec: timeouts and delays are integers in milliseconds.
fn millis(s: &str) -> Result<Duration, String> {
    let ms: u64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of milliseconds"))?;
    if ms == 0 {
        return Err("must be greater than 0 (got 0)".to_owned());
    }
    Ok(Duration::from_millis(ms))
}

fn count(s: &str) -> Result<usize, String> {
    let n: i64 = s.parse().map_err(|_| format!("{s:?} is not an integer"))?;
    value::at_least_one(n)
}

/// `k1=v1,k2=v2`; OTel resource spec: keys and values are percent-encoded, spaces around
/// members are dropped, and empty members are skipped.
fn resource_attributes(s: &str) -> Result<Vec<(String, String)>, String> {
    members(s)
        .map(|member| {
            let bad = || format!("malformed member {member:?} (expected key=value)");
            let (key, val) = member.split_once('=').ok_or_else(bad)?;
            let key = percent_decode(key.trim()).ok_or_else(bad)?;
            let val = percent_decode(val.trim()).ok_or_else(bad)?;
            if key.is_empty() {
                return Err(bad());
            }
            Ok((key, val))
        })
        .collect()
}

/// `k1=v1,k2=v2`, values percent-encoded (OTLP exporter spec, W3C baggage format). Values
/// are secrets, so errors name the member by its position or header name, never its value.
fn otlp_headers(s: &str) -> Result<Vec<(String, Secret)>, String> {
    members(s)
        .enumerate()
        .map(|(i, member)| {
            let (key, val) = member.split_once('=').ok_or_else(|| {
                format!(
                    "member {} is not key=value (not shown: it may hold a secret)",
                    i + 1
                )
            })?;
            let name = value::header_name(key.trim())?;
            let name = name.as_str();
            let val = percent_decode(val.trim())
                .ok_or_else(|| format!("value of {name:?} has invalid percent-encoding"))?;
            http::HeaderValue::from_str(&val)
                .map_err(|_| format!("value of {name:?} is not a valid header value"))?;
            Ok((name.to_owned(), Secret(val)))
        })
        .collect()
}

fn members(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|m| !m.is_empty())
}

/// RFC 3986 §2.1 percent-decoding; `None` for a bad escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = char::from(bytes.next()?).to_digit(16)?;
            let lo = char::from(bytes.next()?).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}
