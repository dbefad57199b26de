"""Interop peer: an HTTP server instrumented with the Python OpenTelemetry SDK.

Usage: server.py [OTLP_TRACES_ENDPOINT]
  (default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, e.g. http://127.0.0.1:4318/v1/traces)

Listens on 127.0.0.1:0 and prints "PORT <n>" as its first stdout line. For every GET it
extracts the trace context from the request headers (W3C by default; OTEL_PROPAGATORS picks
others, e.g. b3, b3multi, jaeger), records a SERVER span "<METHOD> <path>" as its child,
answers 200 with JSON {"traceparent": <header received>, "headers": {name: value}} (names
lowercase),
and ends the span; spans go out at once (SimpleSpanProcessor) over OTLP/HTTP protobuf with
resource service.name "py-server". Exits cleanly on SIGTERM/SIGINT or when stdin closes.
"""

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import requests
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind


def make_provider(service_name, endpoint):
    # No proxy from the environment for the exporter: the receiver is on loopback.
    session = requests.Session()
    session.trust_env = False
    exporter = OTLPSpanExporter(endpoint=endpoint, session=session, timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def main():
    endpoint = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if not endpoint:
        print("usage: server.py OTLP_TRACES_ENDPOINT", file=sys.stderr)
        return 2
    provider = make_provider("py-server", endpoint)
    tracer = provider.get_tracer("hoptrace-interop-server")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            ctx = propagate.extract(self.headers)
            path = urlsplit(self.path).path
            span = tracer.start_span(
                f"{self.command} {path}",
                context=ctx,
                kind=SpanKind.SERVER,
                attributes={
                    "http.request.method": self.command,
                    "url.path": path,
                },
            )
            try:
                headers = {k.lower(): v for k, v in self.headers.items()}
                body = json.dumps(
                    {"traceparent": self.headers.get("traceparent"), "headers": headers}
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                span.set_attribute("http.response.status_code", 200)
            finally:
                span.end()

        def log_message(self, format, *args):
            sys.stderr.write("server.py: " + (format % args) + "\n")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    serve = threading.Thread(target=httpd.serve_forever, daemon=True)
    serve.start()

    stop = threading.Event()
    fd = sys.stdin.fileno()

    def watch_stdin():
        # os.read on the raw fd: a daemon thread blocked in a buffered read would hold the
        # reader's lock at interpreter shutdown.
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()

    def on_signal(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    print(f"PORT {httpd.server_address[1]}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except SystemExit:
        pass
    finally:
        httpd.shutdown()
        httpd.server_close()
        provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
