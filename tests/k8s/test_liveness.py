"""The liveness health name the Kubernetes liveness probes ask for: a dependency outage makes a pod unready
(out of the Service) but never gets it restarted; draining ends liveness too."""
from __future__ import annotations

from grpc_health.v1 import health_pb2

from services.runtime.server import LIVENESS_SERVICE, GrpcService
from testsupport.probes import health_status


def test_a_server_whose_database_is_down_is_alive_but_not_ready(monkeypatch):
    monkeypatch.setenv("GRPC_PORT", "0")

    def database_down() -> None:
        raise ConnectionRefusedError("database down")

    server = GrpcService("probe-test", 0, readiness={"database": database_down})
    port = server.start()
    try:
        assert health_status(port, "") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert health_status(port, LIVENESS_SERVICE) == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop()


def test_a_draining_server_is_neither_ready_nor_alive(monkeypatch):
    monkeypatch.setenv("GRPC_PORT", "0")
    monkeypatch.setenv("SHUTDOWN_GRACE_S", "5")
    server = GrpcService("probe-test", 0)
    port = server.start()
    server.health.enter_graceful_shutdown()
    try:
        assert health_status(port, LIVENESS_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        server.stop()
