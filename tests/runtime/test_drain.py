"""A server stopped by SIGTERM drains (issue 17, part 1): it reports NOT_SERVING at once, so Envoy's health checks and
the endpoints controller stop routing to it, keeps answering calls (on new connections too) for DRAIN_DELAY_S, then
stops accepting and exits within SHUTDOWN_GRACE_S."""
from __future__ import annotations

import os
import signal
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.local.processes import ManagedProcess, free_port, grpc_serving, python_module
from novahouse.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from testsupport.waiting import wait_for

DRAIN_DELAY_S = 4.0


def health_status(address: str) -> int | None:
    with grpc.insecure_channel(address) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
        except grpc.RpcError:
            return None


def dlq_stats_answered(address: str) -> bool:
    """A real call on a fresh connection."""
    with grpc.insecure_channel(address) as channel:
        try:
            notifier_pb2_grpc.NotifierAdminStub(channel).GetDlqStats(notifier_pb2.GetDlqStatsRequest(), timeout=2)
            return True
        except grpc.RpcError:
            return False


def test_sigterm_reports_not_serving_keeps_serving_for_the_drain_delay_then_exits(tmp_path):
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "GRPC_PORT": str(port), "GRPC_HOST": "127.0.0.1", "DATA_DIR": str(tmp_path / "data"),
           "DRAIN_DELAY_S": str(DRAIN_DELAY_S), "SHUTDOWN_GRACE_S": "3", "METRICS_PORT": "0",
           "DATABASE_URL": "", "REDIS_URL": "", "CONSENT_ADDR": f"127.0.0.1:{free_port()}"}
    server = ManagedProcess("notifier", python_module("services.notifier.server"), env, tmp_path / "logs").start()
    try:
        server.wait_until(lambda: grpc_serving(address), timeout=60, what="serving")
        assert dlq_stats_answered(address)

        os.killpg(server.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        signalled = time.monotonic()

        wait_for(lambda: health_status(address) == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=3,
                 what="NOT_SERVING after SIGTERM")
        answered_while_draining = 0
        while time.monotonic() - signalled < DRAIN_DELAY_S * 0.75:  # well inside the drain delay
            assert dlq_stats_answered(address), "a call during the drain delay was refused"
            answered_while_draining += 1
        assert answered_while_draining >= 3
        assert server.proc is not None and server.proc.poll() is None  # still up, still draining

        server.proc.wait(timeout=30)
        assert server.proc.returncode == 0, server.tail()
        assert time.monotonic() - signalled >= DRAIN_DELAY_S
        assert not dlq_stats_answered(address)
    finally:
        server.stop()
