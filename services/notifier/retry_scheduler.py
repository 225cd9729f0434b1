"""The notifier's periodic job runner: APScheduler, in-memory job store, two jobs: `dlq-retry` and `dlq-purge`.

Every replica runs its own scheduler; the jobs never share a job store. They are safe to run everywhere at once
because the work they start is claimed row by row in the database, and a purge twice deletes nothing more. In
Kubernetes the `notifier-purge-dlq` CronJob runs the same purge; DLQ_PURGE_INTERVAL_HOURS=0 leaves it to that alone.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, timedelta

from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import Gauge

from services.notifier.dispatcher import Dispatcher
from services.notifier.storage import DEAD, FAILED, PENDING, DeliveryStore
from services.runtime.clock import utcnow
from services.runtime.request_context import request_scope

log = logging.getLogger(__name__)

DLQ_ENTRIES = Gauge("notifier_dlq_entries", "Undelivered entries by status", ["status"])
DLQ_OLDEST_PENDING = Gauge(
    "notifier_dlq_oldest_pending_age_seconds", "Age of the oldest delivery still waiting for an attempt (0: none)"
)


class RetryScheduler:
    """Runs the `dlq-retry` job every `interval_s`: due retries (and rows whose worker died) start promptly."""

    def __init__(
        self, dispatcher: Dispatcher, store: DeliveryStore, interval_s: float,
        purge: Callable[[], dict[str, int]], purge_interval_h: float,
    ):
        self.dispatcher = dispatcher
        self.store = store
        self.interval_s = interval_s
        self.purge = purge
        self.scheduler = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        self.scheduler.add_job(self.retry_due, "interval", seconds=interval_s, id="dlq-retry", next_run_time=utcnow())
        if purge_interval_h > 0:
            # First run one interval (at most a minute) after start: a replica in a restart loop does not purge in a
            # loop, a fresh one soon enough.
            interval = timedelta(hours=purge_interval_h)
            self.scheduler.add_job(self.purge_ended, "interval", hours=purge_interval_h, id="dlq-purge",
                                   next_run_time=utcnow() + min(interval, timedelta(minutes=1)))

    def purge_ended(self) -> None:
        """Delete the deliveries that ended longer than DLQ_CLEANUP_DAYS ago (DeliveryService logs the counts)."""
        with request_scope():
            try:
                self.purge()
            except Exception:  # the next run tries again; the retry job must not stop for it
                log.exception("purging ended deliveries failed")

    def retry_due(self) -> None:
        """Start every retry that is due (and every row whose worker died), then refresh the DLQ gauges."""
        with request_scope():  # a job, not a request: its log lines carry an id of their own
            self.dispatcher.wake()
            for status in (PENDING, FAILED, DEAD):
                DLQ_ENTRIES.labels(status).set(self.store.count_status(status))
            DLQ_OLDEST_PENDING.set(self.store.oldest_age_s(PENDING))

    def start(self) -> None:
        self.scheduler.start()
        log.info("DLQ retry job scheduled", extra={"interval_s": self.interval_s})

    def stop(self) -> None:
        if self.running:
            self.scheduler.shutdown(wait=False)

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)
