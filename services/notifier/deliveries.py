"""The notifier's deliveries as its callers and operators see them, without any gRPC types.

Notify validates, stores the message (the outbox) and only then answers; the dispatcher delivers it afterwards. The
same idempotency key twice is one delivery, and the second call answers with the first one's state. Operators read
and replay the dead-letter queue and reset the destinations' breakers here too.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from services.notifier.breakers import BreakerBoard, BreakerStatus
from services.notifier.destinations import CREATE, DELETE, UPDATE, Payload
from services.notifier.dispatcher import Dispatcher
from services.notifier.settings import Settings
from services.notifier.storage import (
    CANCELLED,
    DEAD,
    DESTINATIONS,
    ERASED_KEY_PREFIX,
    ERASURE_KEY_PREFIX,
    ESCALATION,
    FAILED,
    INTERNAL_ALERT,
    MARKETING,
    PENDING,
    PURPOSES,
    STATUSES,
    Delivery,
    DeliveryStore,
)
from services.runtime.errors import NotFoundError, ValidationError
from services.runtime.request_context import current_request_id

log = logging.getLogger(__name__)

_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces
EMAIL_PATTERN = re.compile(r"^[^@\s<>,;\"]{1,64}@[A-Za-z0-9.\-]{1,253}\.[A-Za-z]{2,}$")
_DELIVERY_ID = re.compile(r"^[0-9a-f]{32}$")
_ITEM_ID = re.compile(r"^[0-9]{1,20}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
# Headers the sender writes itself (or that would change how the message is read): a caller may not set them.
_RESERVED_HEADERS = {"from", "to", "cc", "bcc", "subject", "date", "message-id", "mime-version", "sender", "reply-to"}
MAX_LIST = 1000


def _text(value: str, what: str, limit: int, required: bool = False, single_line: bool = False) -> str:
    if required and not value.strip():
        raise ValidationError(f"{what} is required")
    if len(value) > limit:
        raise ValidationError(f"{what} is longer than {limit} characters")
    if single_line and ("\r" in value or "\n" in value):
        raise ValidationError(f"{what} must be a single line")
    return value


def default_purpose(destination: str) -> str:
    """A caller that names no purpose (an older release, say): an email to a person is taken for marketing, so its
    recipient's consent is asked before it goes; an alert to Slack or Monday.com is internal."""
    return MARKETING if destination == "email" else INTERNAL_ALERT


def validate(key: str, destination: str, payload: Payload, purpose: str = "") -> Payload:
    """The payload as stored; raises ValidationError naming what is wrong."""
    if not _KEY.match(key or ""):
        raise ValidationError("idempotency_key is required: 1-200 printable characters without spaces")
    if key.startswith((ERASURE_KEY_PREFIX, ERASED_KEY_PREFIX)):
        raise ValidationError(f"idempotency keys starting {ERASURE_KEY_PREFIX!r} or {ERASED_KEY_PREFIX!r} are the "
                              "notifier's own")
    if purpose and purpose not in PURPOSES:
        raise ValidationError(f"purpose must be one of {', '.join(PURPOSES)}")
    if purpose == MARKETING and destination != "email":
        raise ValidationError("a marketing message must be an email: its recipient's consent is asked before sending")
    if destination == "slack":
        if not (payload.get("title", "").strip() or payload.get("text", "").strip()):
            raise ValidationError("a Slack alert needs a title or a text")
        _text(payload.get("title", ""), "slack.title", 150, single_line=True)
        _text(payload.get("text", ""), "slack.text", 3000)
        fields = payload.get("fields", {})
        if len(fields) > 50:
            raise ValidationError("slack.fields has more than 50 entries")
        for name, value in fields.items():
            _text(name, "a slack.fields name", 100, required=True, single_line=True)
            _text(value, f"slack.fields[{name}]", 1900)
    elif destination == "monday":
        _monday(payload)
    elif destination == "email":
        if not EMAIL_PATTERN.match(payload.get("to", "")):
            raise ValidationError("email.to is not a valid email address")
        _text(payload.get("subject", ""), "email.subject", 200, required=True, single_line=True)
        _text(payload.get("body", ""), "email.body", 100_000, required=True)
        headers = payload.get("headers", {})
        if len(headers) > 20:
            raise ValidationError("email.headers has more than 20 entries")
        for name, value in headers.items():
            lowered = name.lower()
            if not _HEADER_NAME.match(name) or lowered in _RESERVED_HEADERS or lowered.startswith("content-"):
                raise ValidationError(f"email.headers may not set {name[:64]!r}")
            _text(value, f"email.headers[{name}]", 900, required=True, single_line=True)
    else:
        raise ValidationError("a payload is required: one of slack, monday or email")
    return payload


