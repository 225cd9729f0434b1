"""Is anything listening, and what does a gRPC health check answer."""
from __future__ import annotations

import socket

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def health_status(port: int, service: str = "", timeout: float = 5.0) -> int:
    """The HealthCheckResponse status the server on 127.0.0.1:port gives for service ("" is readiness)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout).status
