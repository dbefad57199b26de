//! Header hygiene for a proxy hop (RFC 9110 §7.6): hop-by-hop fields are removed, the
//! `X-Forwarded-*` fields are added.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the fields that describe this connection rather than the message: those RFC 9110
/// §7.6.1 names, `Proxy-Connection` (a non-standard alias clients still send), the
/// credentials meant for this proxy, and every field listed in `Connection`.
///
/// When `upgrade` is true (a `Connection: upgrade` handshake being relayed), `Upgrade` and
/// `Connection: upgrade` are kept, since the next hop must see them to switch protocols.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names says which of them are there: most messages carry none, and a
    // removal costs a hash of the name even when it finds nothing.
    let mut present = 0u16;
    for name in headers.keys() {
        present |= hop_by_hop_bit(name);
    }
    if present & CONNECTION != 0 {
        // Fields named in Connection are hop-by-hop too (§7.6.1). Collecting allocates, but
        // only for messages whose Connection names a field other than the fixed ones (the
        // common `keep-alive` and `close` are options, or a field removed below anyway).
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.eq_ignore_ascii_case(b"keep-alive") && !t.eq_ignore_ascii_case(b"close"))
            .filter_map(|token| HeaderName::from_bytes(token).ok())
            .filter(|name| !(upgrade && name == header::UPGRADE))
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    if present & KEEP_ALIVE_BIT != 0 {
        headers.remove(&KEEP_ALIVE);
    }
    if present & PROXY_CONNECTION_BIT != 0 {
        headers.remove(&PROXY_CONNECTION);
    }
    if present & TRANSFER_ENCODING != 0 {
        headers.remove(header::TRANSFER_ENCODING);
    }
    if present & PROXY_AUTHORIZATION != 0 {
        headers.remove(header::PROXY_AUTHORIZATION);
    }
    if present & PROXY_AUTHENTICATE != 0 {
        headers.remove(header::PROXY_AUTHENTICATE);
    }
    // `TE: trailers` must reach the next hop: gRPC servers require it.
    if present & TE != 0 {
        if let Some(te) = headers.get(header::TE) {
            if te.as_bytes().eq_ignore_ascii_case(b"trailers") {
                headers.insert(header::TE, HeaderValue::from_static("trailers"));
            } else {
                headers.remove(header::TE);
            }
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if present & UPGRADE != 0 {
        headers.remove(header::UPGRADE);
    }
}

const CONNECTION: u16 = 1;
const KEEP_ALIVE_BIT: u16 = 1 << 1;
const PROXY_CONNECTION_BIT: u16 = 1 << 2;
const TRANSFER_ENCODING: u16 = 1 << 3;
const PROXY_AUTHORIZATION: u16 = 1 << 4;
const PROXY_AUTHENTICATE: u16 = 1 << 5;
const TE: u16 = 1 << 6;
const UPGRADE: u16 = 1 << 7;

/// Which hop-by-hop field `name` is, as a bit; 0 for an end-to-end field. Standard names
/// compare as small integers, the two non-standard ones by length first.
fn hop_by_hop_bit(name: &HeaderName) -> u16 {
    if name == header::CONNECTION {
        CONNECTION
    } else if name == header::TRANSFER_ENCODING {
        TRANSFER_ENCODING
    } else if name == header::TE {
        TE
    } else if name == header::UPGRADE {
        UPGRADE
    } else if name == header::PROXY_AUTHORIZATION {
        PROXY_AUTHORIZATION
    } else if name == header::PROXY_AUTHENTICATE {
        PROXY_AUTHENTICATE
    } else if name == KEEP_ALIVE {
        KEEP_ALIVE_BIT
    } else if name == PROXY_CONNECTION {
        PROXY_CONNECTION_BIT
    } else {
        0
    }
}

/// True when an HTTP/1.1 request asks to switch protocols (WebSocket and the like).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && has_token(headers, header::CONNECTION, "upgrade")
}

/// Whether a comma-separated header lists `token` (case-insensitively).
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The `X-Forwarded-*` fields of a request that arrived without any: written straight into
/// an HTTP/1.1 upstream's request head (`h1::encode_head`), or into the header map for the
/// other ways out (`insert_into`). Building them in the map costs three hashed names, three
/// insertions and an allocation for the address per request.
#[derive(Clone, Debug)]
pub struct Forwarded {
    client: IpAddr,
    proto: &'static str,
    host: Option<HeaderValue>,
}

impl Forwarded {
    /// What `add_forwarded` would add: deferred (`Some`) when `headers` has no
    /// `X-Forwarded-*` field yet, added to `headers` at once (`None`) when it has one, to be
    /// extended or kept.
    pub fn add(
        headers: &mut HeaderMap,
        client: IpAddr,
        proto: &'static str,
        host: Option<HeaderValue>,
    ) -> Option<Forwarded> {
        let present = headers.keys().any(|name| {
            name == X_FORWARDED_FOR || name == X_FORWARDED_PROTO || name == X_FORWARDED_HOST
        });
        if present {
            add_forwarded(headers, client, proto, host);
            return None;
        }
        Some(Forwarded {
            client,
            proto,
            host,
        })
    }

