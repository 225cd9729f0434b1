"""The notifier's gRPC server: NotifierInternal (Notify) and NotifierAdmin (DLQ, breakers, diagnostics).

Configuration (environment): SLACK_WEBHOOK_URL, SLACK_MIN_INTERVAL_S (1.0; 0 = no pacing), MONDAY_API_URL,
MONDAY_API_KEY, MONDAY_BOARD_ID, SMTP_URL (smtp://host:port), SMTP_FROM, ESCALATION_EMAIL, CB_FAIL_MAX (5),
CB_RESET_TIMEOUT (60 s), DLQ_RETRY_DELAY_MINUTES (5) or DLQ_RETRY_DELAY_SECONDS, DLQ_MAX_DELAY_SECONDS (6 h),
DLQ_MAX_RETRIES (5), DLQ_POLL_INTERVAL_S, DLQ_CLEANUP_DAYS (30), DELIVERY_LEASE_S (60), DELIVERY_WORKERS (8),
NOTIFIER_HTTP_TIMEOUT_S (10), MAX_RETRY_AFTER_S (30), and the runtime's GRPC_PORT (50053), DATABASE_URL, DB_SCHEMA,
REDIS_URL (shares breaker state between replicas), REDIS_KEY_PREFIX, MIGRATE_ON_START, METRICS_PORT, LOG_LEVEL.
"""
from __future__ import annotations

import argparse
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import redis

from novahouse.notifier.v1 import notifier_pb2_grpc
from services.notifier.breakers import BreakerBoard
from services.notifier.destinations import EmailSender, MondaySender, SlackSender
from services.notifier.dispatcher import Dispatcher
from services.notifier.outbox import Notifier
from services.notifier.retry_scheduler import RetryScheduler
from services.notifier.servicer import NotifierAdminServicer, NotifierInternalServicer
from services.notifier.settings import Settings
from services.notifier.storage import DEAD, DESTINATIONS, FAILED, PENDING, DeliveryStore
from services.runtime import logs
from services.runtime.config import env_bool
from services.runtime.db import Database
from services.runtime.diagnostics import Diagnostics
from services.runtime.migrate import upgrade_to_head
from services.runtime.redis_client import redis_from_env
from services.runtime.server import GrpcService

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEFAULT_PORT = 50053


@dataclass
class NotifierApp:
    settings: Settings
    db: Database
    store: DeliveryStore
    breakers: BreakerBoard
    dispatcher: Dispatcher
    scheduler: RetryScheduler
    notifier: Notifier
    redis: redis.Redis | None


def breaker_board(settings: Settings, client: redis.Redis | None) -> BreakerBoard:
    """Breakers in Redis when it is configured and answers; in memory (per replica) otherwise."""
    if client is not None:
        try:
            return BreakerBoard(DESTINATIONS, settings.cb_fail_max, settings.cb_reset_timeout_s, client)
        except redis.RedisError as exc:
            log.warning("Redis unreachable at start; breaker state is per replica", extra={"error": type(exc).__name__})
    return BreakerBoard(DESTINATIONS, settings.cb_fail_max, settings.cb_reset_timeout_s)


def build(settings: Settings | None = None) -> NotifierApp:
    settings = settings or Settings.from_env()
    db = Database("notifier")
    store = DeliveryStore(db)
    client = redis_from_env()
    breakers = breaker_board(settings, client)
    senders = {"slack": SlackSender(settings), "monday": MondaySender(settings), "email": EmailSender(settings)}
    dispatcher = Dispatcher(settings, store, senders, breakers)
    scheduler = RetryScheduler(dispatcher, store, settings.poll_interval_s)
    notifier = Notifier(settings, store, dispatcher, breakers)
    return NotifierApp(settings, db, store, breakers, dispatcher, scheduler, notifier, client)


def diagnostics(app: NotifierApp) -> Diagnostics:
    report = Diagnostics("notifier")
    report.add_dependency("database", app.db.ping)
    if app.redis is not None:
        report.add_dependency("redis", app.redis.ping)
    for breaker in app.breakers:
        report.add(f"breaker:{breaker.name}", lambda b=breaker: (b.state != "open", b.state))

    def dlq_depth() -> tuple[bool, str]:
        stats = app.notifier.dlq_stats()
        return True, f"{stats['pending']} pending, {stats['failed']} failed, {stats['dead']} dead"

    report.add("dlq", dlq_depth)
    report.add("scheduler", lambda: (app.scheduler.running, "running" if app.scheduler.running else "stopped"))
    report.add("dispatcher", lambda: (app.dispatcher.running, "running" if app.dispatcher.running else "stopped"))
    return report


def database_readiness(db: Database, migrate: bool):
    """Ready when the database answers, and (with MIGRATE_ON_START) once its schema is at head."""
    migrated = threading.Event()

    def check() -> None:
        db.ping()
        if migrate and not migrated.is_set():
            upgrade_to_head(db, MIGRATIONS)
            migrated.set()

    return check


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    logs.configure("notifier")
    app = build()
    service = GrpcService(
        "notifier",
        DEFAULT_PORT,
        # Only the notifier's own database: Slack or Monday.com being down must not take the outbox offline.
        readiness={"database": database_readiness(app.db, env_bool("MIGRATE_ON_START", True))},
    )
    service.add(
        notifier_pb2_grpc.add_NotifierInternalServicer_to_server,
        NotifierInternalServicer(app.notifier),
        "novahouse.notifier.v1.NotifierInternal",
    )
    service.add(
        notifier_pb2_grpc.add_NotifierAdminServicer_to_server,
        NotifierAdminServicer(app.notifier, diagnostics(app)),
        "novahouse.notifier.v1.NotifierAdmin",
    )
    service.on_ready(app.dispatcher.start)
    service.on_ready(app.scheduler.start)
    service.on_stop(app.scheduler.stop)
    service.on_stop(app.dispatcher.stop)
    service.on_stop(app.db.dispose)
    service.run()


if __name__ == "__main__":
    main()
