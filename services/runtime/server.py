"""gRPC server bootstrap shared by every service.

Health follows grpc/grpc's examples: a grpc_health HealthServicer answers NOT_SERVING until the service's
dependencies answer, SERVING after, and NOT_SERVING again while it drains on SIGTERM. Reflection is on, so
grpcurl works against any server.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from types import FrameType
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.runtime.config import DEFAULT_PORTS, env_float, env_int, env_str
from services.runtime.errors import ErrorInterceptor, UndecodableRequestInterceptor, quiet_metadata_decoding_errors
from services.runtime.metrics import MetricsInterceptor, record_dependencies, record_serving, serve_metrics
from services.runtime.request_context import RequestIdInterceptor

log = logging.getLogger(__name__)

S = TypeVar("S")  # a generated servicer class

ReadinessCheck = Callable[[], None]  # raises when the dependency is not usable

# Health service name that is SERVING while the process runs (NOT_SERVING only while draining), whatever its
# dependencies say: Kubernetes liveness probes ask for it, so a database or Redis outage makes pods unready, not
# restarted.
LIVENESS_SERVICE = "novahouse.liveness"


# gRPC metadata a server takes (one limit, no band in which grpcio refuses at random): room for whatever header block
# Envoy lets through (MAX_REQUEST_HEADERS_KB, at most 12 KiB, the URL counted twice), so an over-long URL is refused
# by Envoy (431), never by a service with a RESOURCE_EXHAUSTED naming Envoy's own headers.
METADATA_LIMITS = [("grpc.max_metadata_size", 32 * 1024), ("grpc.absolute_max_metadata_size", 32 * 1024)]


def database_readiness(check: ReadinessCheck, migrate: Callable[[], None] | None) -> ReadinessCheck:
    """Ready when check() passes. With `migrate` (MIGRATE_ON_START), the first time the database answers it is
    brought to head first (as the migration role when MIGRATION_DATABASE_URL is set: migrate.upgrade_to_head), so
    a server can start before its database and become ready once both are there."""
    migrated = threading.Event()

    def ready() -> None:
        if migrate is not None and not migrated.is_set():
            migrate()
            migrated.set()
        check()

    return ready


def server_interceptors() -> list[grpc.ServerInterceptor]:
    """Outermost first: the request id is set before metrics and errors, so their log lines carry it; errors are
    mapped innermost, so metrics count the status the caller gets; undecodable requests are refused innermost,
    where the handler's own deserializer is wrapped."""
    return [RequestIdInterceptor(), MetricsInterceptor(), ErrorInterceptor(), UndecodableRequestInterceptor()]


