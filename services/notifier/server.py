"""The notifier's gRPC server: NotifierInternal (Notify) and NotifierAdmin (DLQ, breakers, diagnostics).

Configuration (environment, read by settings.py): SLACK_WEBHOOK_URL, SLACK_BOT_TOKEN, SLACK_CHANNEL, SLACK_API_URL,
SLACK_MIN_INTERVAL_S (1.0; 0 = no pacing), MONDAY_API_URL, MONDAY_API_KEY, MONDAY_BOARD_ID, MONDAY_LOOKUP_COLUMN,
SMTP_URL (smtp://host:port), SMTP_FROM, ESCALATION_EMAIL, CB_FAIL_MAX (5), CB_RESET_TIMEOUT (60 s),
DLQ_RETRY_DELAY_MINUTES (5) or DLQ_RETRY_DELAY_SECONDS, DLQ_MAX_DELAY_SECONDS (6 h), DLQ_MAX_RETRIES (5),
DLQ_POLL_INTERVAL_S, DLQ_CLEANUP_DAYS (30), DLQ_PURGE_INTERVAL_HOURS (24), DELIVERY_LEASE_S (60),
DELIVERY_WORKERS (8), NOTIFIER_HTTP_TIMEOUT_S (10), MAX_RETRY_AFTER_S (30), MIGRATE_ON_START (true); and the
runtime's GRPC_PORT (50053), DATABASE_URL, DB_SCHEMA, REDIS_URL (shares breaker state between replicas),
REDIS_KEY_PREFIX, METRICS_PORT, LOG_LEVEL.
"""
from __future__ import annotations

import argparse

from novahouse.notifier.v1 import notifier_pb2_grpc
from services.notifier.app import NotifierApp, build
from services.notifier.servicer import NotifierAdminServicer, NotifierInternalServicer
from services.notifier.settings import Settings
from services.runtime import logs
from services.runtime.server import GrpcService, database_readiness


def grpc_service(app: NotifierApp) -> GrpcService:
    """The notifier's gRPC services over app; the delivery workers and the retry job run while it is ready."""
    # Only the notifier's own database: Slack or Monday.com being down must not take the outbox offline.
    service = GrpcService("notifier", readiness={
        "database": database_readiness(app.db.ping, app.migrate if app.settings.migrate_on_start else None),
    })
    service.add(
        notifier_pb2_grpc.add_NotifierInternalServicer_to_server,
        NotifierInternalServicer(app.deliveries, app.erasures),
        "novahouse.notifier.v1.NotifierInternal",
    )
    service.add(
        notifier_pb2_grpc.add_NotifierAdminServicer_to_server,
        NotifierAdminServicer(app.deliveries, app.diagnostics),
        "novahouse.notifier.v1.NotifierAdmin",
    )
    service.on_ready(app.dispatcher.start)
    service.on_ready(app.scheduler.start)
    service.on_stop(app.close)
    return service


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    logs.configure("notifier")
    grpc_service(build(Settings.from_env())).run()


if __name__ == "__main__":
    main()
