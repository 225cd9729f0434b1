"""The outbox and dead-letter queue: one `deliveries` table, claimed row by row so no two workers send one message.

A row is written before Notify answers (the outbox). Workers claim due rows by setting a lease (`claimed_by`,
`lease_until`); on PostgreSQL the candidate rows are locked with FOR UPDATE SKIP LOCKED, and on both databases the
claiming UPDATE only succeeds on rows that are still pending and unleased. A worker that dies leaves its lease to
expire, after which any replica claims the row again. Every finishing write names the claim token, so a worker that
lost its lease cannot overwrite another's result.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    DateTime,
    Executable,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from services.runtime.clock import naive_utc, utcnow
from services.runtime.db import Database

PENDING, DELIVERED, FAILED, DEAD, CANCELLED = "pending", "delivered", "failed", "dead", "cancelled"
STATUSES = (PENDING, DELIVERED, FAILED, DEAD, CANCELLED)
DESTINATIONS = ("slack", "monday", "email")
MESSAGE, ESCALATION = "message", "escalation"
# Keys only the notifier writes: an erasure's own deliveries (ids and references, nobody's data) and redacted rows.
ERASURE_KEY_PREFIX, ERASED_KEY_PREFIX = "erasure:", "erased:"
# Why a message is sent ('' for rows queued before purposes existed); a marketing one needs consent at every attempt.
MARKETING, SERVICE, INTERNAL_ALERT = "marketing", "service", "internal-alert"
PURPOSES = (MARKETING, SERVICE, INTERNAL_ALERT)
# The status of an erasure action; one with a follow-up delivery takes it from that delivery's outcome.
ACTION_PENDING, ACTION_DONE, ACTION_FAILED, ACTION_MANUAL = "pending", "done", "failed", "manual"
FOLLOW_UP_OUTCOME = {
    PENDING: ACTION_PENDING, DELIVERED: ACTION_DONE, FAILED: ACTION_FAILED, DEAD: ACTION_FAILED,
    CANCELLED: ACTION_FAILED,
}


def stored_now() -> datetime:
    """The stored form of now: naive UTC, the same on SQLite and PostgreSQL."""
    return naive_utc(utcnow())


class Base(DeclarativeBase):
    pass


class DeliveryRow(Base):
    __tablename__ = "deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    destination: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16), default=MESSAGE)
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    external_id: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # The request that queued the delivery, so the log lines of its sending join that request's ('' before 0002).
    request_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # MARKETING, SERVICE, INTERNAL_ALERT or '' (before 0003, or a caller that named none).
    purpose: Mapped[str] = mapped_column(String(16), default="", server_default="")
    # The erasure that redacted this row's personal fields ('' for none): such a row is never replayed.
    erasure_id: Mapped[str] = mapped_column(String(64), default="", server_default="")

    __table_args__ = (
        Index("ix_deliveries_due", "status", "destination", "next_attempt_at"),
        Index("ix_deliveries_delivered_at", "status", "delivered_at"),
        Index("ix_deliveries_ended", "status", "updated_at"),
    )


class ErasureRow(Base):
    """One erasure of a person, by the consent service's erasure id (the same id again is the same erasure)."""

    __tablename__ = "erasures"

    erasure_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(DateTime)
    deliveries_redacted: Mapped[int] = mapped_column(Integer)
    # The one message that told the operators what to remove by hand ('' when nothing had to be).
    operator_notice_id: Mapped[str] = mapped_column(String(32), default="", server_default="")


class ErasureActionRow(Base):
    """What an erasure did, or still does, about one delivery that carried the person's data out."""

    __tablename__ = "erasure_actions"

    erasure_id: Mapped[str] = mapped_column(String(64), ForeignKey("erasures.erasure_id"), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    destination: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(20))
    # ACTION_PENDING while its follow-up delivery is; settled from the follow-up before that row is purged.
    status: Mapped[str] = mapped_column(String(16))
    follow_up_delivery_id: Mapped[str] = mapped_column(String(32), default="", server_default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime)


@dataclass(frozen=True)
class Delivery:
    """A detached snapshot of one row."""

    id: str
    idempotency_key: str
    destination: str
    kind: str
    payload: str
    status: str
    attempts: int
    last_error: str
    external_id: str
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
    request_id: str
    purpose: str
    lease_until: datetime | None = None  # a worker holds it until then: it may be being sent right now

    @classmethod
    def of(cls, row: DeliveryRow) -> Delivery:
        return cls(
            id=row.id,
            idempotency_key=row.idempotency_key,
            destination=row.destination,
            kind=row.kind,
            payload=row.payload,
            status=row.status,
            attempts=row.attempts,
            last_error=row.last_error,
            external_id=row.external_id,
            created_at=row.created_at,
            next_attempt_at=row.next_attempt_at,
            delivered_at=row.delivered_at,
            request_id=row.request_id,
            purpose=row.purpose,
            lease_until=row.lease_until,
        )


