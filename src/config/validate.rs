//! Turns the raw document into a `Config`: required keys, value syntax, defaults, and the
//! checks across tables (unique names and binds, defined references, shadowed routes).
//! Every problem is collected; a `Config` is returned only if there are none.

#[cfg(test)]
mod proptests;
mod route;
mod stitching;
#[cfg(test)]
mod tests;
mod tls;
pub(super) mod tracing;
mod upstream;
pub(super) mod value;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use super::raw::{self, Document, Span, Table};
use super::{
    AdminConfig, Balance, Config, ConfigError, ConfigErrors, ListenerConfig, Protocol, Role,
    Secret, ServiceConfig, ShutdownConfig, TraceIncoming, UpstreamConfig,
};

const ROLES: &[(&str, Role)] = &[
    ("inbound", Role::Inbound),
    ("outbound", Role::Outbound),
    ("gateway", Role::Gateway),
];
const TRACE_INCOMING: &[(&str, TraceIncoming)] = &[
    ("continue", TraceIncoming::Continue),
    ("restart", TraceIncoming::Restart),
];
const PROTOCOLS: &[(&str, Protocol)] = &[("http1", Protocol::Http1), ("http2", Protocol::Http2)];
const BALANCES: &[(&str, Balance)] = &[("round_robin", Balance::RoundRobin), ("p2c", Balance::P2c)];

const DEFAULT_ADMIN_BIND: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9901,
));

pub(super) fn validate(text: &str) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let Some(doc) = raw::read(text, &mut errors) else {
        return Err(ConfigErrors::new(errors));
    };
    let mut check = Check { text, errors };
    let config = check.document(&doc);
    match config {
        Some(config) if check.errors.is_empty() => Ok(config),
        _ => {
            if check.errors.is_empty() {
                // Unreachable by construction (every `None` above pushed an error); never
                // report "0 errors" if that ever breaks.
                check
                    .errors
                    .push(ConfigError::new("", None, "invalid configuration"));
            }
            Err(ConfigErrors::new(check.errors))
        }
    }
}

/// Collects errors while building a `Config`. Builders return `None` after reporting why.
struct Check<'t> {
    text: &'t str,
    errors: Vec<ConfigError>,
}

