"""Prometheus metrics: an HTTP endpoint per process, a gRPC interceptor counting every call by method and code, and
the service's readiness (SERVING or not, and each dependency it checks) for the alerts of deploy/monitoring."""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Container, Iterable, Iterator

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

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

# `service` is the process's own name (not the scrape job's), so the rules read the same in any Prometheus.
SERVING = Gauge("novahouse_serving", "1 while the service's gRPC health is SERVING, 0 while NOT_SERVING", ["service"])
DEPENDENCY_UP = Gauge(
    "novahouse_dependency_up", "1 while a dependency the readiness check asks answers, 0 while it fails",
    ["service", "dependency"],
)


def record_serving(service: str, serving: bool) -> None:
    SERVING.labels(service).set(1 if serving else 0)


def record_dependencies(service: str, dependencies: Iterable[str], failing: Container[str]) -> None:
    for name in dependencies:
        DEPENDENCY_UP.labels(service, name).set(0 if name in failing else 1)


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
