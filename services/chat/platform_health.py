"""novahouse.health.v1.PlatformHealth: the platform's health as the website and monitoring see it.

Deep asks every service at once with a short deadline: chat's own diagnostics, ConsentAdmin.Diagnose,
NotifierAdmin.Diagnose and the rate-limit service's gRPC health. A service that does not answer is reported
unhealthy (never an error), and the overall status is "degraded". The probes run on a pool's threads in a copy
of the caller's context, so their calls carry the Deep request's id.
"""
from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from novahouse.common.v1 import diagnostics_pb2
from novahouse.consent.v1 import consent_pb2_grpc
from novahouse.health.v1 import health_pb2 as platform_pb2
from novahouse.notifier.v1 import notifier_pb2_grpc

VERSION = "1.0.0"

# One of Deep's probes: asks one service and returns its report.
Probe = Callable[[], diagnostics_pb2.DiagnosticsReport]


def _unreachable(service: str, exc: grpc.RpcError) -> diagnostics_pb2.DiagnosticsReport:
    code = exc.code().name if exc.code() else "UNKNOWN"
    check = diagnostics_pb2.Check(name="reachable", ok=False, detail=code)
    return diagnostics_pb2.DiagnosticsReport(service=service, healthy=False, checks=[check])


class PlatformHealth:
    def __init__(
        self,
        own_report: Probe,
        consent: grpc.Channel,
        notifier: grpc.Channel,
        ratelimit: grpc.Channel,
        timeout_s: float,
    ):
        self._own_report = own_report
        self._consent = consent_pb2_grpc.ConsentAdminStub(consent)  # type: ignore[no-untyped-call]  # generated without annotations
        self._notifier = notifier_pb2_grpc.NotifierAdminStub(notifier)  # type: ignore[no-untyped-call]  # as above
        self._ratelimit = health_pb2_grpc.HealthStub(ratelimit)
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="deep-health")

    def live(self) -> platform_pb2.LiveResponse:
        return platform_pb2.LiveResponse(status="ok", service="chat", version=VERSION)

    def deep(self) -> platform_pb2.DeepResponse:
        probes = [
            self._probe(self._own_report),
            self._probe(lambda: self._diagnose("consent", self._consent.Diagnose)),
            self._probe(lambda: self._diagnose("notifier", self._notifier.Diagnose)),
            self._probe(self._ratelimit_report),
        ]
        reports = [probe.result() for probe in probes]
        status = "ok" if all(r.healthy for r in reports) else "degraded"
        return platform_pb2.DeepResponse(status=status, services=reports)

    def _probe(self, report: Probe) -> Future[diagnostics_pb2.DiagnosticsReport]:
        """Run on the pool in a copy of this thread's context (one copy each: a context runs in one thread at once)."""
        return self._pool.submit(contextvars.copy_context().run, report)

    def _diagnose(
        self, service: str, method: Callable[..., diagnostics_pb2.DiagnosticsReport]
    ) -> diagnostics_pb2.DiagnosticsReport:
        try:
            return method(diagnostics_pb2.DiagnoseRequest(), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            return _unreachable(service, exc)

    def _ratelimit_report(self) -> diagnostics_pb2.DiagnosticsReport:
        try:
            reply = self._ratelimit.Check(health_pb2.HealthCheckRequest(), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            return _unreachable("ratelimit", exc)
        serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        check = diagnostics_pb2.Check(name="grpc-health", ok=serving, detail=status)
        return diagnostics_pb2.DiagnosticsReport(service="ratelimit", healthy=serving, checks=[check])
