"""A small OTLP/HTTP receiver for tests, built on opentelemetry-proto.

It speaks the real protocol (protobuf ``Export*ServiceRequest`` bodies on ``/v1/metrics``,
``/v1/logs``, ``/v1/traces``, answered with the matching response message) and keeps what it
received, so tests can check what the receiver pushed. It stands in for the second hop behind
a collector, where a real backend (Loki, Tempo) cannot be installed here.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb

_KINDS: dict[str, tuple[Any, Any]] = {
    "/v1/metrics": (
        metrics_pb.ExportMetricsServiceRequest,
        metrics_pb.ExportMetricsServiceResponse,
    ),
    "/v1/logs": (logs_pb.ExportLogsServiceRequest, logs_pb.ExportLogsServiceResponse),
    "/v1/traces": (trace_pb.ExportTraceServiceRequest, trace_pb.ExportTraceServiceResponse),
}


class OtlpSink:
    """Collect OTLP/HTTP requests on 127.0.0.1 in a background thread."""

    def __init__(self) -> None:
        self.requests: dict[str, list[Any]] = {path: [] for path in _KINDS}
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the http.server naming
                kind = _KINDS.get(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if kind is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = kind[0].FromString(body)
                with sink.lock:
                    sink.requests[self.path].append(request)
                reply = kind[1]().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def log_records(self) -> Iterator[Any]:
        """Yield every log record received."""
        with self.lock:
            requests = list(self.requests["/v1/logs"])
        for req in requests:
            for rl in req.resource_logs:
                for sl in rl.scope_logs:
                    yield from sl.log_records

    def spans(self) -> Iterator[Any]:
        """Yield every span received."""
        with self.lock:
            requests = list(self.requests["/v1/traces"])
        for req in requests:
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    yield from ss.spans

    def latest_sums(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """Return, per metric name, each series' value in the latest export that had it."""
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        with self.lock:
            requests = list(self.requests["/v1/metrics"])
        for req in requests:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if not metric.HasField("sum"):
                            continue
                        series = out.setdefault(metric.name, {})
                        for point in metric.sum.data_points:
                            labels = tuple(
                                sorted((a.key, a.value.string_value) for a in point.attributes)
                            )
                            series[labels] = point.as_double or float(point.as_int)
        return out

    def latest_metric(self, name: str) -> Any:
        """Return the metric ``name`` as the latest export that had it carried it (or None)."""
        with self.lock:
            requests = list(self.requests["/v1/metrics"])
        found = None
        for req in requests:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if metric.name == name:
                            found = metric
        return found

    def start_times(self, name: str) -> list[int]:
        """Return the start time (unix ns) of every point of the sum ``name`` received."""
        with self.lock:
            requests = list(self.requests["/v1/metrics"])
        return [
            point.start_time_unix_nano
            for req in requests
            for rm in req.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == name and metric.HasField("sum")
            for point in metric.sum.data_points
        ]

    def resources(self) -> list[dict[str, str]]:
        """Return the resource attributes of every metrics export."""
        with self.lock:
            requests = list(self.requests["/v1/metrics"])
        return [
            {a.key: a.value.string_value for a in rm.resource.attributes}
            for req in requests
            for rm in req.resource_metrics
        ]


def attributes(proto_attrs: Any) -> dict[str, Any]:
    """Turn OTLP KeyValue attributes into a dict of plain values (strings, ints, lists)."""
    out: dict[str, Any] = {}
    for kv in proto_attrs:
        out[kv.key] = _value(kv.value)
    return out


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attributes(v.kvlist_value.values)
    return getattr(v, kind) if kind else None