class GrpcService:
    """One server process: register servicers, then run() until SIGTERM or SIGINT."""

    def __init__(self, name: str, default_port: int | None = None,
                 readiness: dict[str, ReadinessCheck] | None = None, default_workers: int = 16,
                 interceptors: Sequence[grpc.ServerInterceptor] = ()):
        """`interceptors`: the service's own, run inside the common ones (so their aborts are logged and counted)."""
        self.name = name
        self.port = env_int("GRPC_PORT", DEFAULT_PORTS[name] if default_port is None else default_port, minimum=0)
        self.host = env_str("GRPC_HOST", "127.0.0.1")
        self.metrics_port = env_int("METRICS_PORT", 0, minimum=0)
        self.grace_s = env_float("SHUTDOWN_GRACE_S", 10.0, minimum=0)
        # How long a stopping server keeps serving while it reports NOT_SERVING: Envoy's health checks and the
        # endpoints controller stop routing to it meanwhile (the manifests set it; 0 locally, where nothing routes).
        self.drain_delay_s = env_float("DRAIN_DELAY_S", 0.0, minimum=0)
        self.check_interval_s = env_float("HEALTH_CHECK_INTERVAL_S", 5.0, minimum=0.05)
        self.readiness = dict(readiness or {})
        quiet_metadata_decoding_errors()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=env_int("GRPC_WORKERS", default_workers, minimum=1)),
            interceptors=[*server_interceptors(), *interceptors],
            options=[("grpc.so_reuseport", 0), *METADATA_LIMITS],
        )
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names: list[str] = []
        self._on_ready: list[Callable[[], None]] = []
        self._on_stop: list[Callable[[], None]] = []
        self._on_drain: list[Callable[[], None]] = []
        self._stopping = threading.Event()
        self._ready_once = threading.Event()
        self.bound_port = 0

    def add(self, add_to_server: Callable[[S, grpc.Server], None], servicer: S, full_name: str) -> None:
        """Register a servicer: add(chat_pb2_grpc.add_ChatServicer_to_server, servicer, 'novahouse.chat.v1.Chat')."""
        add_to_server(servicer, self.server)
        self._service_names.append(full_name)

    def on_ready(self, hook: Callable[[], None]) -> None:
        """Run once, the first time every dependency answers (start schedulers here)."""
        self._on_ready.append(hook)

    def on_stop(self, hook: Callable[[], None]) -> None:
        self._on_stop.append(hook)

    def on_drain(self, hook: Callable[[], None]) -> None:
        """Run as draining starts, before the grace period: end long-lived streams, which would otherwise hold the
        stop for the whole grace and then be cut."""
        self._on_drain.append(hook)

    def _set_all(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ["", *self._service_names]:
            self.health.set(name, status)
        record_serving(self.name, status == health_pb2.HealthCheckResponse.SERVING)

    def check_dependencies(self) -> dict[str, str]:
        """Name of each failing dependency and why; empty when all answer."""
        failures = {}
        for dep, check in self.readiness.items():
            try:
                check()
            except Exception as exc:  # noqa: BLE001 - a failed check is a state, not a crash
                failures[dep] = type(exc).__name__
        return failures

    def _watch_readiness(self) -> None:
        while not self._stopping.is_set():
            failures = self.check_dependencies()
            if self._stopping.is_set():
                return
            record_dependencies(self.name, self.readiness, failures)
            if failures:
                self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
                log.warning("not ready", extra={"failing": failures})
            else:
                self._set_all(health_pb2.HealthCheckResponse.SERVING)
                if not self._ready_once.is_set():
                    self._ready_once.set()
                    log.info("serving", extra={"port": self.bound_port})
                    for hook in self._on_ready:
                        hook()
            self._stopping.wait(self.check_interval_s if self._ready_once.is_set() else 0.1)

    def start(self) -> int:
        names = [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, self.server)
        self.bound_port = self.server.add_insecure_port(f"{self.host}:{self.port}")
        if self.bound_port == 0:
            raise RuntimeError(f"{self.name}: cannot bind {self.host}:{self.port}")
        self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        self.server.start()
        serve_metrics(self.metrics_port)
        threading.Thread(target=self._watch_readiness, name="readiness", daemon=True).start()
        log.info("started", extra={"port": self.bound_port, "grpc_services": self._service_names})
        return self.bound_port

    def stop(self) -> None:
        """Drain: report NOT_SERVING and keep serving for DRAIN_DELAY_S while the callers stop routing here, then stop
        accepting calls, let in-flight ones finish within SHUTDOWN_GRACE_S, then run stop hooks."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        log.info("draining", extra={"drain_delay_s": self.drain_delay_s, "grace_s": self.grace_s})
        time.sleep(self.drain_delay_s)
        for hook in self._on_drain:
            try:
                hook()
            except Exception:
                log.exception("drain hook failed")
        self.server.stop(self.grace_s).wait()
        for hook in self._on_stop:
            try:
                hook()
            except Exception:
                log.exception("stop hook failed")
        log.info("stopped")

    def run(self) -> None:
        self.start()
        done = threading.Event()

        def _stop_and_finish() -> None:
            self.stop()
            done.set()

        def _terminate(signum: int, _frame: FrameType | None) -> None:
            log.info("signal received", extra={"signal": signal.Signals(signum).name})
            threading.Thread(target=_stop_and_finish, daemon=True).start()

        signal.signal(signal.SIGTERM, _terminate)
        signal.signal(signal.SIGINT, _terminate)
        while not done.wait(1.0):
            pass