@dataclass(frozen=True)
class Escalation:
    """The email that tells a person about a FAILED delivery, queued with it (key: once per failed delivery)."""

    key: str
    payload: str
    request_id: str


def new_row(
    key: str, destination: str, payload: str, kind: str, request_id: str, now: datetime, purpose: str = ""
) -> DeliveryRow:
    return DeliveryRow(
        id=uuid.uuid4().hex,
        idempotency_key=key,
        destination=destination,
        kind=kind,
        payload=payload,
        status=PENDING,
        attempts=0,
        last_error="",
        external_id="",
        created_at=now,
        updated_at=now,
        next_attempt_at=now,
        request_id=request_id,
        purpose=purpose,
    )


def _execute_dml(s: Session, statement: Executable) -> int:
    """Run an UPDATE or DELETE without loading rows into the session; returns how many rows it matched."""
    result = s.execute(statement, execution_options={"synchronize_session": False})
    if not isinstance(result, CursorResult):  # Session.execute is typed as returning a plain Result
        raise TypeError(f"{type(result).__name__} from a DML statement has no rowcount")
    return result.rowcount


def mentioning_rows(
    s: Session, terms: list[str], digit_runs: list[str], key_prefixes: list[str], *, for_update: bool = False
) -> list[DeliveryRow]:
    """Rows whose payload contains one of `terms` (lower-cased; in any case) or one of `digit_runs` however they were
    typed (spaces, dashes, dots, brackets and slashes between the digits ignored), or whose idempotency key starts
    with one of `key_prefixes`, oldest first; then the escalations that carry those rows' payloads. Rows an erasure
    already redacted name nobody, and an erasure's own deliveries are never taken for the person's (a second erasure
    must not cancel the first one's deletes). `for_update` locks them (PostgreSQL) for the transaction of `s`."""
    def like(value: str, prefix_only: bool = False) -> str:
        escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return f"{escaped}%" if prefix_only else f"%{escaped}%"

    conditions = [func.lower(DeliveryRow.payload).like(like(t), escape="\\") for t in terms if t]
    conditions += [DeliveryRow.idempotency_key.like(like(p, True), escape="\\") for p in key_prefixes if p]
    digits_only = func.replace(DeliveryRow.payload, " ", "")
    for separator in ("-", ".", "(", ")", "/"):
        digits_only = func.replace(digits_only, separator, "")
    conditions += [digits_only.like(like(d), escape="\\") for d in digit_runs if d]
    if not conditions:
        return []
    order = (DeliveryRow.created_at, DeliveryRow.id)
    own = DeliveryRow.idempotency_key.startswith(ERASURE_KEY_PREFIX, autoescape=True)
    query = select(DeliveryRow).where(or_(*conditions), DeliveryRow.erasure_id == "", ~own).order_by(*order)
    rows = list(s.scalars(query.with_for_update() if for_update else query))
    escalation_keys = [f"escalation:{r.id}" for r in rows if r.kind != ESCALATION]
    seen = {r.id for r in rows}
    if escalation_keys:
        carried = (
            select(DeliveryRow)
            .where(DeliveryRow.idempotency_key.in_(escalation_keys), DeliveryRow.erasure_id == "")
            .order_by(*order)
        )
        rows += [r for r in s.scalars(carried.with_for_update() if for_update else carried) if r.id not in seen]
    return rows


