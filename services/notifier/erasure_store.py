"""The SQL of an erasure: in one transaction, find the person's deliveries, redact them, cancel what never left, queue
the deletes and the operators' notice, and record what was done (tables `erasures` and `erasure_actions`).

The erasure's row is written first: a second call with the same erasure id (even a concurrent one, which PostgreSQL
holds on the primary key until the first commits) fails on it and reads the first call's actions instead.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.notifier.storage import (
    ACTION_PENDING,
    CANCELLED,
    ERASED_KEY_PREFIX,
    ESCALATION,
    FOLLOW_UP_OUTCOME,
    INTERNAL_ALERT,
    MESSAGE,
    PENDING,
    Delivery,
    DeliveryRow,
    ErasureActionRow,
    ErasureRow,
    mentioning_rows,
    new_row,
    stored_now,
)
from services.runtime.db import Database


@dataclass(frozen=True)
class FollowUp:
    """A delivery the erasure queues: a delete at a processor, or the operators' notice."""

    key: str
    destination: str
    payload: str


@dataclass(frozen=True)
class PlannedAction:
    delivery_id: str
    destination: str
    external_id: str
    action: str
    status: str
    follow_up: FollowUp | None = None


@dataclass(frozen=True)
class ErasurePlan:
    actions: list[PlannedAction]
    operator_notice: FollowUp | None


@dataclass(frozen=True)
class PersonMatch:
    """Who is erased, as the matcher of ExportDeliveries reads it."""

    terms: list[str]
    digit_runs: list[str]
    key_prefixes: list[str]


@dataclass(frozen=True)
class ErasureAction:
    delivery_id: str
    destination: str
    external_id: str
    action: str
    status: str
    follow_up_delivery_id: str
    updated_at: datetime


@dataclass(frozen=True)
class Erasure:
    erasure_id: str
    erased_at: datetime
    deliveries_redacted: int
    actions: list[ErasureAction]
    operator_notice_id: str
    first_call: bool  # False: this erasure id was seen before and nothing was changed


class ErasureStore:
    def __init__(self, db: Database):
        self.db = db

    def erase(
        self,
        erasure_id: str,
        who: PersonMatch,
        plan: Callable[[list[Delivery]], ErasurePlan],
        redacted: Callable[[Delivery], str],
        request_id: str,
    ) -> Erasure:
        """Redact and plan in one transaction; for an erasure id seen before, its stored actions."""
        try:
            with self.db.session() as s:
                now = stored_now()
                erasure = ErasureRow(erasure_id=erasure_id, erased_at=now, deliveries_redacted=0)
                s.add(erasure)
                s.flush()  # a second call with this id stops here (after the first commits, on PostgreSQL)
                rows = mentioning_rows(s, who.terms, who.digit_runs, who.key_prefixes, for_update=True)
                planned = plan([Delivery.of(r) for r in rows])
                for row in rows:
                    self._redact(row, erasure_id, redacted(Delivery.of(row)), now)
                follow_up_ids: dict[str, str] = {}
                for action in planned.actions:
                    follow_up_id = ""
                    if action.follow_up is not None:
                        follow_up_id = follow_up_ids.get(action.follow_up.key) or self._queue(
                            s, action.follow_up, request_id, now
                        )
                        follow_up_ids[action.follow_up.key] = follow_up_id
                    s.add(ErasureActionRow(
                        erasure_id=erasure_id, delivery_id=action.delivery_id, destination=action.destination,
                        external_id=action.external_id, action=action.action, status=action.status,
                        follow_up_delivery_id=follow_up_id, updated_at=now,
                    ))
                if planned.operator_notice is not None:
                    erasure.operator_notice_id = self._queue(s, planned.operator_notice, request_id, now)
                erasure.deliveries_redacted = len(rows)
                s.flush()
                return self._read(s, erasure, first_call=True)
        except IntegrityError:
            stored = self.get(erasure_id)
            if stored is None:
                raise
            return stored

    def get(self, erasure_id: str) -> Erasure | None:
        with self.db.session() as s:
            erasure = s.get(ErasureRow, erasure_id)
            return self._read(s, erasure, first_call=False) if erasure else None

    @staticmethod
    def _redact(row: DeliveryRow, erasure_id: str, summary: str, now: datetime) -> None:
        """Every personal field goes: the payload becomes `summary`, the key (it may name the person or a lead of
        theirs) becomes the row id, the last error (it may quote the payload) is cleared; what never left is
        cancelled, and a worker holding it cannot record a result."""
        row.payload = summary
        if row.kind != ESCALATION:  # 'escalation:<delivery id>' names nobody
            row.idempotency_key = f"{ERASED_KEY_PREFIX}{row.id}"
        row.last_error = ""
        row.erasure_id = erasure_id
        row.updated_at = now
        if row.status == PENDING:
            row.status = CANCELLED
            row.claimed_by = None
            row.lease_until = None

    @staticmethod
    def _queue(s: Session, follow_up: FollowUp, request_id: str, now: datetime) -> str:
        row = new_row(follow_up.key, follow_up.destination, follow_up.payload, MESSAGE, request_id, now,
                       INTERNAL_ALERT)
        s.add(row)
        return row.id

    @staticmethod
    def _read(s: Session, erasure: ErasureRow, first_call: bool) -> Erasure:
        """The erasure's actions, each with the current outcome of its follow-up delivery."""
        query = (
            select(ErasureActionRow, DeliveryRow.status, DeliveryRow.updated_at)
            .outerjoin(DeliveryRow, DeliveryRow.id == ErasureActionRow.follow_up_delivery_id)
            .where(ErasureActionRow.erasure_id == erasure.erasure_id)
            .order_by(ErasureActionRow.destination, ErasureActionRow.delivery_id)
        )
        actions = []
        for row, follow_up_status, follow_up_changed in s.execute(query).all():
            status, updated_at = row.status, row.updated_at
            if status == ACTION_PENDING and follow_up_status is not None:
                status = FOLLOW_UP_OUTCOME[follow_up_status]
                updated_at = max(updated_at, follow_up_changed)
            actions.append(ErasureAction(
                row.delivery_id, row.destination, row.external_id, row.action, status, row.follow_up_delivery_id,
                updated_at,
            ))
        return Erasure(erasure.erasure_id, erasure.erased_at, erasure.deliveries_redacted, actions,
                       erasure.operator_notice_id, first_call)
