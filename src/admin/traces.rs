//! `GET /traces`: the traces this sidecar kept in memory (most recently active first), as JSON
//! or, with `format=html`, as a page with a waterfall per trace. `limit=N` keeps the first N
//! (at most 100); `trace_id=<32 hex>` keeps that trace only (404 when it is no longer kept).

mod html;
#[cfg(test)]
mod tests;
mod view;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::Full;
use opentelemetry::trace::TraceId;
use serde::Serialize;

use super::{AdminState, json};
use view::TraceView;

/// Most traces one answer holds, whatever `limit` asks.
const MAX_LIMIT: usize = 100;

pub(super) fn handle(
    state: &AdminState,
    method: &Method,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let query = match Query::parse(query.unwrap_or("")) {
        Ok(query) => query,
        Err((format, message)) => return error(format, StatusCode::BAD_REQUEST, &message),
    };
    if method != Method::GET {
        return error(query.format, StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    // Cloned out so no snapshot guard is held while rendering.
    let service = state.shared.load().config.service.name.clone();
    let traces: Vec<TraceView> = state
        .recent
        .snapshot()
        .iter()
        .filter(|t| query.trace_id.is_none_or(|id| t.trace_id == id))
        .take(query.limit)
        .map(TraceView::new)
        .collect();
    if let (Some(id), true) = (query.trace_id, traces.is_empty()) {
        let message = format!("trace {id} is not kept (newer traces may have pushed it out)");
        return error(query.format, StatusCode::NOT_FOUND, &message);
    }
    match query.format {
        Format::Json => json(
            StatusCode::OK,
            &Body {
                service: &service,
                traces: &traces,
            },
        ),
        Format::Html => html(
            StatusCode::OK,
            html::page(&service, &traces, &query.json_href()),
        ),
    }
}

#[derive(Serialize)]
struct Body<'a> {
    service: &'a str,
    traces: &'a [TraceView],
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Json,
    Html,
}

#[derive(Debug, PartialEq)]
struct Query {
    format: Format,
    limit: usize,
    trace_id: Option<TraceId>,
}

impl Query {
    /// Parses `format`, `limit` and `trace_id`; an unknown key or a bad value is an error
    /// naming it, answered in the requested format when that one was valid.
    fn parse(raw: &str) -> Result<Query, (Format, String)> {
        let pairs = raw
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")));
        let mut query = Query {
            format: Format::Json,
            limit: MAX_LIMIT,
            trace_id: None,
        };
        // Format first, so the other errors come back in it.
        let mut errors = Vec::new();
        for (key, value) in pairs.clone() {
            if key == "format" {
                match value {
                    "json" => query.format = Format::Json,
                    "html" => query.format = Format::Html,
                    _ => errors.push(format!("format: expected json or html, got {value:?}")),
                }
            }
        }
        for (key, value) in pairs {
            match key {
                "format" => {}
                "limit" => match value.parse::<usize>() {
                    Ok(limit) => query.limit = limit.min(MAX_LIMIT),
                    Err(_) => errors.push(format!("limit: expected a number, got {value:?}")),
                },
                "trace_id" => match parse_trace_id(value) {
                    Some(id) => query.trace_id = Some(id),
                    None => errors.push(format!("trace_id: expected 32 hex digits, got {value:?}")),
                },
                _ => errors.push(format!(
                    "unknown query parameter {key:?} (expected format, limit, trace_id)"
                )),
            }
        }
        if errors.is_empty() {
            Ok(query)
        } else {
            Err((query.format, errors.join("; ")))
        }
    }

    /// The JSON view of the same selection, for the HTML page's link.
    fn json_href(&self) -> String {
        let mut href = format!("/traces?limit={}", self.limit);
        if let Some(id) = self.trace_id {
            href.push_str(&format!("&trace_id={id}"));
        }
        href
    }
}

/// W3C trace-context §3.2.2.3: a trace id is 32 lowercase hex digits (uppercase accepted
/// here, as a convenience for people pasting ids).
fn parse_trace_id(value: &str) -> Option<TraceId> {
    if value.len() != 32 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    TraceId::from_hex(value).ok()
}

fn error(format: Format, status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    match format {
        Format::Json => json(status, &serde_json::json!({ "error": message })),
        Format::Html => html(
            status,
            format!(
                "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
                 <title>traces · hoptrace</title></head><body><p>{}</p>\
                 <p><a href=\"/traces?format=html\">all traces</a></p></body></html>\n",
                html::Escaped(message)
            ),
        ),
    }
}

fn html(status: StatusCode, page: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(page)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Defence in depth behind the escaping: no script, no external load, inline style only.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    response
}
