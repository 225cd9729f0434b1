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
from datetime import UTC, datetime, timedelta

from sqlalchemy import DateTime, Index, Integer, String, Text, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.runtime.db import Database

PENDING, DELIVERED, FAILED, DEAD = "pending", "delivered", "failed", "dead"
STATUSES = (PENDING, DELIVERED, FAILED, DEAD)
DESTINATIONS = ("slack", "monday", "email")
MESSAGE, ESCALATION = "message", "escalation"


def utcnow() -> datetime:
    """Naive UTC, stored the same way on SQLite and PostgreSQL."""
    return datetime.now(UTC).replace(tzinfo=None)


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

    __table_args__ = (
        Index("ix_deliveries_due", "status", "destination", "next_attempt_at"),
        Index("ix_deliveries_delivered_at", "status", "delivered_at"),
    )


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
    claimed_by: str | None

    @classmethod
    def of(cls, row: DeliveryRow) -> "Delivery":
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
            claimed_by=row.claimed_by,
        )


def _new_row(key: str, destination: str, payload: str, kind: str, now: datetime) -> DeliveryRow:
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
    )


class DeliveryStore:
    def __init__(self, db: Database):
        self.db = db

    # --- the outbox -------------------------------------------------------------------------------------------
    def add(self, key: str, destination: str, payload: str, kind: str = MESSAGE) -> tuple[Delivery, bool]:
        """Store a new delivery; for a key seen before, return the first one and True."""
        try:
            with self.db.session() as s:
                row = _new_row(key, destination, payload, kind, utcnow())
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

    def by_id(self, delivery_id: str) -> Delivery | None:
        with self.db.session() as s:
            row = s.get(DeliveryRow, delivery_id)
            return Delivery.of(row) if row else None

    # --- claiming and finishing -------------------------------------------------------------------------------
    def claim_due(self, destination: str, limit: int, lease_s: float) -> tuple[str, list[Delivery]]:
        """Lease up to `limit` due pending rows of one destination; each claim counts as an attempt."""
        token = uuid.uuid4().hex
        if limit <= 0:
            return token, []
        now = utcnow()
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

    def _finish(self, s, delivery_id: str, token: str, **values) -> bool:
        result = s.execute(
            update(DeliveryRow)
            .where(DeliveryRow.id == delivery_id, DeliveryRow.claimed_by == token)
            .values(claimed_by=None, lease_until=None, updated_at=utcnow(), **values)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

    def mark_retry(
        self, delivery_id: str, token: str, error: str, next_attempt_at: datetime, attempted: bool = True
    ) -> bool:
        """Back to the queue. `attempted=False` (the breaker refused, nothing was sent) gives the attempt back."""
        values = {} if attempted else {"attempts": DeliveryRow.attempts - 1}
        with self.db.session() as s:
            return self._finish(
                s, delivery_id, token, last_error=error[:2000], next_attempt_at=next_attempt_at, **values
            )

    def _update_queued(self, destination: str, *conditions, **values) -> int:
        """Update the pending, unclaimed rows of one destination that match `conditions`."""
        with self.db.session() as s:
            result = s.execute(
                update(DeliveryRow)
                .where(
                    DeliveryRow.status == PENDING,
                    DeliveryRow.destination == destination,
                    DeliveryRow.claimed_by.is_(None),
                    *conditions,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount

    def note_waiting(self, destination: str, reason: str) -> int:
        """Tell the operator why queued rows that were never tried are waiting (the breaker is open)."""
        return self._update_queued(destination, DeliveryRow.last_error == "", last_error=reason[:2000])

    def mark_delivered_many(self, results: list[tuple[str, str, str]]) -> list[bool]:
        """(id, claim token, external id) of deliveries that went out, recorded in one transaction."""
        with self.db.session() as s:
            now = utcnow()
            return [
                self._finish(s, delivery_id, token, status=DELIVERED, delivered_at=now, external_id=external_id,
                             last_error="")
                for delivery_id, token, external_id in results
            ]

    def bring_forward(self, destination: str) -> int:
        """The destination works again: everything waiting for it is due now."""
        now = utcnow()
        return self._update_queued(destination, DeliveryRow.next_attempt_at > now, next_attempt_at=now)

    def mark_dead(self, delivery_id: str, token: str, error: str) -> bool:
        with self.db.session() as s:
            return self._finish(s, delivery_id, token, status=DEAD, last_error=error[:2000])

    def mark_failed(self, delivery_id: str, token: str, error: str, escalation: tuple[str, str] | None) -> bool:
        """Retries exhausted. `escalation` (key, email payload) is queued in the same transaction, once per key."""
        with self.db.session() as s:
            if not self._finish(s, delivery_id, token, status=FAILED, last_error=error[:2000]):
                return False
            if escalation is not None:
                key, payload = escalation
                if s.scalar(select(DeliveryRow.id).where(DeliveryRow.idempotency_key == key)) is None:
                    s.add(_new_row(key, "email", payload, ESCALATION, utcnow()))
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

    def list_entries(self, destination: str | None, statuses: tuple[str, ...], limit: int) -> list[Delivery]:
        with self.db.session() as s:
            query = select(DeliveryRow).where(DeliveryRow.status.in_(statuses))
            if destination:
                query = query.where(DeliveryRow.destination == destination)
            rows = s.scalars(query.order_by(DeliveryRow.created_at, DeliveryRow.id).limit(limit)).all()
            return [Delivery.of(r) for r in rows]

    def replay(self, ids: list[str] | None) -> int:
        """Put FAILED and DEAD rows (the given ones, or all) back in the queue with a fresh attempt budget."""
        now = utcnow()
        query = update(DeliveryRow).where(DeliveryRow.status.in_((FAILED, DEAD)))
        if ids is not None:
            query = query.where(DeliveryRow.id.in_(ids))
        with self.db.session() as s:
            result = s.execute(
                query.values(status=PENDING, attempts=0, next_attempt_at=now, updated_at=now, lease_until=None)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount

    def purge_delivered(self, older_than_days: int) -> int:
        cutoff = utcnow() - timedelta(days=older_than_days)
        with self.db.session() as s:
            result = s.execute(
                delete(DeliveryRow)
                .where(DeliveryRow.status == DELIVERED, DeliveryRow.delivered_at < cutoff)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount
