"""Prometheus metrics: an HTTP endpoint per process and a gRPC interceptor counting every call by method and code."""
from __future__ import annotations

import time

import grpc
from prometheus_client import Counter, Histogram, start_http_server

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
    from services.runtime.config import env_str

    if port > 0:
        start_http_server(port, addr=env_str("METRICS_HOST", "127.0.0.1"))


class MetricsInterceptor(grpc.ServerInterceptor):
    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        inner = handler.unary_unary

        def observed(request, context):
            start = time.perf_counter()
            code = "OK"
            try:
                return inner(request, context)
            except Exception:
                code = (context.code() or grpc.StatusCode.UNKNOWN).name
                raise
            finally:
                GRPC_HANDLED.labels(method, code).inc()
                GRPC_LATENCY.labels(method).observe(time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
