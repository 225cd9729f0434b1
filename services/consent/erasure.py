"""Erasure after a revoke, in every system: chat's records found (by the email, and the phones and names captured
with it), the notifier's deliveries redacted and the processors' copies deleted, chat's records erased (the steps
of erasure_steps), then erasure-completed recorded and the subject's key destroyed.

Pending erasures are rows, so a restart loses none; a thread retries the due ones with exponential backoff and is
woken at once by a new revoke. Every step is idempotent by the erasure's request id and completion is too: a second
worker (another replica) finding the row already completed does nothing. What each step did is kept in
erasure_records/erasure_steps, found again by a keyed hash of the email once the key is gone (erasure_report),
and journalled outside the database before it is recorded complete (erasure_journal), to be re-applied after a
restore from an older backup.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import Counter, Gauge
from sqlalchemy.engine import Connection

from services.consent.chain import Event
from services.consent.consent import ERASURE_COMPLETED
from services.consent.crypto import KeyDestroyed, SubjectCrypto
from services.consent.erasure_journal import ErasureJournal, JournalEntry
from services.consent.erasure_steps import COMPLETED, DONE, LEDGER, Erasure, ErasureSteps, failure_text
from services.consent.ledger_storage import Appender
from services.consent.storage import DueErasure, ErasureRecords, PendingErasures, StoredStep
from services.consent.writer import LedgerWriter
from services.runtime.clock import utcnow
from services.runtime.request_context import request_scope

log = logging.getLogger(__name__)

# Refreshed by the retry thread after each pass: deploy/monitoring alerts when an erasure waits past the limit
# (CONSENT_ERASURE_ALERT_S, as Diagnose does) and the consent dashboard shows the backlog.
PENDING_ERASURES = Gauge("consent_pending_erasures", "Erasures requested and not yet completed in every system")
OLDEST_PENDING_ERASURE = Gauge(
    "consent_oldest_pending_erasure_age_seconds", "Age of the oldest erasure not yet completed (0: none)"
)
ERASURE_ATTEMPTS = Counter("consent_erasure_attempts_total", "Erasure attempts by outcome", ["outcome"])
for _outcome in ("completed", "failed"):
    ERASURE_ATTEMPTS.labels(_outcome)

# The label under which an erased person's email is hashed for their erasure report: never equal to the subjects'
# keyed hash of the same address, so erasure_records does not join to the ledger's subjects.
LOOKUP_LABEL = "erasure-report\x00"


def lookup_hash(crypto: SubjectCrypto, normalised_email: str) -> str:
    return crypto.subject_hash(LOOKUP_LABEL + normalised_email)


@dataclass(frozen=True)
class ErasureRun:
    completed: int = 0
    failed: int = 0


class ErasureWorker:
    def __init__(
        self,
        pending: PendingErasures,
        crypto: SubjectCrypto,
        writer: LedgerWriter,
        records: ErasureRecords,
        steps: ErasureSteps,
        journal: ErasureJournal,
        retry_base_s: float,
        retry_max_s: float,
        poll_s: float,
        batch: int = 50,
    ):
        self.pending = pending
        self.crypto = crypto
        self.writer = writer
        self.records = records
        self.steps = steps
        self.journal = journal
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.poll_s = poll_s
        self.batch = batch
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the retry thread --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="erasure-retry", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            with request_scope():  # each pass is one job: its log lines and its calls to chat share an id
                try:
                    self.run_due()
                    self._refresh_gauges()
                except Exception:  # a database outage must not end the retry job
                    log.exception("erasure run failed; retrying later")
            self._wake.wait(self._seconds_until_next_due())

    def _refresh_gauges(self) -> None:
        summary = self.pending.summary()
        PENDING_ERASURES.set(summary.pending)
        oldest = summary.oldest_created_at
        OLDEST_PENDING_ERASURE.set(0 if oldest is None else max(0.0, (utcnow() - oldest).total_seconds()))

    def _seconds_until_next_due(self) -> float:
        try:
            due = self.pending.next_due()
        except Exception:  # noqa: BLE001 - try again after the normal poll interval
            return self.poll_s
        if due is None:
            return self.poll_s
        return max(0.0, min(self.poll_s, (due - utcnow()).total_seconds()))

    # --- one pass ----------------------------------------------------------------------------------------

    def run_due(self) -> ErasureRun:
        """Attempt every erasure that is due now; returns how many completed and failed."""
        completed = failed = 0
        for erasure in self.pending.due(utcnow(), self.batch):
            try:
                key = self.crypto.unwrap(erasure.subject_id, erasure.wrapped_key)
                email = self.crypto.decrypt(key, erasure.subject_id, "pending_email", erasure.email_enc)
                self.steps.run(Erasure(erasure.request_id, "email", lookup_hash(self.crypto, email),
                                       erasure.created_at, email=email))
                subject_hash = self.crypto.subject_hash(email)
                self.journal.record(JournalEntry(erasure.request_id, "email", subject_hash, utcnow()))
                erased = True
            except KeyDestroyed:
                erased = False  # the key is already gone: nothing is left to erase with, record it done
            except Exception as exc:  # noqa: BLE001 - any failure is retried later
                self._record_failure(erasure, exc)
                failed += 1
                continue
            self._complete(erasure)
            completed += 1
            if erased:
                attempts = erasure.attempts + 1
                log.info("erasure completed in every system", extra={"pending_id": erasure.id, "attempts": attempts,
                                                                      "erasure_request_id": erasure.request_id})
        ERASURE_ATTEMPTS.labels("completed").inc(completed)
        ERASURE_ATTEMPTS.labels("failed").inc(failed)
        return ErasureRun(completed, failed)

    def _record_failure(self, erasure: DueErasure, exc: Exception) -> None:
        attempts = erasure.attempts + 1
        delay = min(self.retry_max_s, self.retry_base_s * 2 ** (attempts - 1))
        error = failure_text(exc)
        self.pending.record_failure(erasure.id, attempts, utcnow() + timedelta(seconds=delay), error)
        log.warning("erasure step failed; will retry", extra={"pending_id": erasure.id, "attempts": attempts,
                                                               "error": error, "retry_in_s": delay})

    def _complete(self, erasure: DueErasure) -> None:
        """Record erasure-completed, forget the current state, destroy the key: all in one ledger transaction."""

        def work(conn: Connection, appender: Appender) -> None:
            if not self.pending.close(conn, erasure.id, utcnow()):
                return  # another replica completed it first
            entry = appender.append(
                Event(
                    action=ERASURE_COMPLETED,
                    subject_id=erasure.subject_id,
                    processing_consent=False,
                    marketing_consent=False,
                    source="consent-service",
                )
            )
            appender.forget_subject(erasure.subject_id)
            now = utcnow()
            detail = f"ledger entry {entry['seq']}; consent state forgotten"
            self.records.record_step(erasure.request_id, StoredStep(LEDGER, COMPLETED, DONE, detail, "", now), conn)
            ErasureRecords.close(conn, erasure.request_id, now)

        self.writer.run(work)
