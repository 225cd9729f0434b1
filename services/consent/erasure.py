"""Erasure after a revoke: ask the chat service until it confirms, then record it and destroy the subject's key.

Pending erasures are rows, so a restart loses none; a thread retries the due ones with exponential backoff and is
woken at once by a new revoke. Completion is idempotent: a second worker (another replica) finding the row already
completed does nothing, and the chat service erases by request id.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import and_, func, select, update
from sqlalchemy.engine import Connection

from services.consent.consent import ERASURE_COMPLETED
from services.consent.crypto import KeyDestroyed, SubjectCrypto
from services.consent.ledger import Appender, Event, as_utc, utc_now
from services.consent.storage import pending_erasures, subjects
from services.consent.writer import LedgerWriter
from services.runtime.db import Database

log = logging.getLogger(__name__)

# erase_in_chat(email, request_id) returns when the chat service has erased the person, raises otherwise.
EraseInChat = Callable[[str, str], None]


class ErasureFailed(RuntimeError):
    """The chat service did not confirm the erasure (the message is a status name, never personal data)."""


@dataclass(frozen=True)
class ErasureRun:
    completed: int = 0
    failed: int = 0


@dataclass(frozen=True)
class PendingSummary:
    pending: int
    oldest_created_at: datetime | None
    most_attempts: int


class ErasureWorker:
    def __init__(
        self,
        db: Database,
        crypto: SubjectCrypto,
        writer: LedgerWriter,
        erase_in_chat: EraseInChat,
        retry_base_s: float = 2.0,
        retry_max_s: float = 300.0,
        poll_s: float = 5.0,
        batch: int = 50,
    ):
        self.db = db
        self.crypto = crypto
        self.writer = writer
        self.erase_in_chat = erase_in_chat
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.poll_s = poll_s
        self.batch = batch
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the periodic job --------------------------------------------------------------------------------

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
            try:
                self.run_due()
            except Exception:  # noqa: BLE001 - a database outage must not end the retry job
                log.exception("erasure run failed; retrying later")
            self._wake.wait(self._seconds_until_next_due())

    def _seconds_until_next_due(self) -> float:
        try:
            with self.db.engine.connect() as conn:
                due = conn.execute(
                    select(func.min(pending_erasures.c.next_attempt_at)).where(pending_erasures.c.completed_at.is_(None))
                ).scalar_one_or_none()
        except Exception:  # noqa: BLE001 - try again after the normal poll interval
            return self.poll_s
        if due is None:
            return self.poll_s
        return max(0.0, min(self.poll_s, (as_utc(due) - utc_now()).total_seconds()))

    # --- one pass ----------------------------------------------------------------------------------------

    def run_due(self) -> ErasureRun:
        """Attempt every erasure that is due now; returns how many completed and failed."""
        with self.db.engine.connect() as conn:
            due = conn.execute(
                select(pending_erasures.c.id, pending_erasures.c.subject_id, pending_erasures.c.request_id,
                       pending_erasures.c.email_enc, pending_erasures.c.attempts, subjects.c.wrapped_key)
                .join(subjects, subjects.c.subject_id == pending_erasures.c.subject_id)
                .where(and_(pending_erasures.c.completed_at.is_(None), pending_erasures.c.next_attempt_at <= utc_now()))
                .order_by(pending_erasures.c.next_attempt_at)
                .limit(self.batch)
            ).all()
        completed = failed = 0
        for row in due:
            try:
                key = self.crypto.unwrap(row.subject_id, row.wrapped_key)
                email = self.crypto.decrypt(key, row.subject_id, "pending_email", row.email_enc)
                self.erase_in_chat(email, row.request_id)
            except KeyDestroyed:
                self.writer.run(lambda conn, appender, r=row: self._complete(conn, appender, r.id, r.subject_id))
                completed += 1
                continue
            except Exception as exc:  # noqa: BLE001 - any failure is retried later
                self._record_failure(row.id, row.attempts + 1, exc)
                failed += 1
                continue
            self.writer.run(lambda conn, appender, r=row: self._complete(conn, appender, r.id, r.subject_id))
            completed += 1
            log.info("erasure completed in chat", extra={"pending_id": row.id, "attempts": row.attempts + 1})
        return ErasureRun(completed, failed)

    def _record_failure(self, pending_id: int, attempts: int, exc: Exception) -> None:
        delay = min(self.retry_max_s, self.retry_base_s * 2 ** (attempts - 1))
        error = str(exc) if isinstance(exc, ErasureFailed) else type(exc).__name__
        with self.db.engine.begin() as conn:
            conn.execute(
                update(pending_erasures)
                .where(pending_erasures.c.id == pending_id)
                .values(attempts=attempts, next_attempt_at=utc_now() + timedelta(seconds=delay), last_error=error[:200])
            )
        log.warning("erasure in chat failed; will retry", extra={"pending_id": pending_id, "attempts": attempts,
                                                                  "error": error, "retry_in_s": delay})

    @staticmethod
    def _complete(conn: Connection, appender: Appender, pending_id: int, subject_id: str) -> None:
        """Record erasure-completed, forget the current state, destroy the key: all in one transaction."""
        still_open = conn.execute(
            select(pending_erasures.c.id).where(
                and_(pending_erasures.c.id == pending_id, pending_erasures.c.completed_at.is_(None))
            )
        ).first()
        if still_open is None:
            return
        now = utc_now()
        appender.append(
            Event(
                action=ERASURE_COMPLETED,
                subject_id=subject_id,
                processing_consent=False,
                marketing_consent=False,
                source="consent-service",
            )
        )
        appender.forget_subject(subject_id)
        conn.execute(
            update(pending_erasures).where(pending_erasures.c.id == pending_id).values(
                completed_at=now, email_enc=None, attempts=pending_erasures.c.attempts + 1, last_error=""
            )
        )

    # --- reporting ---------------------------------------------------------------------------------------

    def summary(self) -> PendingSummary:
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(func.count(), func.min(pending_erasures.c.created_at), func.max(pending_erasures.c.attempts))
                .where(pending_erasures.c.completed_at.is_(None))
            ).one()
        return PendingSummary(row[0], as_utc(row[1]), row[2] or 0)
