"""The chat gRPC server: Chat, ChatInternal, ChatAdmin and novahouse.health.v1.PlatformHealth.

Ready (gRPC health SERVING) as soon as its own database answers and is migrated; Redis is optional (the cache
falls back to memory) and the consent and notifier services may start later (leads wait for them).

Environment (besides the runtime's GRPC_PORT, DATABASE_URL, DB_SCHEMA, REDIS_URL, CONSENT_ADDR, NOTIFIER_ADDR,
RATELIMIT_ADDR, MIGRATE_ON_START ...): CHAT_MAX_MESSAGE_CHARS (2000), LEAD_ALERT_SCORE (70), FOLLOWUP_DELAYS
("24h,72h,168h"), FOLLOWUP_INTERVAL_MINUTES (15), FOLLOWUP_BATCH (1000), LEAD_RETRY_SECONDS (60),
CACHE_TTL_SECONDS (3600), CACHE_MAX_ENTRIES (10000), CACHE_CLEANUP_MINUTES (10), REDIS_RETRY_SECONDS (5),
RETENTION_DAYS (90), RETENTION_BATCH (500), SCHEDULER_ENABLED (true), PEER_TIMEOUT_S (2).
"""
from __future__ import annotations

import argparse
import sys
import threading

from novahouse.chat.v1 import chat_pb2_grpc
from novahouse.health.v1 import health_pb2_grpc
from services.chat.app import ChatApp
from services.chat.jobs import Jobs
from services.chat.platform_health import PlatformHealth
from services.chat.servicer import ChatAdminServicer, ChatInternalServicer, ChatServicer, PlatformHealthServicer
from services.runtime import logs
from services.runtime.clients import service_channel
from services.runtime.config import env_bool
from services.runtime.diagnostics import Diagnostics
from services.runtime.server import GrpcService


def database_readiness(app: ChatApp):
    """The readiness check: the database answers; the first time it does, migrate it (MIGRATE_ON_START)."""
    migrated = threading.Event()
    migrate = env_bool("MIGRATE_ON_START", True)

    def check() -> None:
        app.db.ping()
        if migrate and not migrated.is_set():
            app.migrate()
            migrated.set()

    return check


def diagnostics_for(app: ChatApp, jobs: Jobs) -> Diagnostics:
    diagnostics = Diagnostics("chat")
    diagnostics.add_dependency("database", app.db.ping)
    if app.cache.redis is not None:
        diagnostics.add_dependency("redis", app.cache.ping_redis)
    diagnostics.add("cache", lambda: (True, f"{app.cache.backend}; {len(app.cache.memory)} in-process entries"))
    diagnostics.add("followup-scheduler", jobs.state)

    def pending_leads() -> tuple[bool, str]:
        pending = app.leads.pending_count()
        return pending == 0, f"{pending} leads waiting for hand-over"

    diagnostics.add("leads:pending", pending_leads)
    return diagnostics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    logs.configure("chat")
    app = ChatApp.from_env()
    jobs = Jobs(app.followups, app.leads, app.cache, app.settings)
    diagnostics = diagnostics_for(app, jobs)
    health = PlatformHealth(
        diagnostics.report,
        service_channel("consent"),
        service_channel("notifier"),
        service_channel("ratelimit"),
        timeout_s=min(app.settings.peer_timeout_s, 1.0),
    )

    server = GrpcService("chat", 50051, readiness={"database": database_readiness(app)})
    server.add(chat_pb2_grpc.add_ChatServicer_to_server, ChatServicer(app), "novahouse.chat.v1.Chat")
    server.add(
        chat_pb2_grpc.add_ChatInternalServicer_to_server, ChatInternalServicer(app), "novahouse.chat.v1.ChatInternal"
    )
    server.add(
        chat_pb2_grpc.add_ChatAdminServicer_to_server, ChatAdminServicer(app, diagnostics), "novahouse.chat.v1.ChatAdmin"
    )
    server.add(
        health_pb2_grpc.add_PlatformHealthServicer_to_server,
        PlatformHealthServicer(health),
        "novahouse.health.v1.PlatformHealth",
    )
    if app.settings.scheduler_enabled:
        server.on_ready(jobs.start)
    server.on_stop(jobs.stop)
    server.on_stop(app.db.dispose)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