    /// The fields as head lines.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"x-forwarded-for: ");
        out.extend_from_slice(crate::text::ip(self.client).as_bytes());
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(self.proto.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(host) = &self.host {
            out.extend_from_slice(b"x-forwarded-host: ");
            out.extend_from_slice(host.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The fields into `headers` (which has none of them).
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        add_forwarded(headers, self.client, self.proto, self.host.clone());
    }
}

/// Appends the client's address to `X-Forwarded-For`; sets `X-Forwarded-Proto` and
/// `X-Forwarded-Host` unless an earlier hop already did (the first hop knows what the
/// original client used; later hops would overwrite it with their own view).
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    // Each name is hashed once (`entry`); the value is built on the stack when it fits (one
    // allocation, the header value's own).
    let mut stack = [0u8; 256];
    let mut heap = Vec::new();
    let entry = headers.entry(X_FORWARDED_FOR.clone());
    let write = |out: &mut dyn std::io::Write,
                 prior: Option<&header::OccupiedEntry<'_, HeaderValue>>|
     -> std::io::Result<()> {
        for prior in prior.into_iter().flat_map(|entry| entry.iter()) {
            if prior.to_str().is_ok() {
                out.write_all(prior.as_bytes())?;
                out.write_all(b", ")?;
            }
        }
        out.write_all(crate::text::ip(client).as_bytes())
    };
    let prior = match &entry {
        header::Entry::Occupied(entry) => Some(entry),
        header::Entry::Vacant(_) => None,
    };
    let mut out = std::io::Cursor::new(&mut stack[..]);
    let value = match write(&mut out, prior) {
        Ok(()) => {
            let len = out.position() as usize;
            HeaderValue::from_bytes(stack.get(..len).unwrap_or_default())
        }
        Err(_) => {
            let _ = write(&mut heap, prior);
            HeaderValue::from_bytes(&heap)
        }
    };
    if let Ok(value) = value {
        match entry {
            header::Entry::Occupied(mut entry) => {
                entry.insert(value);
            }
            header::Entry::Vacant(entry) => {
                entry.insert(value);
            }
        }
    }
    if let header::Entry::Vacant(entry) = headers.entry(X_FORWARDED_PROTO.clone()) {
        entry.insert(HeaderValue::from_static(proto));
    }
    if let Some(host) = host {
        if let header::Entry::Vacant(entry) = headers.entry(X_FORWARDED_HOST.clone()) {
            entry.insert(host);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("upgrade", "websocket"),
            ("x-keep", "yes"),
        ]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn te_trailers_and_upgrade_survive_when_relevant() {
        let mut h = map(&[("te", "trailers")]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h["te"], "trailers");

        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarded_for_appends_and_proto_host_are_kept_from_first_hop() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        add_forwarded(
            &mut h,
            "10.0.0.1".parse().unwrap(),
            "http",
            Some(HeaderValue::from_static("shop.example")),
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.example");

        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "::1".parse().unwrap(), "http", None);
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(!h.contains_key("x-forwarded-host"));
    }

    #[test]
    fn a_long_forwarded_for_chain_is_appended_whole() {
        // Longer than the stack buffer: built on the heap instead, nothing cut.
        let chain = (0..40)
            .map(|i| format!("10.0.{i}.{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_str(&chain).unwrap());
        h.append("x-forwarded-for", HeaderValue::from_static("192.168.1.1"));
        add_forwarded(&mut h, "10.9.9.9".parse().unwrap(), "http", None);
        assert!(chain.len() > 256);
        assert_eq!(
            h["x-forwarded-for"],
            format!("{chain}, 192.168.1.1, 10.9.9.9").as_str()
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    }

    /// Deferred or not, the upstream gets what `add_forwarded` writes into the map.
    #[test]
    fn forwarded_fields_written_in_the_head_are_what_add_forwarded_adds() {
        let host = Some(HeaderValue::from_static("shop.example:8080"));
        for (client, proto, host) in [
            ("10.0.0.1", "http", host.clone()),
            ("2001:db8::7", "https", None),
            ("::ffff:127.0.0.1", "http", host),
        ] {
            let client: IpAddr = client.parse().unwrap();
            let mut expected = map(&[("host", "shop.example:8080")]);
            add_forwarded(&mut expected, client, proto, host.clone());

            let mut deferred = map(&[("host", "shop.example:8080")]);
            let forwarded = Forwarded::add(&mut deferred, client, proto, host.clone()).unwrap();
            assert_eq!(deferred.len(), 1, "nothing added to the map yet");
            let mut head = Vec::new();
            forwarded.encode(&mut head);
            for line in String::from_utf8(head).unwrap().split_terminator("\r\n") {
                let (name, value) = line.split_once(": ").unwrap();
                deferred.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            assert_eq!(deferred, expected);

            let mut inserted = map(&[("host", "shop.example:8080")]);
            forwarded.insert_into(&mut inserted);
            assert_eq!(inserted, expected);
        }
        // A request that came with any of them: extended in the map at once.
        for name in ["x-forwarded-for", "X-Forwarded-Proto", "x-forwarded-host"] {
            let mut h = HeaderMap::new();
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("1.2.3.4"),
            );
            let mut expected = h.clone();
            add_forwarded(&mut expected, "10.0.0.1".parse().unwrap(), "http", None);
            assert!(Forwarded::add(&mut h, "10.0.0.1".parse().unwrap(), "http", None).is_none());
            assert_eq!(h, expected);
        }
    }
}
