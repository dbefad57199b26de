//! The TOML schema as written, and reading a document into it one table at a time so that
//! every structural error (unknown key, wrong type) is reported, not just the first.
//!
//! Every key is optional and `Spanned` here: whether a key is required, and whether its value
//! makes sense, is decided in `validate`, which needs the spans for line numbers.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::ConfigError;

pub(super) type Span = Range<usize>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Service {
    pub name: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Admin {
    pub bind: Option<Spanned<String>>,
    pub reload_token: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Shutdown {
    pub grace: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccessLog {
    pub enabled: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Listener {
    pub name: Option<Spanned<String>>,
    pub bind: Option<Spanned<String>>,
    pub role: Option<Spanned<String>>,
    pub header_read_timeout: Option<Spanned<String>>,
    // Signed so that a negative number gets a range error rather than a type error.
    pub max_header_bytes: Option<Spanned<i64>>,
    /// `[listeners.tls]` is read as its own table (`ListenerTls`); listed so it is allowed.
    #[allow(dead_code)]
    pub tls: Option<serde::de::IgnoredAny>,
    /// `[listeners.trace]`, the same way (`ListenerTrace`).
    #[allow(dead_code)]
    pub trace: Option<serde::de::IgnoredAny>,
    pub max_headers: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerTls {
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub client_ca: Option<Spanned<String>>,
    pub client_auth: Option<Spanned<String>>,
}

/// `[listeners.trace]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerTrace {
    pub incoming: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Route {
    pub name: Option<Spanned<String>>,
    pub listener: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub headers: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    pub upstream: Option<Spanned<String>>,
    pub tracing: Option<Spanned<bool>>,
    // `f64` also accepts a TOML integer, so `0` and `1` work as well as `0.0` and `1.0`.
    pub sampling_ratio: Option<Spanned<f64>>,
    pub max_request_body: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Tracing {
    pub exporter: Option<Spanned<String>>,
    pub sampling_ratio: Option<Spanned<f64>>,
    pub traceresponse: Option<Spanned<bool>>,
    pub trace_id_header: Option<Spanned<String>>,
    pub capture_request_headers: Option<Spanned<Vec<Spanned<String>>>>,
    pub capture_response_headers: Option<Spanned<Vec<Spanned<String>>>>,
    pub redact_query_keys: Option<Spanned<Vec<Spanned<String>>>>,
    pub queue_size: Option<Spanned<i64>>,
    pub batch_size: Option<Spanned<i64>>,
    pub batch_delay: Option<Spanned<String>>,
    pub propagators: Option<Spanned<Vec<Spanned<String>>>>,
    pub keep_errors: Option<Spanned<bool>>,
    pub keep_slower_than: Option<Spanned<String>>,
    /// `[tracing.zipkin]`, like `otlp`, is read as its own table (`Zipkin`).
    #[allow(dead_code)]
    pub zipkin: Option<serde::de::IgnoredAny>,
    /// `[tracing.otlp]` is taken out and read as its own table (`Otlp`) before this struct
    /// is read; the field is here so that `otlp` is an allowed key.
    #[allow(dead_code)]
    pub otlp: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Otlp {
    pub protocol: Option<Spanned<String>>,
    pub endpoint: Option<Spanned<String>>,
    pub headers: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    pub compression: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub client_cert: Option<Spanned<String>>,
    pub client_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Zipkin {
    pub endpoint: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Upstream {
    pub endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    pub protocol: Option<Spanned<String>>,
    pub balance: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub request_timeout: Option<Spanned<String>>,
    pub body_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub max_idle_per_endpoint: Option<Spanned<i64>>,
    pub failure_backoff: Option<Spanned<String>>,
    /// `[upstreams.NAME.tls]` is read as its own table (`UpstreamTls`); listed so it is allowed.
    #[allow(dead_code)]
    pub tls: Option<serde::de::IgnoredAny>,
    pub retries: Option<Spanned<i64>>,
    pub retry_on: Option<Spanned<Vec<Spanned<i64>>>>,
    pub retry_budget: Option<Spanned<f64>>,
    pub retry_budget_min_per_second: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamTls {
    pub enabled: Option<Spanned<bool>>,
    pub ca: Option<Spanned<String>>,
    pub server_name: Option<Spanned<String>>,
    pub client_cert: Option<Spanned<String>>,
    pub client_key: Option<Spanned<String>>,
}

/// `[upstreams.NAME]`: the name, the table unless it was not a table at all, and its `tls`
/// table if it has one.
pub(super) type NamedUpstream = (
    Spanned<String>,
    Option<Table<Upstream>>,
    Option<Table<UpstreamTls>>,
);

/// `[[listeners]]` element: the table unless it was not a table at all, and its `tls` and
/// `trace` sub-tables if it has them.
#[derive(Debug)]
pub(super) struct ListenerTables {
    pub listener: Option<Table<Listener>>,
    pub tls: Option<Table<ListenerTls>>,
    pub trace: Option<Table<ListenerTrace>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Stitching {
    pub enabled: Option<Spanned<bool>>,
    pub min_confidence: Option<Spanned<f64>>,
    pub max_candidates: Option<Spanned<i64>>,
    pub max_inflight: Option<Spanned<i64>>,
    pub max_models: Option<Spanned<i64>>,
    pub linger: Option<Spanned<String>>,
    pub content_headers: Option<Spanned<Vec<Spanned<String>>>>,
    pub report_interval: Option<Spanned<String>>,
}

/// Top-level keys, in the order the docs present them.
const SECTIONS: &[&str] = &[
    "service",
    "admin",
    "shutdown",
    "access_log",
    "listeners",
    "routes",
    "upstreams",
    "tracing",
    "stitching",
];

/// One TOML table read into its raw struct.
#[derive(Debug)]
pub(super) struct Table<T> {
    pub fields: T,
    /// The table's header (`[[routes]]`) or inline `{ ... }`: where a missing key is reported.
    pub span: Span,
    /// Keys whose value was rejected here; `validate` must not also call them missing.
    pub rejected: Vec<String>,
}

impl<T> Table<T> {
    pub fn was_rejected(&self, key: &str) -> bool {
        self.rejected.iter().any(|k| k == key)
    }
}

/// The document, section by section. An array element or upstream that is not a table at all
/// is `None`, so indices still match the file.
#[derive(Debug, Default)]
pub(super) struct Document {
    pub service: Option<Table<Service>>,
    pub admin: Option<Table<Admin>>,
    pub shutdown: Option<Table<Shutdown>>,
    pub access_log: Option<Table<AccessLog>>,
    pub listeners: Vec<ListenerTables>,
    pub routes: Vec<Option<Table<Route>>>,
    pub upstreams: Vec<NamedUpstream>,
    pub tracing: Option<Table<Tracing>>,
    /// `[tracing.otlp]`, read apart from `[tracing]` so its errors name `tracing.otlp.KEY`.
    pub otlp: Option<Table<Otlp>>,
    /// `[tracing.zipkin]`, read the same way.
    pub zipkin: Option<Table<Zipkin>>,
    pub stitching: Option<Table<Stitching>>,
    /// Top-level keys whose value was rejected (e.g. `service = 1`).
    pub rejected: Vec<String>,
}

/// Reads `text` into a `Document`, pushing every structural error. `None` means a TOML syntax
/// error, which is reported alone: after one, the parser cannot say what the file meant.
pub(super) fn read(text: &str, errors: &mut Vec<ConfigError>) -> Option<Document> {
    let root = match DeTable::parse(text) {
        Ok(root) => root.into_inner(),
        Err(e) => {
            let line = e.span().map(|span| line_at(text, span.start));
            errors.push(ConfigError::new(
                "",
                line,
                format!("syntax error: {}", e.message()),
            ));
            return None;
        }
    };
    let reader = Reader { text, errors };
    Some(reader.document(root))
}

/// 1-based line of a byte offset (offsets past the end count as the last line).
pub(super) fn line_at(text: &str, offset: usize) -> usize {
    text.bytes().take(offset).filter(|&b| b == b'\n').count() + 1
}

/// A key as it appears in an error's path: bare if TOML allows, else quoted.
pub(super) fn key_segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

struct Reader<'t, 'e> {
    text: &'t str,
    errors: &'e mut Vec<ConfigError>,
}

impl Reader<'_, '_> {
    fn error(&mut self, path: String, at: usize, message: String) {
        let line = line_at(self.text, at);
        self.errors
            .push(ConfigError::new(path, Some(line), message));
    }

    fn document(mut self, root: DeTable<'_>) -> Document {
        let mut doc = Document::default();
        for (key, value) in root {
            let name = key.get_ref().as_ref();
            let ok = match name {
                "service" => self.table(name, value).map(|t| doc.service = Some(t)),
                "admin" => self.table(name, value).map(|t| doc.admin = Some(t)),
                "shutdown" => self.table(name, value).map(|t| doc.shutdown = Some(t)),
                "access_log" => self.table(name, value).map(|t| doc.access_log = Some(t)),
                "listeners" => self.listeners(value).map(|v| doc.listeners = v),
                "routes" => self.array(name, value).map(|v| doc.routes = v),
                "upstreams" => self.upstreams(value).map(|v| doc.upstreams = v),
                "tracing" => self.tracing(value, &mut doc),
                "stitching" => self.table(name, value).map(|t| doc.stitching = Some(t)),
                _ => {
                    self.unknown_key(key_segment(name), key.span().start, SECTIONS);
                    Some(())
                }
            };
            if ok.is_none() {
                doc.rejected.push(name.to_owned());
            }
        }
        doc
    }

    /// `[[name]]` tables; `None` if the value is not an array at all.
    fn array<T: DeserializeOwned>(
        &mut self,
        name: &str,
        value: Spanned<DeValue<'_>>,
    ) -> Option<Vec<Option<Table<T>>>> {
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(items) => Some(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| self.table(&format!("{name}[{i}]"), item))
                    .collect(),
            ),
            other => {
                let message = format!(
                    "expected an array of tables ([[{name}]]), found {}",
                    other.type_str()
                );
                self.error(name.to_owned(), span.start, message);
                None
            }
        }
    }

    /// `[upstreams.NAME]` tables, keyed by name.
    fn upstreams(&mut self, value: Spanned<DeValue<'_>>) -> Option<Vec<NamedUpstream>> {
        let span = value.span();
        match value.into_inner() {
            DeValue::Table(entries) => Some(
                entries
                    .into_iter()
                    .map(|(name, item)| {
                        let path = format!("upstreams.{}", key_segment(name.get_ref()));
                        let name = Spanned::new(name.span(), name.get_ref().to_string());
                        let (item, tls) = self.take_sub(&path, "tls", item);
                        (name, self.table(&path, item), tls)
                    })
                    .collect(),
            ),
            other => {
                let message = format!(
                    "expected a table of upstreams ([upstreams.NAME]), found {}",
                    other.type_str()
                );
                self.error("upstreams".to_owned(), span.start, message);
                None
            }
        }
    }

    /// `[[listeners]]`, each with its `[listeners.tls]` and `[listeners.trace]` taken out and
    /// read on their own, so their errors name `listeners[0].tls.KEY` and are reported along
    /// with the listener's own.
    fn listeners(&mut self, value: Spanned<DeValue<'_>>) -> Option<Vec<ListenerTables>> {
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(items) => Some(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let path = format!("listeners[{i}]");
                        let (item, tls) = self.take_sub(&path, "tls", item);
                        let (item, trace) = self.take_sub(&path, "trace", item);
                        ListenerTables {
                            listener: self.table(&path, item),
                            tls,
                            trace,
                        }
                    })
                    .collect(),
            ),
            other => {
                let message = format!(
                    "expected an array of tables ([[listeners]]), found {}",
                    other.type_str()
                );
                self.error("listeners".to_owned(), span.start, message);
                None
            }
        }
    }

    /// Takes the sub-table `key` out of a table value and reads it as `T` under
    /// `{path}.{key}`; the rest is returned to be read as the outer table.
    fn take_sub<'v, T: DeserializeOwned>(
        &mut self,
        path: &str,
        key: &str,
        value: Spanned<DeValue<'v>>,
    ) -> (Spanned<DeValue<'v>>, Option<Table<T>>) {
        let span = value.span();
        match value.into_inner() {
            DeValue::Table(mut table) => {
                let sub = table
                    .remove(key)
                    .and_then(|sub| self.table(&format!("{path}.{key}"), sub));
                (Spanned::new(span, DeValue::Table(table)), sub)
            }
            other => (Spanned::new(span, other), None),
        }
    }

    /// `[tracing]`, with `[tracing.otlp]` and `[tracing.zipkin]` taken out first and read as
    /// tables of their own.
    fn tracing(&mut self, value: Spanned<DeValue<'_>>, doc: &mut Document) -> Option<()> {
        let span = value.span();
        let value = match value.into_inner() {
            DeValue::Table(mut table) => {
                if let Some(otlp) = table.remove("otlp") {
                    doc.otlp = self.table("tracing.otlp", otlp);
                }
                if let Some(zipkin) = table.remove("zipkin") {
                    doc.zipkin = self.table("tracing.zipkin", zipkin);
                }
                DeValue::Table(table)
            }
            other => other,
        };
        doc.tracing = Some(self.table("tracing", Spanned::new(span, value))?);
        Some(())
    }

    /// Reads one table into `T`, reporting each unknown key and each value of the wrong type
    /// under its own key; the rest of the table is still read.
    fn table<T: DeserializeOwned>(
        &mut self,
        path: &str,
        value: Spanned<DeValue<'_>>,
    ) -> Option<Table<T>> {
        let span = value.span();
        let mut table = match value.into_inner() {
            DeValue::Table(table) => table,
            other => {
                let message = format!("expected a table, found {}", other.type_str());
                self.error(path.to_owned(), span.start, message);
                return None;
            }
        };
        // serde's `deny_unknown_fields` stops at the first unknown key; list them all here.
        let allowed = keys_of::<T>();
        let unknown: Vec<_> = table
            .keys()
            .filter(|k| !allowed.contains(&k.get_ref().as_ref()))
            .cloned()
            .collect();
        for key in unknown {
            let name = key.get_ref().as_ref();
            self.unknown_key(
                format!("{path}.{}", key_segment(name)),
                key.span().start,
                allowed,
            );
            table.remove(name);
        }
        // Every field is optional, so a failure is a wrong type somewhere inside one key's
        // value: report it under that key, drop the key, and read the rest again. Each round
        // removes a key, so this ends.
        let mut rejected = Vec::new();
        loop {
            let attempt = Spanned::new(span.clone(), DeValue::Table(table.clone()));
            let e = match T::deserialize(ValueDeserializer::from(attempt)) {
                Ok(fields) => {
                    return Some(Table {
                        fields,
                        span,
                        rejected,
                    });
                }
                Err(e) => e,
            };
            let at = e.span().map_or(span.start, |s| s.start);
            let culprit = table
                .iter()
                .find(|(k, v)| k.span().contains(&at) || v.span().contains(&at))
                .map(|(k, _)| k.get_ref().to_string());
            let Some(key) = culprit else {
                self.error(path.to_owned(), at, e.message().to_owned());
                return None;
            };
            self.error(
                format!("{path}.{}", key_segment(&key)),
                at,
                e.message().to_owned(),
            );
            table.remove(key.as_str());
            rejected.push(key);
        }
    }

    fn unknown_key(&mut self, path: String, at: usize, allowed: &[&str]) {
        let message = format!("unknown key; expected one of: {}", allowed.join(", "));
        self.error(path, at, message);
    }
}

/// The keys a raw struct accepts, taken from its serde derive so the list in the error message
/// cannot drift from the schema.
fn keys_of<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor};

    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Self::Error::custom("probe only"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_schema() {
        assert_eq!(
            keys_of::<Route>(),
            [
                "name",
                "listener",
                "host",
                "path_prefix",
                "methods",
                "headers",
                "upstream",
                "tracing",
                "sampling_ratio",
                "max_request_body"
            ]
        );
    }

    #[test]
    fn lines_are_one_based_and_never_panic() {
        assert_eq!(line_at("a\nb\nc", 0), 1);
        assert_eq!(line_at("a\nb\nc", 2), 2);
        assert_eq!(line_at("a\nb\nc", 999), 3);
    }
}
