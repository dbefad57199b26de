//! OTLP protobuf, written by hand from `SpanRecord`s: an `ExportTraceServiceRequest` with
//! one `ResourceSpans` (this process) holding one `ScopeSpans` (hoptrace) holding the batch.
//!
//! The gRPC export path encodes each span into the batch's buffer as it arrives, with no
//! intermediate model: going through `SpanData` and opentelemetry-proto's message structs
//! cost about 4 µs per span in allocations, copies and frees (`cargo bench --bench
//! span_encode`). The output decodes to exactly what opentelemetry-otlp would send for the
//! same spans (unit test below, against opentelemetry-proto's own conversion).
//!
//! Field numbers: `opentelemetry/proto/trace/v1/trace.proto`, `common/v1/common.proto`,
//! `resource/v1/resource.proto`, `collector/trace/v1/trace_service.proto`.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry::trace::TraceState as OtelTraceState;
use opentelemetry::{Array, InstrumentationScope, Value};
use opentelemetry_sdk::Resource;

use super::convert::{self, AttributeSink, Text};
use crate::trace::span::{SpanKind, SpanRecord};

const LEN: u32 = 2;
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const FIXED32: u32 = 5;

/// `SpanFlags`: the low byte is the W3C trace flags; these say whether the parent (or the
/// linked span) is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// A protobuf writer over a growable buffer. Nested messages are length-prefixed: `begin`
/// reserves one byte for the length, `end` writes it, moving the message right in the rare
/// case that its length needs more than one byte (a span, a long attribute).
struct Writer<'a> {
    buf: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn tag(&mut self, field: u32, wire: u32) {
        self.varint(u64::from((field << 3) | wire));
    }

    fn bytes(&mut self, field: u32, value: &[u8]) {
        self.tag(field, LEN);
        self.varint(value.len() as u64);
        self.buf.extend_from_slice(value);
    }

    /// A `string`/`bytes` field, left out when empty (proto3 default).
    fn bytes_nonempty(&mut self, field: u32, value: &[u8]) {
        if !value.is_empty() {
            self.bytes(field, value);
        }
    }

    fn uint(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.tag(field, VARINT);
            self.varint(value);
        }
    }

    fn fixed64(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.tag(field, FIXED64);
            self.buf.extend_from_slice(&value.to_le_bytes());
        }
    }

    fn fixed32(&mut self, field: u32, value: u32) {
        if value != 0 {
            self.tag(field, FIXED32);
            self.buf.extend_from_slice(&value.to_le_bytes());
        }
    }

    fn begin(&mut self, field: u32) -> usize {
        self.tag(field, LEN);
        self.buf.push(0);
        self.buf.len()
    }

    fn end(&mut self, body: usize) {
        let len = self.buf.len() - body;
        if len < 0x80 {
            self.buf[body - 1] = len as u8;
            return;
        }
        let mut prefix = [0u8; 10];
        let mut n = 0;
        let mut v = len as u64;
        while v >= 0x80 {
            prefix[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        prefix[n] = v as u8;
        self.buf
            .splice(body - 1..body, prefix[..=n].iter().copied());
    }

    /// `AnyValue` with its `oneof` set (always written, even when empty).
    fn any_string(&mut self, field: u32, value: &[u8]) {
        let at = self.begin(field);
        self.bytes(1, value);
        self.end(at);
    }

    /// `KeyValue { key, value: AnyValue }`, the value written by `value`.
    fn key_value(&mut self, field: u32, key: &[u8], value: impl FnOnce(&mut Self)) {
        let at = self.begin(field);
        self.bytes_nonempty(1, key);
        let v = self.begin(2);
        value(self);
        self.end(v);
        self.end(at);
    }

    /// An OpenTelemetry `Value` as `AnyValue`'s fields (resource and scope attributes).
    fn value(&mut self, value: &Value) {
        match value {
            Value::Bool(b) => {
                self.tag(2, VARINT);
                self.varint(u64::from(*b));
            }
            Value::I64(i) => {
                self.tag(3, VARINT);
                self.varint(*i as u64);
            }
            Value::F64(f) => {
                self.tag(4, FIXED64);
                self.buf.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            Value::String(s) => self.bytes(1, s.as_str().as_bytes()),
            Value::Array(array) => {
                let at = self.begin(5);
                match array {
                    Array::Bool(v) => v.iter().for_each(|x| self.array_item(&Value::Bool(*x))),
                    Array::I64(v) => v.iter().for_each(|x| self.array_item(&Value::I64(*x))),
                    Array::F64(v) => v.iter().for_each(|x| self.array_item(&Value::F64(*x))),
                    Array::String(v) => v
                        .iter()
                        .for_each(|x| self.any_string(1, x.as_str().as_bytes())),
                    _ => {}
                }
                self.end(at);
            }
            _ => {}
        }
    }

    fn array_item(&mut self, value: &Value) {
        let at = self.begin(1);
        self.value(value);
        self.end(at);
    }
}

/// Span attributes (field `attributes` of a span, event or link) straight onto the wire.
struct Attributes<'w, 'b> {
    w: &'w mut Writer<'b>,
    field: u32,
}

impl Attributes<'_, '_> {
    /// `KeyValue { key, value: AnyValue { <value_tag>: value } }` for a length-delimited
    /// value, in four copies when every length fits in one byte (nearly every attribute):
    /// no length to patch afterwards. False when it does not fit; the caller writes it the
    /// general way.
    fn short(&mut self, key: &[u8], value_tag: u8, value: &[u8]) -> bool {
        let any_len = 2 + value.len();
        let kv_len = 2 + key.len() + 2 + any_len;
        let field_tag = (self.field << 3) | LEN;
        if kv_len >= 0x80 || key.is_empty() || field_tag >= 0x80 {
            return false;
        }
        let buf = &mut *self.w.buf;
        buf.reserve(2 + kv_len);
        buf.extend_from_slice(&[field_tag as u8, kv_len as u8, 0x0A, key.len() as u8]);
        buf.extend_from_slice(key);
        buf.extend_from_slice(&[0x12, any_len as u8, value_tag, value.len() as u8]);
        buf.extend_from_slice(value);
        true
    }
}

impl AttributeSink for Attributes<'_, '_> {
    fn string(&mut self, key: &'static str, value: Text<'_>) {
        let value = value.as_str().as_bytes();
        // AnyValue.string_value: field 1, length-delimited.
        if !self.short(key.as_bytes(), (1 << 3) | LEN as u8, value) {
            self.w
                .key_value(self.field, key.as_bytes(), |w| w.bytes(1, value));
        }
    }

    fn int(&mut self, key: &'static str, value: i64) {
        // AnyValue.int_value: field 3, a varint.
        let mut digits = [0u8; 10];
        let mut n = 0;
        let mut v = value as u64;
        while v >= 0x80 && n < 9 {
            digits[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        digits[n] = v as u8;
        let varint = digits.get(..=n).unwrap_or_default();
        let key = key.as_bytes();
        let any_len = 1 + varint.len();
        let kv_len = 2 + key.len() + 2 + any_len;
        let field_tag = (self.field << 3) | LEN;
        if kv_len < 0x80 && !key.is_empty() && field_tag < 0x80 {
            let buf = &mut *self.w.buf;
            buf.reserve(2 + kv_len);
            buf.extend_from_slice(&[field_tag as u8, kv_len as u8, 0x0A, key.len() as u8]);
            buf.extend_from_slice(key);
            buf.extend_from_slice(&[0x12, any_len as u8, (3 << 3) | VARINT as u8]);
            buf.extend_from_slice(varint);
            return;
        }
        self.w.key_value(self.field, key, |w| {
            w.tag(3, VARINT);
            w.varint(value as u64);
        });
    }

    fn bool(&mut self, key: &'static str, value: bool) {
        self.w.key_value(self.field, key.as_bytes(), |w| {
            w.tag(2, VARINT);
            w.varint(u64::from(value));
        });
    }

    fn double(&mut self, key: &'static str, value: f64) {
        self.w.key_value(self.field, key.as_bytes(), |w| {
            w.tag(4, FIXED64);
            w.buf.extend_from_slice(&value.to_bits().to_le_bytes());
        });
    }

    fn strings(&mut self, prefix: &'static str, name: &str, values: &[Cow<'_, str>]) {
        let at = self.w.begin(self.field);
        self.w.tag(1, LEN);
        self.w.varint((prefix.len() + name.len()) as u64);
        self.w.buf.extend_from_slice(prefix.as_bytes());
        self.w.buf.extend_from_slice(name.as_bytes());
        let value = self.w.begin(2);
        let array = self.w.begin(5);
        for v in values {
            self.w.any_string(1, v.as_bytes());
        }
        self.w.end(array);
        self.w.end(value);
        self.w.end(at);
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `tracestate` as opentelemetry-otlp exports it: parsed, then formatted (an invalid one
/// becomes empty).
fn trace_state(value: Option<&http::HeaderValue>) -> String {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<OtelTraceState>().ok())
        .map(|state| state.header())
        .unwrap_or_default()
}

/// One export request being built: spans are encoded as they are pushed; `take` closes the
/// enclosing messages and hands the request's bytes over.
pub struct SpanBatch {
    /// Room for the enclosing messages' headers, then the encoded spans.
    buf: Vec<u8>,
    /// `ResourceSpans.resource` (field 1), encoded once.
    resource: Vec<u8>,
    /// `ResourceSpans.schema_url` (field 3), when the resource has one.
    schema_url: Vec<u8>,
    /// `ScopeSpans.scope` (field 1), encoded once.
    scope: Vec<u8>,
    count: usize,
}

impl SpanBatch {
    pub fn new(resource: &Resource, scope: &InstrumentationScope) -> SpanBatch {
        let mut encoded_resource = Vec::new();
        let mut w = Writer {
            buf: &mut encoded_resource,
        };
        let at = w.begin(1);
        for (key, value) in resource.iter() {
            w.key_value(1, key.as_str().as_bytes(), |w| w.value(value));
        }
        w.end(at);
        let mut schema_url = Vec::new();
        if let Some(url) = resource.schema_url() {
            Writer {
                buf: &mut schema_url,
            }
            .bytes_nonempty(3, url.as_bytes());
        }
        let mut encoded_scope = Vec::new();
        let mut w = Writer {
            buf: &mut encoded_scope,
        };
        let at = w.begin(1);
        w.bytes_nonempty(1, scope.name().as_bytes());
        w.bytes_nonempty(2, scope.version().unwrap_or_default().as_bytes());
        for kv in scope.attributes() {
            w.key_value(3, kv.key.as_str().as_bytes(), |w| w.value(&kv.value));
        }
        w.end(at);
        let mut batch = SpanBatch {
            buf: Vec::new(),
            resource: encoded_resource,
            schema_url,
            scope: encoded_scope,
            count: 0,
        };
        batch.buf = batch.empty(0);
        batch
    }

    /// A buffer holding only the room for the headers, with space for `spans` bytes.
    fn empty(&self, spans: usize) -> Vec<u8> {
        let room = self.room();
        let mut buf = Vec::with_capacity(room + spans + self.schema_url.len());
        buf.resize(room, 0);
        buf
    }

    /// The most the headers can take: two tags and lengths per level (at most 5 bytes a
    /// length, for a request below 4 GiB), the resource and the scope.
    fn room(&self) -> usize {
        self.resource.len() + self.scope.len() + 2 * 6
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encodes `span` as the next `ScopeSpans.spans` entry.
    pub fn push(&mut self, span: &SpanRecord) {
        self.count += 1;
        let mut w = Writer { buf: &mut self.buf };
        let at = w.begin(2);
        w.bytes(1, &span.trace_id.0);
        w.bytes(2, &span.span_id.0);
        if span.tracestate.is_some() {
            w.bytes_nonempty(3, trace_state(span.tracestate.as_ref()).as_bytes());
        }
        if let Some(parent) = span.parent_span_id {
            w.bytes(4, &parent.0);
        }
        // The name, `{method} {route}`, written in place.
        let method = convert::known_method(&span.method).unwrap_or("HTTP");
        let route = span.route.as_deref();
        w.tag(5, LEN);
        w.varint((method.len() + route.map_or(0, |r| r.len() + 1)) as u64);
        w.buf.extend_from_slice(method.as_bytes());
        if let Some(route) = route {
            w.buf.push(b' ');
            w.buf.extend_from_slice(route.as_bytes());
        }
        w.uint(
            6,
            match span.kind {
                SpanKind::Server => 2,
                SpanKind::Client => 3,
            },
        );
        w.fixed64(7, nanos(span.start));
        w.fixed64(8, nanos(span.start + span.duration));
        convert::visit_attributes(
            span,
            &mut Attributes {
                w: &mut w,
                field: 9,
            },
        );
        if let Some(conn) = span.connection {
            let event = w.begin(11);
            w.fixed64(1, nanos(span.start + conn.at));
            w.bytes(2, b"connection acquired");
            Attributes {
                w: &mut w,
                field: 3,
            }
            .string(
                "hoptrace.connection",
                Text::Static(if conn.reused { "reused" } else { "new" }),
            );
            w.end(event);
        }
        if let Some(at) = span.first_byte {
            let event = w.begin(11);
            w.fixed64(1, nanos(span.start + at));
            w.bytes(2, b"response headers received");
            w.end(event);
        }
        for link in &span.links {
            let l = w.begin(13);
            w.bytes(1, &link.trace_id.0);
            w.bytes(2, &link.span_id.0);
            if link.tracestate.is_some() {
                w.bytes_nonempty(3, trace_state(link.tracestate.as_ref()).as_bytes());
            }
            convert::visit_extra(
                &link.attributes,
                &mut Attributes {
                    w: &mut w,
                    field: 4,
                },
            );
            let remote = if link.remote { IS_REMOTE } else { 0 };
            w.fixed32(6, u32::from(link.flags.0) | HAS_IS_REMOTE | remote);
            w.end(l);
        }
        let (code, message) = convert::status_code(span);
        let status = w.begin(15);
        w.bytes_nonempty(2, message.as_bytes());
        w.uint(3, code as u64);
        w.end(status);
        let remote = if span.parent_is_remote { IS_REMOTE } else { 0 };
        w.fixed32(16, u32::from(span.flags.0) | HAS_IS_REMOTE | remote);
        w.end(at);
    }

    /// The `ExportTraceServiceRequest` of the spans pushed so far; the batch starts again
    /// empty.
    pub fn take(&mut self) -> Bytes {
        let room = self.room();
        let spans = self.buf.len() - room;
        let mut next = self.empty(spans);
        std::mem::swap(&mut next, &mut self.buf);
        let mut buf = next;
        buf.extend_from_slice(&self.schema_url);
        self.count = 0;

        // ScopeSpans { scope, spans }; ResourceSpans { resource, scope_spans, schema_url };
        // ExportTraceServiceRequest { resource_spans }.
        let scope_spans = self.scope.len() + spans;
        let mut scope_spans_len = Vec::with_capacity(5);
        Writer {
            buf: &mut scope_spans_len,
        }
        .varint(scope_spans as u64);
        let resource_spans =
            self.resource.len() + 1 + scope_spans_len.len() + scope_spans + self.schema_url.len();
        let mut head = Vec::with_capacity(room);
        let mut w = Writer { buf: &mut head };
        w.tag(1, LEN);
        w.varint(resource_spans as u64);
        w.buf.extend_from_slice(&self.resource);
        w.tag(2, LEN);
        w.buf.extend_from_slice(&scope_spans_len);
        w.buf.extend_from_slice(&self.scope);
        let start = room - head.len();
        buf[start..room].copy_from_slice(&head);
        Bytes::from(buf).slice(start..)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::time::Duration;

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use prost::Message as _;

    use super::*;
    use crate::trace::context::{SpanId, TraceFlags};
    use crate::trace::span::{Attribute, AttributeValue, ConnectionAcquired, SpanLink};

    /// What opentelemetry-otlp sends for `records`: `SpanData`, then opentelemetry-proto's
    /// conversion.
    fn reference(records: &[SpanRecord], resource: &Resource) -> ExportTraceServiceRequest {
        let scope = convert::scope();
        let spans = records
            .iter()
            .map(|r| convert::to_span_data(r, &scope))
            .collect();
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                spans,
                &ResourceAttributesWithSchema::from(resource),
            ),
        }
    }

    fn records() -> Vec<SpanRecord> {
        let mut client = convert::test_record();
        client.start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        client.duration = Duration::from_micros(1234);
        client.peer = Some("10.0.0.3:8080".parse().unwrap());
        client.resend_count = 2;
        client.connection = Some(ConnectionAcquired {
            at: Duration::from_micros(10),
            reused: true,
        });
        client.first_byte = Some(Duration::from_micros(900));
        client.status = Some(503);
        client.parent_span_id = Some(SpanId([9; 8]));
        client.request_headers = vec![
            (
                http::HeaderName::from_static("x-tenant"),
                http::HeaderValue::from_static("a"),
            ),
            (
                http::HeaderName::from_static("x-tenant"),
                http::HeaderValue::from_static("b"),
            ),
        ];
        client.links.push(SpanLink {
            trace_id: crate::trace::context::TraceId([3; 16]),
            span_id: SpanId([4; 8]),
            flags: TraceFlags(1),
            tracestate: Some(http::HeaderValue::from_static("k=v,x=y")),
            remote: true,
            attributes: vec![Attribute {
                key: "hoptrace.link.confidence",
                value: AttributeValue::F64(0.25),
            }],
        });
        client.attributes.push(Attribute {
            key: "hoptrace.parent.inferred",
            value: AttributeValue::Bool(true),
        });

        let mut server = convert::test_record();
        server.kind = SpanKind::Server;
        server.start = UNIX_EPOCH + Duration::from_secs(1_700_000_001);
        server.duration = Duration::from_millis(3);
        server.target = "/orders/7?token=abc&a=1".parse().unwrap();
        server.host = Some(http::HeaderValue::from_static("shop.example:8443"));
        server.user_agent = Some(http::HeaderValue::from_static("curl/8"));
        server.route = Some("orders".into());
        server.tracestate = Some(http::HeaderValue::from_static("vendor=1"));
        server.parent_span_id = Some(SpanId([7; 8]));
        server.parent_is_remote = true;
        server.status = Some(404);
        server.version = http::Version::HTTP_2;
        server.response_headers = vec![(
            http::HeaderName::from_static("server-timing"),
            http::HeaderValue::from_bytes(b"db;dur=\xff2").unwrap(),
        )];

        let mut failed = convert::test_record();
        failed.method = http::Method::from_bytes(b"PURGE").unwrap();
        failed.error_type = Some("timeout");
        failed.status = None;
        failed.kept_reason = Some("error");
        failed.scheme = "https";
        failed.target = "https://pay.internal/charge".parse().unwrap();
        vec![client, server, failed]
    }

    #[test]
    fn the_request_decodes_to_what_opentelemetry_otlp_would_send() {
        let resource = Resource::builder_empty()
            .with_service_name("checkout")
            .with_attributes([
                opentelemetry::KeyValue::new("host.name", "node-1"),
                opentelemetry::KeyValue::new("replicas", 3_i64),
            ])
            .build();
        let records = records();
        let mut batch = SpanBatch::new(&resource, &convert::scope());
        for r in &records {
            batch.push(r);
        }
        assert_eq!(batch.len(), 3);
        let encoded = batch.take();
        assert!(batch.is_empty());
        let decoded = ExportTraceServiceRequest::decode(encoded).unwrap();
        assert_eq!(decoded, reference(&records, &resource));

        // Reused: the next request holds only what was pushed since.
        batch.push(&records[1]);
        let decoded = ExportTraceServiceRequest::decode(batch.take()).unwrap();
        assert_eq!(decoded, reference(&records[1..2], &resource));
    }

    #[test]
    fn lengths_that_need_several_bytes_are_encoded_correctly() {
        // A 20 KB attribute (a three-byte length) inside a span, and enough spans for the
        // enclosing messages' lengths to need three bytes too.
        let resource = Resource::builder_empty().with_service_name("big").build();
        let mut record = convert::test_record();
        record.request_headers = vec![(
            http::HeaderName::from_static("x-big"),
            http::HeaderValue::from_str(&"v".repeat(20_000)).unwrap(),
        )];
        let records = vec![record; 40];
        let mut batch = SpanBatch::new(&resource, &convert::scope());
        for r in &records {
            batch.push(r);
        }
        let encoded = batch.take();
        assert!(encoded.len() > 800_000);
        let decoded = ExportTraceServiceRequest::decode(encoded).unwrap();
        assert_eq!(decoded, reference(&records, &resource));
    }
}
