"""What a service reports about itself for /api/health/deep: its dependencies plus its own components."""
from __future__ import annotations

from collections.abc import Callable

from novahouse.common.v1 import diagnostics_pb2

# A reporter returns (ok, detail) for one component, e.g. ("breaker:slack", lambda: (True, "closed")).
Reporter = Callable[[], tuple[bool, str]]


class Diagnostics:
    def __init__(self, service: str):
        self.service = service
        self._reporters: dict[str, Reporter] = {}

    def add(self, name: str, reporter: Reporter) -> None:
        self._reporters[name] = reporter

    def add_dependency(self, name: str, check: Callable[[], None]) -> None:
        """A check that raises when the dependency is down (the same checks readiness uses)."""

        def report() -> tuple[bool, str]:
            check()
            return True, "ok"

        self.add(name, report)

    def report(self) -> diagnostics_pb2.DiagnosticsReport:
        checks = []
        for name, reporter in self._reporters.items():
            try:
                ok, detail = reporter()
            except Exception as exc:  # noqa: BLE001 - a failing component is reported, not raised
                ok, detail = False, type(exc).__name__
            checks.append(diagnostics_pb2.Check(name=name, ok=ok, detail=detail))
        return diagnostics_pb2.DiagnosticsReport(
            service=self.service, healthy=all(c.ok for c in checks), checks=checks
        )