class DeliveryStore:
    def __init__(self, db: Database):
        self.db = db

    # --- the outbox -------------------------------------------------------------------------------------------
    def add(
        self, key: str, destination: str, payload: str, request_id: str, kind: str = MESSAGE, purpose: str = ""
    ) -> tuple[Delivery, bool]:
        """Store a new delivery; for a key seen before, return the first one and True."""
        try:
            with self.db.session() as s:
                row = new_row(key, destination, payload, kind, request_id, stored_now(), purpose)
                s.add(row)
                s.flush()
                return Delivery.of(row), False
        except IntegrityError:
            existing = self.by_key(key)
            if existing is None:
                raise
            return existing, True

    def by_key(self, key: str) -> Delivery | None:
        with self.db.session() as s:
            row = s.scalar(select(DeliveryRow).where(DeliveryRow.idempotency_key == key))
            return Delivery.of(row) if row else None

    # --- claiming and finishing -------------------------------------------------------------------------------
    def claim_due(self, destination: str, limit: int, lease_s: float) -> tuple[str, list[Delivery]]:
        """Lease up to `limit` due pending rows of one destination; each claim counts as an attempt."""
        token = uuid.uuid4().hex
        if limit <= 0:
            return token, []
        now = stored_now()
        free = or_(DeliveryRow.lease_until.is_(None), DeliveryRow.lease_until < now)
        due = (
            select(DeliveryRow.id)
            .where(
                DeliveryRow.status == PENDING,
                DeliveryRow.destination == destination,
                DeliveryRow.next_attempt_at <= now,
                free,
            )
            .order_by(DeliveryRow.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self.db.session() as s:
            rows = s.scalars(
                update(DeliveryRow)
                .where(DeliveryRow.id.in_(due.scalar_subquery()), DeliveryRow.status == PENDING, free)
                .values(
                    claimed_by=token,
                    lease_until=now + timedelta(seconds=lease_s),
                    attempts=DeliveryRow.attempts + 1,
                    updated_at=now,
                )
                .returning(DeliveryRow),
                execution_options={"synchronize_session": False},
            ).all()
            return token, [Delivery.of(r) for r in rows]

    @staticmethod
    def _finish(s: Session, delivery_id: str, token: str, **values: object) -> bool:
        """Release the claim and write the outcome, if the claim `token` still holds the row."""
        matched = _execute_dml(
            s,
            update(DeliveryRow)
            .where(DeliveryRow.id == delivery_id, DeliveryRow.claimed_by == token)
            .values(claimed_by=None, lease_until=None, updated_at=stored_now(), **values),
        )
        return matched == 1

    def mark_retry(
        self, delivery_id: str, token: str, error: str, next_attempt_at: datetime, attempted: bool = True
    ) -> bool:
        """Back to the queue. `attempted=False` (the breaker refused, nothing was sent) gives the attempt back."""
        values = {} if attempted else {"attempts": DeliveryRow.attempts - 1}
        with self.db.session() as s:
            return self._finish(
                s, delivery_id, token, last_error=error[:2000], next_attempt_at=naive_utc(next_attempt_at), **values
            )

    def _update_queued(self, destination: str, *conditions: ColumnElement[bool], **values: object) -> int:
        """Update the pending, unclaimed rows of one destination that match `conditions`."""
        with self.db.session() as s:
            return _execute_dml(
                s,
                update(DeliveryRow)
                .where(
                    DeliveryRow.status == PENDING,
                    DeliveryRow.destination == destination,
                    DeliveryRow.claimed_by.is_(None),
                    *conditions,
                )
                .values(**values),
            )

    def note_waiting(self, destination: str, reason: str) -> int:
        """Tell the operator why queued rows that were never tried are waiting (the breaker is open)."""
        return self._update_queued(destination, DeliveryRow.last_error == "", last_error=reason[:2000])

    def mark_delivered_many(self, results: list[tuple[str, str, str]]) -> list[bool]:
        """(id, claim token, external id) of deliveries that went out, recorded in one transaction."""
        with self.db.session() as s:
            now = stored_now()
            return [
                self._finish(s, delivery_id, token, status=DELIVERED, delivered_at=now, external_id=external_id,
                             last_error="")
                for delivery_id, token, external_id in results
            ]

    def bring_forward(self, destination: str) -> int:
        """The destination works again: everything waiting for it is due now."""
        now = stored_now()
        return self._update_queued(destination, DeliveryRow.next_attempt_at > now, next_attempt_at=now)

    def mark_cancelled(self, delivery_id: str, token: str, reason: str) -> bool:
        """Never to be sent (its recipient objected): nothing went out, so the attempt is given back."""
        with self.db.session() as s:
            return self._finish(
                s, delivery_id, token, status=CANCELLED, last_error=reason[:2000], attempts=DeliveryRow.attempts - 1
            )

    def mark_dead(self, delivery_id: str, token: str, error: str) -> bool:
        with self.db.session() as s:
            return self._finish(s, delivery_id, token, status=DEAD, last_error=error[:2000])

    def mark_failed(self, delivery_id: str, token: str, error: str, escalation: Escalation | None) -> bool:
        """Retries exhausted. `escalation` is queued in the same transaction, once per key."""
        with self.db.session() as s:
            if not self._finish(s, delivery_id, token, status=FAILED, last_error=error[:2000]):
                return False
            if escalation is not None:
                known = s.scalar(select(DeliveryRow.id).where(DeliveryRow.idempotency_key == escalation.key))
                if known is None:
                    s.add(new_row(escalation.key, "email", escalation.payload, ESCALATION, escalation.request_id,
                                   stored_now(), INTERNAL_ALERT))
            return True

    # --- the dead-letter queue for operators ------------------------------------------------------------------
    def counts(self) -> list[tuple[str, str, int]]:
        with self.db.session() as s:
            rows = s.execute(
                select(DeliveryRow.destination, DeliveryRow.status, func.count())
                .group_by(DeliveryRow.destination, DeliveryRow.status)
                .order_by(DeliveryRow.destination, DeliveryRow.status)
            ).all()
            return [(d, st, int(n)) for d, st, n in rows]

    def count_status(self, status: str) -> int:
        with self.db.session() as s:
            return int(s.scalar(select(func.count()).where(DeliveryRow.status == status)) or 0)

    def oldest_age_s(self, status: str) -> float:
        """Seconds since the oldest entry with this status was queued; 0 when there is none."""
        with self.db.session() as s:
            oldest = s.scalar(select(func.min(DeliveryRow.created_at)).where(DeliveryRow.status == status))
        return 0.0 if oldest is None else max(0.0, (naive_utc(utcnow()) - oldest).total_seconds())

    def list_entries(self, destination: str | None, statuses: tuple[str, ...], limit: int) -> list[Delivery]:
        with self.db.session() as s:
            query = select(DeliveryRow).where(DeliveryRow.status.in_(statuses))
            if destination:
                query = query.where(DeliveryRow.destination == destination)
            rows = s.scalars(query.order_by(DeliveryRow.created_at, DeliveryRow.id).limit(limit)).all()
            return [Delivery.of(r) for r in rows]

    def mentioning(self, terms: list[str], digit_runs: list[str], key_prefixes: list[str]) -> list[Delivery]:
        """The deliveries `mentioning_rows` finds."""
        with self.db.session() as s:
            return [Delivery.of(r) for r in mentioning_rows(s, terms, digit_runs, key_prefixes)]

    def replay(self, ids: list[str] | None) -> int:
        """Put FAILED and DEAD rows (the given ones, or all) back in the queue with a fresh attempt budget.

        CANCELLED rows and rows an erasure redacted are never replayed; a replayed marketing row asks consent again
        before it is sent."""
        now = stored_now()
        query = update(DeliveryRow).where(DeliveryRow.status.in_((FAILED, DEAD)), DeliveryRow.erasure_id == "")
        if ids is not None:
            query = query.where(DeliveryRow.id.in_(ids))
        with self.db.session() as s:
            return _execute_dml(
                s, query.values(status=PENDING, attempts=0, next_attempt_at=now, updated_at=now, lease_until=None)
            )

    def purge_ended(self, older_than_days: int) -> dict[str, int]:
        """Delete the rows that ended more than `older_than_days` ago: delivered ones by their delivery time, failed,
        dead and cancelled ones by their last change; returns how many of each status went. The erasure actions
        that wait on a deleted follow-up keep its outcome."""
        cutoff = stored_now() - timedelta(days=older_than_days)
        ended = {
            DELIVERED: DeliveryRow.delivered_at < cutoff,
            FAILED: DeliveryRow.updated_at < cutoff,
            DEAD: DeliveryRow.updated_at < cutoff,
            CANCELLED: DeliveryRow.updated_at < cutoff,
        }
        deleted: dict[str, int] = {}
        with self.db.session() as s:
            for status, old_enough in ended.items():
                self._settle_follow_ups(s, and_(DeliveryRow.status == status, old_enough))
                deleted[status] = _execute_dml(
                    s, delete(DeliveryRow).where(DeliveryRow.status == status, old_enough)
                )
        return deleted

    @staticmethod
    def _settle_follow_ups(s: Session, going: ColumnElement[bool]) -> None:
        """Copy the outcome of the follow-up deliveries about to be deleted into their pending erasure actions."""
        query = (
            select(ErasureActionRow, DeliveryRow.status)
            .join(DeliveryRow, DeliveryRow.id == ErasureActionRow.follow_up_delivery_id)
            .where(ErasureActionRow.status == ACTION_PENDING, going)
        )
        for action, status in s.execute(query).all():
            action.status = FOLLOW_UP_OUTCOME[status]
            action.updated_at = stored_now()
