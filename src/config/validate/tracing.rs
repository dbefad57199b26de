//! `[tracing]` and `[tracing.otlp]`: exporter, sampling, captured headers, batching, and the
//! OTLP collector connection.

use std::collections::BTreeMap;
use std::path::PathBuf;

use toml::Spanned;

use super::{Check, value};
use crate::config::raw::{self, Document};
use crate::config::{
    Compression, ExporterKind, OtlpConfig, OtlpProtocol, Propagator, Secret, TracingConfig,
    ZipkinConfig,
};

pub(in crate::config) const EXPORTERS: &[(&str, ExporterKind)] = &[
    ("otlp", ExporterKind::Otlp),
    ("zipkin", ExporterKind::Zipkin),
    ("stdout", ExporterKind::Stdout),
    ("none", ExporterKind::None),
];
/// `[tracing] propagators`, by their `OTEL_PROPAGATORS` names.
pub(in crate::config) const PROPAGATORS: &[(&str, Propagator)] = &[
    ("tracecontext", Propagator::TraceContext),
    ("b3", Propagator::B3),
    ("b3multi", Propagator::B3Multi),
    ("jaeger", Propagator::Jaeger),
    ("xray", Propagator::XRay),
];
pub(in crate::config) const OTLP_PROTOCOLS: &[(&str, OtlpProtocol)] = &[
    ("grpc", OtlpProtocol::Grpc),
    ("http/protobuf", OtlpProtocol::HttpProtobuf),
];
pub(in crate::config) const COMPRESSIONS: &[(&str, Compression)] =
    &[("none", Compression::None), ("gzip", Compression::Gzip)];

/// Headers that carry credentials; recording them in spans would leak them to the collector.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "proxy-authorization",
    "set-cookie",
];

type Headers = Spanned<BTreeMap<Spanned<String>, Spanned<String>>>;