impl Check<'_> {
    fn error(&mut self, path: impl Into<String>, span: &Span, message: impl Into<String>) {
        let line = raw::line_at(self.text, span.start);
        self.errors
            .push(ConfigError::new(path, Some(line), message));
    }

    fn parse<T>(
        &mut self,
        path: String,
        value: &Spanned<String>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        parse(value.get_ref())
            .map_err(|m| self.error(path, &value.span(), m))
            .ok()
    }

    /// A required key; missing is reported at the table's header, unless its value was
    /// already rejected as the wrong type.
    fn required<T, F>(
        &mut self,
        table: &Table<T>,
        path: &str,
        key: &str,
        field: &Option<Spanned<String>>,
        parse: impl FnOnce(&str) -> Result<F, String>,
    ) -> Option<F> {
        match field {
            Some(value) => self.parse(format!("{path}.{key}"), value, parse),
            None => {
                if !table.was_rejected(key) {
                    self.error(format!("{path}.{key}"), &table.span, "missing required key");
                }
                None
            }
        }
    }

    fn or_default<T>(
        &mut self,
        path: &str,
        key: &str,
        field: &Option<Spanned<String>>,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match field {
            Some(value) => self.parse(format!("{path}.{key}"), value, parse),
            None => Some(default),
        }
    }

    fn optional<T>(
        &mut self,
        path: &str,
        key: &str,
        field: &Option<Spanned<String>>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        self.or_default(path, key, field, None, |s| parse(s).map(Some))
    }

    fn int_or_default(
        &mut self,
        path: &str,
        key: &str,
        field: &Option<Spanned<i64>>,
        default: usize,
        (min, max): (i64, i64),
    ) -> Option<usize> {
        let Some(n) = field else { return Some(default) };
        value::in_range(*n.get_ref(), min, max)
            .map_err(|m| self.error(format!("{path}.{key}"), &n.span(), m))
            .ok()
    }

    fn document(&mut self, doc: &Document) -> Option<Config> {
        let service = self.service(doc);
        let admin = match &doc.admin {
            Some(t) => self.or_default(
                "admin",
                "bind",
                &t.fields.bind,
                DEFAULT_ADMIN_BIND,
                value::socket_addr,
            ),
            None => Some(DEFAULT_ADMIN_BIND),
        };
        let reload_token = match &doc.admin {
            // A secret: the message never repeats the value.
            Some(t) => self.optional("admin", "reload_token", &t.fields.reload_token, |s| {
                if s.len() < 16 {
                    return Err("must be at least 16 characters (value not shown)".to_owned());
                }
                http::HeaderValue::from_str(&format!("Bearer {s}"))
                    .map(|_| Secret(s.to_owned()))
                    .map_err(|_| "invalid characters for a header (value not shown)".to_owned())
            }),
            None => Some(None),
        };
        let shutdown = match &doc.shutdown {
            Some(t) => {
                let grace = Duration::from_secs(30);
                self.or_default("shutdown", "grace", &t.fields.grace, grace, value::duration)
            }
            None => Some(Duration::from_secs(30)),
        };

        if doc.listeners.is_empty() && !doc.rejected.iter().any(|k| k == "listeners") {
            let message = "at least one [[listeners]] table is required";
            self.errors
                .push(ConfigError::new("listeners", None, message));
        }
        let mut listeners = Vec::new();
        for (i, tables) in doc.listeners.iter().enumerate() {
            let tls = match &tables.tls {
                Some(t) => self.listener_tls(&format!("listeners[{i}]"), t).map(Some),
                None => Some(None),
            };
            let listener =
                (tables.listener.as_ref()).and_then(|t| self.listener(i, t, tables.trace.as_ref()));
            listeners.push(
                listener
                    .zip(tls)
                    .map(|(l, tls)| ListenerConfig { tls, ..l }),
            );
        }
        self.listener_conflicts(doc, admin);

        let mut upstreams = BTreeMap::new();
        for (name, table, tls) in &doc.upstreams {
            let path = format!("upstreams.{}", raw::key_segment(name.get_ref()));
            let tls = match tls {
                Some(t) => self.upstream_tls(&path, t).ok(),
                None => Some(None),
            };
            let upstream = table.as_ref().and_then(|t| self.upstream(&path, t));
            let upstream = upstream
                .zip(tls)
                .map(|(u, tls)| UpstreamConfig { tls, ..u });
            upstreams.insert(name.get_ref().clone(), upstream);
        }

        let routes = self.routes(doc);
        let tracing = self.tracing(doc);
        let stitching = self.stitching(doc);

        Some(Config {
            service: ServiceConfig {
                name: service?,
                resource_attributes: Vec::new(),
            },
            admin: AdminConfig {
                bind: admin?,
                reload_token: reload_token?,
            },
            shutdown: ShutdownConfig { grace: shutdown? },
            access_log: super::AccessLogConfig {
                enabled: doc
                    .access_log
                    .as_ref()
                    .and_then(|t| t.fields.enabled.as_ref())
                    .is_none_or(|enabled| *enabled.get_ref()),
            },
            listeners: listeners.into_iter().collect::<Option<_>>()?,
            routes: routes.into_iter().collect::<Option<_>>()?,
            upstreams: upstreams
                .into_iter()
                .map(|(name, u)| Some((name, u?)))
                .collect::<Option<_>>()?,
            tracing: tracing?,
            stitching: stitching?,
        })
    }

    fn service(&mut self, doc: &Document) -> Option<String> {
        let Some(t) = &doc.service else {
            if !doc.rejected.iter().any(|k| k == "service") {
                let message = "missing required table [service]";
                self.errors.push(ConfigError::new("service", None, message));
            }
            return None;
        };
        self.required(t, "service", "name", &t.fields.name, value::non_empty)
    }

    fn listener(
        &mut self,
        i: usize,
        t: &Table<raw::Listener>,
        trace: Option<&Table<raw::ListenerTrace>>,
    ) -> Option<ListenerConfig> {
        let path = &format!("listeners[{i}]");
        let f = &t.fields;
        let name = self.required(t, path, "name", &f.name, value::non_empty);
        let bind = self.required(t, path, "bind", &f.bind, value::socket_addr);
        let role = self.required(t, path, "role", &f.role, |s| value::one_of(s, ROLES));
        let header_read_timeout = self.or_default(
            path,
            "header_read_timeout",
            &f.header_read_timeout,
            Duration::from_secs(10),
            value::positive_duration,
        );
        let max_header_bytes = self.int_or_default(
            path,
            "max_header_bytes",
            &f.max_header_bytes,
            65536,
            (8192, 1 << 20),
        );
        let trace_incoming = match trace {
            Some(trace) => self.or_default(
                &format!("{path}.trace"),
                "incoming",
                &trace.fields.incoming,
                TraceIncoming::Continue,
                |s| value::one_of(s, TRACE_INCOMING),
            ),
            None => Some(TraceIncoming::Continue),
        };
        let max_headers =
            self.int_or_default(path, "max_headers", &f.max_headers, 100, (1, 10_000));
        let max_connections = match &f.max_connections {
            None => Some(None),
            Some(_) => self
                .int_or_default(path, "max_connections", &f.max_connections, 0, (1, 1 << 20))
                .map(Some),
        };
        Some(ListenerConfig {
            trace_incoming: trace_incoming?,
            name: name?,
            bind: bind?,
            role: role?,
            header_read_timeout: header_read_timeout?,
            max_header_bytes: max_header_bytes?,
            tls: None,
            max_headers: max_headers?,
            max_connections: max_connections?,
        })
    }

    /// Listener names are unique; no two sockets (admin included) could both be bound.
    fn listener_conflicts(&mut self, doc: &Document, admin: Option<SocketAddr>) {
        let mut names: Vec<(&str, usize)> = Vec::new();
        let mut binds: Vec<(SocketAddr, String)> = Vec::new();
        if let Some(admin) = admin {
            binds.push((admin, "admin.bind".to_owned()));
        }
        for (i, table) in doc.listeners.iter().enumerate() {
            let Some(f) = table.listener.as_ref().map(|t| &t.fields) else {
                continue;
            };
            if let Some(name) = f.name.as_ref().filter(|n| !n.get_ref().is_empty()) {
                match names.iter().find(|(n, _)| *n == name.get_ref()) {
                    Some((_, j)) => {
                        let message =
                            format!("{:?} is already used by listeners[{j}]", name.get_ref());
                        self.error(format!("listeners[{i}].name"), &name.span(), message);
                    }
                    None => names.push((name.get_ref(), i)),
                }
            }
            let Some(bind) = &f.bind else { continue };
            let Ok(addr) = bind.get_ref().parse::<SocketAddr>() else {
                continue;
            };
            if let Some((other, who)) = binds.iter().find(|(b, _)| binds_conflict(*b, addr)) {
                let message = format!("{addr} conflicts with {who} ({other})");
                self.error(format!("listeners[{i}].bind"), &bind.span(), message);
            }
            binds.push((addr, format!("listeners[{i}].bind")));
        }
    }

    /// Reports each parsed list item equal to an earlier one (`routes[0].methods[2]`).
    fn no_duplicates<T: PartialEq + std::fmt::Display>(
        &mut self,
        path: &str,
        key: &str,
        items: &[(usize, &Spanned<String>, Option<T>)],
    ) {
        for (k, (i, raw, item)) in items.iter().enumerate() {
            let Some(item) = item else { continue };
            let earlier = items
                .iter()
                .take(k)
                .find(|(_, _, e)| e.as_ref() == Some(item));
            if let Some((j, _, _)) = earlier {
                let message = format!("duplicates {key}[{j}] ({item})");
                self.error(format!("{path}.{key}[{i}]"), &raw.span(), message);
            }
        }
    }
}

/// Both could not be bound at once. Port 0 picks a free port, so it never conflicts; an
/// unspecified address (`0.0.0.0`, `[::]`) takes the port on every address.
fn binds_conflict(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