def _monday(item: Payload) -> None:
    """CREATE needs a name (and may name a lookup key); UPDATE its item (by id or lookup key) and something to change;
    DELETE its item."""
    operation = item.get("operation") or CREATE
    if operation not in (CREATE, UPDATE, DELETE):
        raise ValidationError("monday.operation must be create, update or delete")
    _text(item.get("item_name", ""), "monday.item_name", 255, required=operation == CREATE, single_line=True)
    _text(item.get("group_id", ""), "monday.group_id", 100, single_line=True)
    _text(item.get("lookup_key", ""), "monday.lookup_key", 255, single_line=True)
    for column, value in item.get("column_values", {}).items():
        _text(column, "a monday.column_values id", 100, required=True, single_line=True)
        _text(value, f"monday.column_values[{column}]", 4000)
    item_id = item.get("item_id", "")
    if operation == CREATE:
        if item_id:
            raise ValidationError("monday.item_id must be empty for a create: the new item's id is the external id")
        return
    if item.get("lookup_key") and item_id:
        raise ValidationError(f"a monday {operation} names its item by item_id or by lookup_key, not both")
    if not item.get("lookup_key") and not _ITEM_ID.match(item_id):
        raise ValidationError(
            f"monday.item_id (the item's numeric id) or monday.lookup_key is required for {operation}"
        )
    if operation == UPDATE and not (item.get("column_values") or item.get("item_name")):
        raise ValidationError("a monday update needs column_values or an item_name")


@dataclass(frozen=True)
class DlqStats:
    counts: list[tuple[str, str, int]]  # (destination, status, rows)
    pending: int
    failed: int
    dead: int
    cancelled: int