impl Check<'_> {
    pub(super) fn tracing(&mut self, doc: &Document) -> Option<TracingConfig> {
        let d = TracingConfig::default();
        let otlp = self.otlp(doc.otlp.as_ref().map(|t| &t.fields), &d.otlp);
        let zipkin = self.zipkin(doc.zipkin.as_ref().map(|t| &t.fields), &d.zipkin);
        let Some(t) = &doc.tracing else {
            return Some(TracingConfig {
                otlp: otlp?,
                zipkin: zipkin?,
                ..d
            });
        };
        let path = "tracing";
        let f = &t.fields;
        let exporter = self.or_default(path, "exporter", &f.exporter, d.exporter, |s| {
            value::one_of(s, EXPORTERS)
        });
        let sampling_ratio = self
            .ratio(path, "sampling_ratio", f.sampling_ratio.as_ref())
            .map(|r| r.unwrap_or(d.sampling_ratio));
        let traceresponse = f
            .traceresponse
            .as_ref()
            .map_or(d.traceresponse, |b| *b.get_ref());
        let trace_id_header = self.optional(
            path,
            "trace_id_header",
            &f.trace_id_header,
            value::header_name,
        );
        let capture_request_headers = self.captured_headers(
            "capture_request_headers",
            f.capture_request_headers.as_ref(),
        );
        let capture_response_headers = self.captured_headers(
            "capture_response_headers",
            f.capture_response_headers.as_ref(),
        );
        let redact_query_keys = match &f.redact_query_keys {
            Some(list) => self.redact_query_keys(list),
            None => Some(d.redact_query_keys),
        };
        let queue_size = self.count(path, "queue_size", f.queue_size.as_ref(), d.queue_size);
        let batch_size = self.batch_size(f, queue_size, d.batch_size);
        let batch_delay = self.or_default(
            path,
            "batch_delay",
            &f.batch_delay,
            d.batch_delay,
            value::positive_duration,
        );
        let propagators = match &f.propagators {
            Some(list) => self.propagators(list),
            None => Some(d.propagators),
        };
        let keep_errors = f.keep_errors.as_ref().is_some_and(|b| *b.get_ref());
        let keep_slower_than = self.optional(
            path,
            "keep_slower_than",
            &f.keep_slower_than,
            value::positive_duration,
        );
        Some(TracingConfig {
            propagators: propagators?,
            keep_errors,
            keep_slower_than: keep_slower_than?,
            zipkin: zipkin?,
            exporter: exporter?,
            sampling_ratio: sampling_ratio?,
            parent_based: d.parent_based,
            traceresponse,
            trace_id_header: trace_id_header?,
            capture_request_headers: capture_request_headers?,
            capture_response_headers: capture_response_headers?,
            redact_query_keys: redact_query_keys?,
            queue_size: queue_size?,
            batch_size: batch_size?,
            batch_delay: batch_delay?,
            otlp: otlp?,
        })
    }

    /// `propagators`: known names, each at most once; `[]` means none.
    fn propagators(&mut self, list: &Spanned<Vec<Spanned<String>>>) -> Option<Vec<Propagator>> {
        let items = list.get_ref().iter().enumerate();
        let parsed: Vec<_> = items
            .map(|(i, p)| {
                let path = format!("tracing.propagators[{i}]");
                let name = self.parse(path, p, |s| {
                    value::one_of(s, PROPAGATORS).map(|_| s.to_owned())
                });
                (i, p, name)
            })
            .collect();
        self.no_duplicates("tracing", "propagators", &parsed);
        let ok = self.no_repeats(&parsed);
        parsed
            .iter()
            .map(|(_, _, name)| value::one_of(name.as_deref()?, PROPAGATORS).ok())
            .collect::<Option<Vec<_>>>()
            .filter(|_| ok)
    }

    fn zipkin(&mut self, f: Option<&raw::Zipkin>, d: &ZipkinConfig) -> Option<ZipkinConfig> {
        let Some(f) = f else {
            return Some(d.clone());
        };
        let path = "tracing.zipkin";
        let endpoint = self.or_default(
            path,
            "endpoint",
            &f.endpoint,
            d.endpoint.clone(),
            value::collector_url,
        );
        let timeout = self.or_default(
            path,
            "timeout",
            &f.timeout,
            d.timeout,
            value::positive_duration,
        );
        Some(ZipkinConfig {
            endpoint: endpoint?,
            timeout: timeout?,
        })
    }

    /// An optional ratio key, `[tracing]` or per route.
    pub(super) fn ratio(
        &mut self,
        path: &str,
        key: &str,
        field: Option<&Spanned<f64>>,
    ) -> Option<Option<f64>> {
        let Some(r) = field else { return Some(None) };
        value::ratio(*r.get_ref())
            .map(Some)
            .map_err(|m| self.error(format!("{path}.{key}"), &r.span(), m))
            .ok()
    }

    fn count(
        &mut self,
        path: &str,
        key: &str,
        field: Option<&Spanned<i64>>,
        default: usize,
    ) -> Option<usize> {
        let Some(n) = field else { return Some(default) };
        value::at_least_one(*n.get_ref())
            .map_err(|m| self.error(format!("{path}.{key}"), &n.span(), m))
            .ok()
    }

    /// A batch larger than the queue could never fill. An explicit `batch_size` must fit;
    /// the default shrinks to the queue size, as the OpenTelemetry SDK's batch processor does.
    fn batch_size(
        &mut self,
        f: &raw::Tracing,
        queue_size: Option<usize>,
        default: usize,
    ) -> Option<usize> {
        let Some(n) = &f.batch_size else {
            return Some(queue_size.map_or(default, |q| default.min(q)));
        };
        let batch = self.count("tracing", "batch_size", Some(n), default)?;
        if let Some(queue) = queue_size.filter(|&q| batch > q) {
            let message = format!("must not exceed queue_size ({queue}), got {batch}");
            self.error("tracing.batch_size", &n.span(), message);
            return None;
        }
        Some(batch)
    }

    /// `capture_request_headers` / `capture_response_headers`: header names, no duplicates,
    /// and never a header that carries credentials.
    fn captured_headers(
        &mut self,
        key: &str,
        field: Option<&Spanned<Vec<Spanned<String>>>>,
    ) -> Option<Vec<http::HeaderName>> {
        let Some(list) = field else {
            return Some(Vec::new());
        };
        let items = list.get_ref().iter().enumerate();
        let parsed: Vec<_> = items
            .map(|(i, h)| {
                let parsed = self.parse(format!("tracing.{key}[{i}]"), h, |s| {
                    let name = value::header_name(s)?;
                    if CREDENTIAL_HEADERS.contains(&name.as_str()) {
                        return Err(format!(
                            "{:?} carries credentials and is never recorded",
                            name.as_str()
                        ));
                    }
                    Ok(name)
                });
                (i, h, parsed)
            })
            .collect();
        self.no_duplicates("tracing", key, &parsed);
        let ok = self.no_repeats(&parsed);
        parsed
            .into_iter()
            .map(|(_, _, h)| h)
            .collect::<Option<_>>()
            .filter(|_| ok)
    }

    fn redact_query_keys(&mut self, list: &Spanned<Vec<Spanned<String>>>) -> Option<Vec<String>> {
        let items = list.get_ref().iter().enumerate();
        let parsed: Vec<_> = items
            .map(|(i, k)| {
                let path = format!("tracing.redact_query_keys[{i}]");
                // Compared case-insensitively at runtime, so store one form.
                let key = self.parse(path, k, |s| value::non_empty(s).map(|s| s.to_lowercase()));
                (i, k, key)
            })
            .collect();
        self.no_duplicates("tracing", "redact_query_keys", &parsed);
        let ok = self.no_repeats(&parsed);
        parsed
            .into_iter()
            .map(|(_, _, k)| k)
            .collect::<Option<_>>()
            .filter(|_| ok)
    }

    /// Whether no parsed item repeats an earlier one (`no_duplicates` reports them).
    pub(super) fn no_repeats<T: PartialEq>(
        &self,
        items: &[(usize, &Spanned<String>, Option<T>)],
    ) -> bool {
        items.iter().enumerate().all(|(k, (_, _, item))| {
            item.is_none() || !items.iter().take(k).any(|(_, _, e)| e == item)
        })
    }

    fn otlp(&mut self, f: Option<&raw::Otlp>, d: &OtlpConfig) -> Option<OtlpConfig> {
        let Some(f) = f else {
            return Some(d.clone());
        };
        let path = "tracing.otlp";
        let protocol = self.or_default(path, "protocol", &f.protocol, d.protocol, |s| {
            value::one_of(s, OTLP_PROTOCOLS)
        });
        // Checked even when the protocol is bad, so that both errors show at once.
        let for_protocol = protocol.unwrap_or(d.protocol);
        let endpoint = self.or_default(
            path,
            "endpoint",
            &f.endpoint,
            value::default_otlp_endpoint(for_protocol),
            |s| value::otlp_endpoint(value::collector_url(s)?, for_protocol),
        );
        let headers = self.otlp_headers(f.headers.as_ref());
        let compression =
            self.or_default(path, "compression", &f.compression, d.compression, |s| {
                value::one_of(s, COMPRESSIONS)
            });
        let timeout = self.or_default(
            path,
            "timeout",
            &f.timeout,
            d.timeout,
            value::positive_duration,
        );
        let ca_file = self.optional(path, "ca_file", &f.ca_file, |s| {
            value::non_empty(s).map(PathBuf::from)
        });
        let identity = self.identity(path, &f.client_cert, &f.client_key);
        let (client_cert, client_key) = match identity? {
            Some((cert, key)) => (Some(cert.path), Some(key.path)),
            None => (None, None),
        };
        Some(OtlpConfig {
            client_cert,
            client_key,
            protocol: protocol?,
            endpoint: endpoint?,
            headers: headers?,
            compression: compression?,
            timeout: timeout?,
            ca_file: ca_file?,
        })
    }

    /// Values are secrets (API keys): error messages never repeat them.
    fn otlp_headers(&mut self, field: Option<&Headers>) -> Option<Vec<(String, Secret)>> {
        let Some(map) = field else {
            return Some(Vec::new());
        };
        let mut headers: Vec<(String, Secret)> = Vec::new();
        let mut ok = true;
        for (name, val) in map.get_ref() {
            let key = format!("tracing.otlp.headers.{}", raw::key_segment(name.get_ref()));
            let parsed_name = self.parse(key.clone(), name, value::header_name);
            let parsed_value = self.parse(key.clone(), val, |s| {
                http::HeaderValue::from_str(s)
                    .map(|_| Secret(s.to_owned()))
                    .map_err(|_| "invalid header value (not shown: it may be a secret)".to_owned())
            });
            let (Some(n), Some(v)) = (parsed_name, parsed_value) else {
                ok = false;
                continue;
            };
            // Names are case-insensitive: `X-A` and `x-a` are the same header.
            if headers.iter().any(|(seen, _)| seen == n.as_str()) {
                let message = format!("header {:?} is listed twice", n.as_str());
                self.error(key, &name.span(), message);
                ok = false;
                continue;
            }
            headers.push((n.as_str().to_owned(), v));
        }
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        ok.then_some(headers)
    }
}

#[cfg(test)]
mod tests;
