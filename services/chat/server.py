"""The chat gRPC server: Chat, ChatInternal, ChatAdmin and novahouse.health.v1.PlatformHealth.

Ready (gRPC health SERVING) as soon as its own database answers and is migrated; Redis is optional (the cache
falls back to memory) and the consent and notifier services may start later (leads wait for them).

Environment (besides the runtime's GRPC_PORT, LOG_LEVEL ...; services/chat/settings.py reads them all): DATABASE_URL,
DB_SCHEMA, REDIS_URL, REDIS_KEY_PREFIX, CONSENT_ADDR, NOTIFIER_ADDR, RATELIMIT_ADDR, MIGRATE_ON_START (true),
CHAT_MAX_MESSAGE_CHARS (2000), LEAD_ALERT_SCORE (70), FOLLOWUP_DELAYS ("24h,72h,168h"), FOLLOWUP_INTERVAL_MINUTES
(15), FOLLOWUP_BATCH (1000), LEAD_RETRY_SECONDS (60), CACHE_TTL_SECONDS (3600), CACHE_MAX_ENTRIES (10000),
CACHE_CLEANUP_MINUTES (10), REDIS_RETRY_SECONDS (5), RETENTION_DAYS (90), LEAD_RETENTION_DAYS (365), RETENTION_BATCH
(500), RETENTION_INTERVAL_MINUTES (60), SCHEDULER_ENABLED (true), PEER_TIMEOUT_S (2), HANDOFF_HOURS
("mon-fri 08:00-18:00"), HANDOFF_TIMEZONE (Europe/Warsaw), HANDOFF_WAIT_MINUTES (5), PUBLIC_BASE_URL,
STREAM_HEARTBEAT_S (15), STREAM_MAX_S (300), STREAM_MAX_CONCURRENT (32; GRPC_WORKERS defaults to it + 16).
"""
from __future__ import annotations

import argparse

from novahouse.chat.v1 import chat_pb2_grpc
from novahouse.health.v1 import health_pb2_grpc
from services.chat import when
from services.chat.app import ChatApp, build
from services.chat.inbox import InboxServicer
from services.chat.servicer import ChatAdminServicer, ChatInternalServicer, ChatServicer, PlatformHealthServicer
from services.chat.settings import UNARY_WORKERS, Settings
from services.chat.staff_auth import StaffAuthServicer, StaffTokenInterceptor
from services.runtime import logs
from services.runtime.server import GrpcService, database_readiness


def grpc_service(app: ChatApp) -> GrpcService:
    """The chat service's gRPC services over app; its periodic jobs run while it is ready (SCHEDULER_ENABLED)."""
    service = GrpcService("chat", readiness={
        "database": database_readiness(app.db.ping, app.migrate if app.settings.migrate_on_start else None),
    }, interceptors=[StaffTokenInterceptor(app.db)],
        default_workers=app.settings.stream_max_concurrent + UNARY_WORKERS)  # a thread per open stream (streams.py)
    service.add(chat_pb2_grpc.add_ChatServicer_to_server, ChatServicer(app), "novahouse.chat.v1.Chat")
    service.add(
        chat_pb2_grpc.add_ChatInternalServicer_to_server, ChatInternalServicer(app), "novahouse.chat.v1.ChatInternal"
    )
    service.add(chat_pb2_grpc.add_ChatAdminServicer_to_server, ChatAdminServicer(app), "novahouse.chat.v1.ChatAdmin")
    service.add(
        chat_pb2_grpc.add_StaffAuthServicer_to_server, StaffAuthServicer(app.staff), "novahouse.chat.v1.StaffAuth"
    )
    service.add(
        chat_pb2_grpc.add_InboxServicer_to_server, InboxServicer(app.inbox, app.streams), "novahouse.chat.v1.Inbox"
    )
    service.add(
        health_pb2_grpc.add_PlatformHealthServicer_to_server,
        PlatformHealthServicer(app.health),
        "novahouse.health.v1.PlatformHealth",
    )
    if app.settings.scheduler_enabled:
        service.on_ready(app.jobs.start)
    service.on_drain(app.streams.drain)
    service.on_stop(app.close)
    return service


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    logs.configure("chat")
    app = build(Settings.from_env())
    app.kb.warm_up()
    when.warm_up()
    grpc_service(app).run()


if __name__ == "__main__":
    main()
