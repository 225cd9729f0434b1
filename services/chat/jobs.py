"""The service's scheduler: APScheduler running the periodic in-process jobs of the local stack (follow-ups, lead
hand-over retries, cache purge, retention purge).

In Kubernetes the same work runs as CronJobs (`python -m services.chat.manage ...`) and SCHEDULER_ENABLED=false
turns these off. Each job runs at most once at a time, each run in a request scope of its own (its log lines and
the calls it makes carry one minted request id); its last outcome is kept for ChatAdmin.Diagnose.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import Counter, Gauge

from services.chat import privacy
from services.chat.cache import Cache
from services.chat.followups import FollowupSender
from services.chat.leads import LeadDelivery
from services.chat.settings import Settings
from services.runtime.db import Database
from services.runtime.request_context import request_scope

log = logging.getLogger(__name__)

JOB_NAMES = ("followups", "lead-retry", "cache-purge", "retention-purge")
# Only where the scheduler runs (the local stack, SCHEDULER_ENABLED); in Kubernetes the CronJobs do this work and
# kube-state-metrics reports them (deploy/monitoring/rules). A fresh scheduler counts its start as the last success,
# so a new pod is not "not running" before its first interval has passed. The label is `task`: Prometheus keeps
# `job` for the scrape job.
JOB_RUNS = Counter("chat_job_runs_total", "In-process job runs by task and outcome (ok, error)", ["task", "outcome"])
JOB_LAST_SUCCESS = Gauge(
    "chat_job_last_success_timestamp_seconds", "When each in-process job last ran without an error", ["task"]
)


class Jobs:
    def __init__(
        self,
        followups: FollowupSender,
        leads: LeadDelivery,
        idle_handover: Callable[[dt.timedelta], int],
        cache: Cache,
        settings: Settings,
        db: Database,
    ):
        """`idle_handover(idle_for)`: hands over the leads of visitors gone quiet mid-questions (ChatService)."""
        self.db = db
        self.followups = followups
        self.leads = leads
        self.idle_handover = idle_handover
        self.cache = cache
        self.settings = settings
        self._scheduler: BackgroundScheduler | None = None
        self._last: dict[str, str] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        scheduler = BackgroundScheduler(daemon=True)
        every = {"max_instances": 1, "coalesce": True, "trigger": "interval"}
        scheduler.add_job(self._followups, seconds=self.settings.followup_interval_min * 60, id="followups", **every)
        scheduler.add_job(self._lead_retry, seconds=self.settings.lead_retry_interval_s, id="lead-retry", **every)
        scheduler.add_job(self._cache_purge, seconds=self.settings.cache_cleanup_min * 60, id="cache-purge", **every)
        retention_s = self.settings.retention_interval_min * 60
        scheduler.add_job(self._retention_purge, seconds=retention_s, id="retention-purge", **every)
        scheduler.start()
        self._scheduler = scheduler
        for name in JOB_NAMES:
            JOB_LAST_SUCCESS.labels(name).set_to_current_time()
            for outcome in ("ok", "error"):
                JOB_RUNS.labels(name, outcome)
        log.info("in-process jobs started", extra={"jobs": [job.id for job in scheduler.get_jobs()]})

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None

    def state(self) -> tuple[bool, str]:
        """(ok, detail) for diagnostics: whether the scheduler runs and what each job did last."""
        if self._scheduler is None:
            return True, "off (CronJobs)" if not self.settings.scheduler_enabled else "not started"
        with self._lock:
            last = "; ".join(f"{name}: {outcome}" for name, outcome in sorted(self._last.items()))
        running = f"running every {self.settings.followup_interval_min:g} min"
        return bool(self._scheduler.running), running + (f"; {last}" if last else "")

    def _record(self, name: str, outcome: str) -> None:
        with self._lock:
            self._last[name] = f"{outcome} at {time.strftime('%H:%M:%S', time.gmtime())}Z"
        failed = outcome.startswith("error ")
        JOB_RUNS.labels(name, "error" if failed else "ok").inc()
        if not failed:
            JOB_LAST_SUCCESS.labels(name).set_to_current_time()

    def _followups(self) -> None:
        with request_scope():
            try:
                run = self.followups.run()
                self._record("followups", f"due {run.due}, sent {run.sent}, failed {run.failed}")
            except Exception as exc:  # a failed run is retried at the next tick
                log.exception("follow-up job failed")
                self._record("followups", f"error {type(exc).__name__}")

    def _lead_retry(self) -> None:
        with request_scope():
            try:
                idle = self.idle_handover(dt.timedelta(minutes=self.settings.lead_idle_min))
                result = self.leads.retry_pending()
                self._record("lead-retry", f"idle handed over {idle}, delivered {result.delivered}, "
                                           f"pending {result.pending}")
            except Exception as exc:  # a failed run is retried at the next tick
                log.exception("lead retry job failed")
                self._record("lead-retry", f"error {type(exc).__name__}")

    def _cache_purge(self) -> None:
        with request_scope():
            removed = self.cache.purge_expired()
            log.info("cache purged", extra={"removed": removed})
            self._record("cache-purge", f"removed {removed}")

    def _retention_purge(self) -> None:
        with request_scope():
            settings = self.settings
            try:
                done = privacy.purge_retention(
                    self.db, settings.retention_days, settings.lead_retention_days, settings.retention_batch
                )
            except Exception as exc:  # a failed run is retried at the next tick
                log.exception("retention purge failed")
                self._record("retention-purge", f"error {type(exc).__name__}")
                return
            deleted = {"conversations_deleted": done.conversations_deleted, "leads_deleted": done.leads_deleted}
            log.info("retention purged", extra=deleted)
            self._record("retention-purge", f"conversations deleted {done.conversations_deleted}, "
                                            f"leads deleted {done.leads_deleted}")
