"""The one place the notifier is wired: every domain object built from Settings, for the server and manage.py."""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import redis

from services.notifier.breakers import BreakerBoard, DestinationBreaker
from services.notifier.deliveries import DeliveryService
from services.notifier.destinations import EmailSender, MondaySender, SlackSender
from services.notifier.dispatcher import Dispatcher, Sender
from services.notifier.erasure_store import ErasureStore
from services.notifier.erasures import ErasureService
from services.notifier.remote import ConsentClient
from services.notifier.retry_scheduler import RetryScheduler
from services.notifier.settings import Settings
from services.notifier.storage import DESTINATIONS, DeliveryStore
from services.runtime.clients import channel_to
from services.runtime.db import Database
from services.runtime.diagnostics import Diagnostics
from services.runtime.migrate import upgrade_to_head
from services.runtime.redis_client import key_prefix, redis_from_env

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@dataclass
class NotifierApp:
    settings: Settings
    db: Database
    store: DeliveryStore
    breakers: BreakerBoard
    dispatcher: Dispatcher
    scheduler: RetryScheduler
    deliveries: DeliveryService
    erasures: ErasureService
    redis: redis.Redis | None
    diagnostics: Diagnostics

    def migrate(self) -> None:
        upgrade_to_head(self.db, MIGRATIONS)

    def close(self) -> None:
        """Stop the retry job and the delivery workers (if the server started them), then release the database."""
        self.scheduler.stop()
        self.dispatcher.stop()
        self.db.dispose()


def breaker_board(settings: Settings, client: redis.Redis | None) -> BreakerBoard:
    """Breakers in Redis when it is configured and answers; in memory (per replica) otherwise."""
    if client is not None:
        try:
            return BreakerBoard(DESTINATIONS, settings.cb_fail_max, settings.cb_reset_timeout_s, client, key_prefix())
        except redis.RedisError as exc:
            log.warning("Redis unreachable at start; breaker state is per replica", extra={"error": type(exc).__name__})
    return BreakerBoard(DESTINATIONS, settings.cb_fail_max, settings.cb_reset_timeout_s)


def build(settings: Settings) -> NotifierApp:
    """Every object of the notifier; nothing runs until the server starts the dispatcher and the scheduler."""
    db = Database("notifier")
    store = DeliveryStore(db)
    client = redis_from_env()
    breakers = breaker_board(settings, client)
    senders: dict[str, Sender] = {
        "slack": SlackSender(settings), "monday": MondaySender(settings), "email": EmailSender(settings)
    }
    consent = ConsentClient(channel_to(settings.consent_addr), settings.consent_timeout_s)
    dispatcher = Dispatcher(settings, store, senders, breakers, consent)
    deliveries = DeliveryService(settings, store, dispatcher, breakers)
    scheduler = RetryScheduler(dispatcher, store, settings.poll_interval_s, deliveries.purge_ended,
                               settings.purge_interval_h)
    erasures = ErasureService(settings, ErasureStore(db), dispatcher)
    report = _diagnostics(db, client, breakers, deliveries, scheduler, dispatcher)
    return NotifierApp(settings, db, store, breakers, dispatcher, scheduler, deliveries, erasures, client, report)


def _diagnostics(db: Database, client: redis.Redis | None, breakers: BreakerBoard, deliveries: DeliveryService,
                 scheduler: RetryScheduler, dispatcher: Dispatcher) -> Diagnostics:
    """What NotifierAdmin.Diagnose reports: database, Redis, each breaker, the DLQ's depth, and the workers."""
    report = Diagnostics("notifier")
    report.add_dependency("database", db.ping)
    if client is not None:
        report.add_dependency("redis", functools.partial(_ping, client))
    for breaker in breakers:
        report.add(f"breaker:{breaker.name}", functools.partial(_breaker_state, breaker))

    def dlq_depth() -> tuple[bool, str]:
        stats = deliveries.dlq_stats()
        return True, f"{stats.pending} pending, {stats.failed} failed, {stats.dead} dead, {stats.cancelled} cancelled"

    def running(part: RetryScheduler | Dispatcher) -> tuple[bool, str]:
        return part.running, "running" if part.running else "stopped"

    report.add("dlq", dlq_depth)
    report.add("scheduler", lambda: running(scheduler))
    report.add("dispatcher", lambda: running(dispatcher))
    return report


def _breaker_state(breaker: DestinationBreaker) -> tuple[bool, str]:
    return breaker.state != "open", breaker.state


def _ping(client: redis.Redis) -> None:
    client.ping()