class DeliveryService:
    """The façade over the outbox, the dispatcher and the breakers that the servicers call."""

    def __init__(self, settings: Settings, store: DeliveryStore, dispatcher: Dispatcher, breakers: BreakerBoard):
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher
        self.breakers = breakers

    def notify(self, key: str, destination: str, payload: Payload, purpose: str = "") -> tuple[Delivery, bool]:
        """Store durably, then wake the workers; returns the delivery and whether the key was seen before.

        The row keeps the id of the request that asked, so the log lines of its sending (later, on a worker
        thread) join that request's. A marketing message keeps its purpose: consent is asked before each attempt."""
        purpose = purpose or default_purpose(destination)
        payload = validate(key, destination, payload, purpose)
        stored = json.dumps(payload, ensure_ascii=False, sort_keys=True)
        delivery, duplicate = self.store.add(key, destination, stored, current_request_id(), purpose=purpose)
        if not duplicate:
            self.dispatcher.wake()
        return delivery, duplicate

    def get_delivery(self, key: str) -> Delivery:
        delivery = self.store.by_key(key) if key else None
        if delivery is None:
            raise NotFoundError("no delivery with this idempotency key")
        return delivery

    def export_deliveries(
        self, email: str, phones: list[str], lead_ids: list[str], session_ids: list[str], conversation_ids: list[str]
    ) -> list[dict[str, object]]:
        """The deliveries made about one person (Art. 15/20): those whose message names their email, a phone of
        theirs (its 9 national digits, in any format), one of their leads or sessions, or whose key is a
        follow-up of one of their conversations; with the escalations that carried them. Each with its purpose,
        destination, times, outcome and the message itself. The email may be empty when phones are given (a
        person who gave only a phone)."""
        email = email.strip().lower()
        if (email or not phones) and not EMAIL_PATTERN.match(email):
            raise ValidationError("email is missing or malformed")
        terms = ([email] if email else []) + [i.lower() for i in lead_ids + session_ids if len(i) >= 6]
        digits = [n for n in (national_digits(p) for p in phones) if len(n) >= 6]
        prefixes = [f"followup:{c}:" for c in conversation_ids if c.isdigit()]
        return [_exported(d) for d in self.store.mentioning(terms, digits, prefixes)]

    def dlq_stats(self) -> DlqStats:
        counts = self.store.counts()
        totals = {status: sum(n for _, s, n in counts if s == status) for status in STATUSES}
        return DlqStats(counts, totals[PENDING], totals[FAILED], totals[DEAD], totals[CANCELLED])

    def list_dead_letters(self, destination: str | None, status: str | None, limit: int) -> list[Delivery]:
        if limit < 0:
            raise ValidationError("limit must not be negative")
        statuses = (status,) if status else (PENDING, FAILED, DEAD, CANCELLED)
        return self.store.list_entries(destination, statuses, min(limit or 100, MAX_LIST))

    def replay(self, delivery_ids: list[str], all_failed: bool) -> int:
        if not delivery_ids and not all_failed:
            raise ValidationError("give delivery_ids, or all_failed=true to replay every failed and dead entry")
        bad = [i for i in delivery_ids if not _DELIVERY_ID.match(i)]
        if bad:
            raise ValidationError(f"not a delivery id: {bad[0][:40]!r}")
        replayed = self.store.replay(None if all_failed else list(delivery_ids))
        if replayed:
            self.dispatcher.wake()
        return replayed

    def purge_ended(self, older_than_days: int = 0) -> dict[str, int]:
        """Delivered, failed, dead and cancelled rows older than `older_than_days` (0: DLQ_CLEANUP_DAYS), by status."""
        if older_than_days < 0:
            raise ValidationError("older_than_days must not be negative")
        days = older_than_days or self.settings.cleanup_days
        deleted = self.store.purge_ended(days)
        log.info("ended deliveries purged", extra={"older_than_days": days, **deleted})
        return deleted

    def breaker_states(self) -> list[BreakerStatus]:
        return [breaker.describe() for breaker in self.breakers]

    def reset_breaker(self, name: str) -> BreakerStatus:
        if name not in DESTINATIONS:
            raise NotFoundError(f"no breaker named {name[:40]!r}; there are: {', '.join(DESTINATIONS)}")
        breaker = self.breakers[name]
        breaker.reset()
        self.dispatcher.destination_recovered(name)
        return breaker.describe()


def national_digits(phone: str) -> str:
    """'+48600700800' -> '600700800', the digits every format of the number contains."""
    digits = re.sub(r"\D", "", phone)
    return digits[2:] if len(digits) == 11 and digits.startswith("48") else digits


def _exported(d: Delivery) -> dict[str, object]:
    return {
        "delivery_id": d.id,
        "idempotency_key": d.idempotency_key,
        "purpose": d.purpose or (INTERNAL_ALERT if d.kind == ESCALATION else default_purpose(d.destination)),
        "destination": d.destination,
        "kind": d.kind,
        "status": d.status,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "external_id": d.external_id,
        "created_at": _utc(d.created_at),
        "delivered_at": _utc(d.delivered_at),
        "request_id": d.request_id,
        "message": json.loads(d.payload),
    }


def _utc(value: datetime | None) -> str | None:
    """Stored as naive UTC."""
    return None if value is None else value.replace(tzinfo=UTC).isoformat()
