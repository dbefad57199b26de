"""Interop peer: an HTTP client instrumented with the Python OpenTelemetry SDK.

Usage: client.py URL [OTLP_TRACES_ENDPOINT]
  (default endpoint: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)

Starts a CLIENT span "py-client call" (resource service.name "py-client"), injects the trace
context into the request headers (W3C by default; OTEL_PROPAGATORS picks others, e.g. b3,
b3multi, jaeger), GETs URL with urllib (no proxy from the environment),
prints one JSON line {"trace_id", "span_id", "status", "body"} (body parsed as JSON when it is
JSON), force-flushes the spans over OTLP/HTTP protobuf and exits 0. A failed connection prints
"status": 0 with an "error" and exits 1.
"""

import json
import os
import sys
import urllib.error
import urllib.request

import requests
from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


def main():
    if len(sys.argv) < 2:
        print("usage: client.py URL [OTLP_TRACES_ENDPOINT]", file=sys.stderr)
        return 2
    url = sys.argv[1]
    endpoint = sys.argv[2] if len(sys.argv) > 2 else os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    session = requests.Session()
    session.trust_env = False
    exporter = OTLPSpanExporter(endpoint=endpoint, session=session, timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": "py-client"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("hoptrace-interop-client")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    result = {}
    exit_code = 0
    with tracer.start_as_current_span(
        "py-client call",
        kind=SpanKind.CLIENT,
        attributes={"http.request.method": "GET", "url.full": url},
    ) as span:
        ctx = span.get_span_context()
        result["trace_id"] = format(ctx.trace_id, "032x")
        result["span_id"] = format(ctx.span_id, "016x")
        headers = {}
        propagate.inject(headers)
        request = urllib.request.Request(url, headers=headers, method="GET")
        try:
            with opener.open(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except OSError as e:
            status, raw = 0, b""
            result["error"] = str(e)
            span.set_status(Status(StatusCode.ERROR, str(e)))
            exit_code = 1
        if status:
            span.set_attribute("http.response.status_code", status)
            if status >= 400:
                span.set_status(Status(StatusCode.ERROR))
        text = raw.decode("utf-8", "replace")
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        result["status"] = status
        result["body"] = body

    provider.force_flush()
    provider.shutdown()
    print(json.dumps(result), flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
