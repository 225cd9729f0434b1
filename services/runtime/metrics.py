"""Prometheus metrics: an HTTP endpoint per process and a gRPC interceptor counting every call by method and code."""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import grpc
from prometheus_client import Counter, Histogram, start_http_server

from services.runtime.config import env_str
from services.runtime.interceptors import ScopedInterceptor, status_code

log = logging.getLogger("rpc")

GRPC_HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed, by method and status code", ["grpc_method", "grpc_code"]
)
GRPC_LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "RPC handling time",
    ["grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def serve_metrics(port: int) -> None:
    """Expose /metrics on 127.0.0.1 by default; METRICS_HOST widens it inside a cluster."""
    if port > 0:
        start_http_server(port, addr=env_str("METRICS_HOST", "127.0.0.1"))


# Probes and tooling, called every few seconds: counted, never logged.
_UNLOGGED_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class MetricsInterceptor(ScopedInterceptor):
    """Counts every call by method and final status code, times it, and logs one line for it (an access log whose
    lines carry the request id, so one visitor's request can be followed through every service)."""

    @contextlib.contextmanager
    def scope(self, method: str, context: grpc.ServicerContext) -> Iterator[None]:
        start = time.perf_counter()
        code = "OK"
        try:
            yield
        except Exception:
            code = (status_code(context) or grpc.StatusCode.UNKNOWN).name
            raise
        finally:
            elapsed = time.perf_counter() - start
            GRPC_HANDLED.labels(method, code).inc()
            GRPC_LATENCY.labels(method).observe(elapsed)
            if not method.startswith(_UNLOGGED_PREFIXES):
                log.info("rpc", extra={"method": method, "code": code, "ms": round(elapsed * 1000, 1)})
