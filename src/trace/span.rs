//! `SpanRecord`: one hop's span as plain data, filled in on the request path and turned into
//! OpenTelemetry's model only in the export task. Only sampled requests build one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::uri::Authority;
use http::{HeaderName, HeaderValue, Method, Uri, Version};

use super::context::{SpanId, TraceFlags, TraceId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// The request this hop received (inbound and gateway listeners).
    Server,
    /// One attempt to the upstream (outbound and gateway listeners).
    Client,
}

/// When the upstream connection was ready for this attempt, and whether it was pooled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionAcquired {
    /// Offset from the span's start.
    pub at: Duration,
    pub reused: bool,
}

#[derive(Clone, Debug)]
pub struct SpanRecord {
    pub kind: SpanKind,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    /// The parent came from another process (a `traceparent` header), not this one.
    pub parent_is_remote: bool,
    pub flags: TraceFlags,
    /// The caller asked for debug sampling (B3 `d` / `x-b3-flags: 1`, Jaeger flag 0x02).
    pub debug: bool,
    pub tracestate: Option<HeaderValue>,
    /// Wall-clock start, read once per request; `duration` comes from the monotonic clock.
    pub start: SystemTime,
    pub duration: Duration,
    pub method: Method,
    /// The matched route's template (its `name`, else its `path_prefix`).
    pub route: Option<Arc<str>>,
    /// The request target as received (path and query; absolute-form keeps its authority).
    pub target: Uri,
    /// `Host` (or `:authority`) as received.
    pub host: Option<HeaderValue>,
    pub scheme: &'static str,
    pub version: Version,
    /// The downstream peer (who sent us the request).
    pub client_addr: SocketAddr,
    /// Our own address the request arrived on.
    pub local_addr: SocketAddr,
    pub user_agent: Option<HeaderValue>,
    /// CLIENT: the endpoint actually used.
    pub peer: Option<Authority>,
    pub status: Option<u16>,
    /// One of the documented `error.type` values when the hop failed.
    pub error_type: Option<&'static str>,
    /// CLIENT: which attempt this is (0 = first).
    pub resend_count: u32,
    pub connection: Option<ConnectionAcquired>,
    /// CLIENT: response headers arrived this long after the span's start.
    pub first_byte: Option<Duration>,
    pub request_headers: Vec<(HeaderName, HeaderValue)>,
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Query keys whose values are replaced by `REDACTED` when exported.
    pub redact_query_keys: Arc<[String]>,
    /// Set when the head decision was not to sample but the span was kept anyway:
    /// `"error"` or `"slow"` (`hoptrace.kept_reason`).
    pub kept_reason: Option<&'static str>,
    /// Attributes beyond the HTTP ones (`hoptrace.parent.*` of an inferred parent).
    pub attributes: Vec<Attribute>,
    /// Spans this one relates to without being their child: the caller's context in restart
    /// mode, candidate parents of an outbound call that could not be attributed.
    pub links: Vec<SpanLink>,
}

/// An attribute with a fixed key.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    pub key: &'static str,
    pub value: AttributeValue,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValue {
    Bool(bool),
    F64(f64),
    Str(&'static str),
}

/// A link to another span (OpenTelemetry span link), with its own attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanLink {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
    /// The linked span's `tracestate`, when it came with one (a caller's context).
    pub tracestate: Option<HeaderValue>,
    /// The linked span belongs to another process (a caller), not to this one.
    pub remote: bool,
    pub attributes: Vec<Attribute>,
}

impl SpanRecord {
    /// Copies what may share the received head's buffer (target, `Host`, `User-Agent`,
    /// `tracestate`, captured headers) into its own allocations: a record kept for long
    /// (the recent-traces view) must not hold a connection's whole read buffer.
    pub fn detach(&mut self) {
        fn own(value: &mut HeaderValue) {
            if let Ok(copy) = HeaderValue::from_bytes(value.as_bytes()) {
                *value = copy;
            }
        }
        // The usual origin-form target is copied as bytes; others (absolute-form) through
        // their text.
        let copy = match (self.target.scheme(), self.target.path_and_query()) {
            (None, Some(pq)) => {
                Uri::from_maybe_shared(bytes::Bytes::copy_from_slice(pq.as_str().as_bytes()))
            }
            _ => Uri::try_from(self.target.to_string()),
        };
        if let Ok(target) = copy {
            self.target = target;
        }
        for value in [&mut self.host, &mut self.user_agent, &mut self.tracestate]
            .into_iter()
            .flatten()
        {
            own(value);
        }
        for (_, value) in self
            .request_headers
            .iter_mut()
            .chain(self.response_headers.iter_mut())
        {
            own(value);
        }
    }

    /// `{method} {route}`, or `{method}` when no route matched (OpenTelemetry HTTP
    /// semantic conventions: the route template, never the raw path; `HTTP` for a method
    /// outside the known set, whose attribute is `_OTHER`).
    pub fn name(&self) -> String {
        let method = crate::export::convert::known_method(&self.method).unwrap_or("HTTP");
        match &self.route {
            Some(route) => format!("{method} {route}"),
            None => method.to_string(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderName, HeaderValue, Uri};

    /// Whether `part` lies inside `buffer`'s memory.
    fn inside(part: &[u8], buffer: &Bytes) -> bool {
        let range = buffer.as_ptr_range();
        range.contains(&part.as_ptr())
    }

    #[test]
    fn a_detached_record_shares_nothing_with_the_received_head() {
        // As hyper parses a head: every value a slice of the one read buffer.
        let head = Bytes::from(
            b"/orders/7?x=1 shop.example curl/8 k=v 42-filler-to-make-it-large".repeat(100),
        );
        let slice = |from: usize, to: usize| head.slice(from..to);
        let mut record = crate::export::convert::test_record();
        record.target = Uri::from_maybe_shared(slice(0, 13)).unwrap();
        record.host = Some(HeaderValue::from_maybe_shared(slice(14, 26)).unwrap());
        record.user_agent = Some(HeaderValue::from_maybe_shared(slice(27, 33)).unwrap());
        record.tracestate = Some(HeaderValue::from_maybe_shared(slice(34, 37)).unwrap());
        record.request_headers = vec![(
            HeaderName::from_static("x-id"),
            HeaderValue::from_maybe_shared(slice(38, 40)).unwrap(),
        )];
        assert!(inside(record.host.as_ref().unwrap().as_bytes(), &head));
        record.detach();
        assert_eq!(record.target, "/orders/7?x=1");
        assert_eq!(record.host.as_ref().unwrap(), "shop.example");
        assert_eq!(record.user_agent.as_ref().unwrap(), "curl/8");
        assert_eq!(record.tracestate.as_ref().unwrap(), "k=v");
        assert_eq!(record.request_headers[0].1, "42");
        let parts = [
            record.target.path().as_bytes(),
            record.host.as_ref().unwrap().as_bytes(),
            record.user_agent.as_ref().unwrap().as_bytes(),
            record.tracestate.as_ref().unwrap().as_bytes(),
            record.request_headers[0].1.as_bytes(),
        ];
        for part in parts {
            assert!(!inside(part, &head), "{part:?} still in the head's buffer");
        }
        // An absolute-form target (a request to an HTTP proxy) is copied too.
        let absolute = Bytes::from_static(b"http://shop.example:8080/orders?x=1");
        record.target = Uri::from_maybe_shared(absolute.clone()).unwrap();
        record.detach();
        assert_eq!(record.target, "http://shop.example:8080/orders?x=1");
        assert!(!inside(record.target.path().as_bytes(), &absolute));
    }
}
