"""ErasePerson (Art. 17 and 19): the person's deliveries lose every personal field, and the copies that left the
platform are followed up: a delete for each Monday.com item, a delete for each Slack message the bot posted (its
reference is known), a notice to the operators, once per erasure, naming the webhook messages they must remove by
hand; emails already sent are recorded as such. The deletes are deliveries like any other (retried, breaker, DLQ).

Only counts and ids are logged; the identifiers given never are.
"""
from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

from services.notifier.deliveries import EMAIL_PATTERN, national_digits
from services.notifier.destinations import CREATE, DELETE
from services.notifier.dispatcher import Dispatcher
from services.notifier.erasure_store import (
    Erasure,
    ErasurePlan,
    ErasureStore,
    FollowUp,
    PersonMatch,
    PlannedAction,
)
from services.notifier.settings import Settings
from services.notifier.storage import (
    ACTION_DONE,
    ACTION_MANUAL,
    ACTION_PENDING,
    CANCELLED,
    DELIVERED,
    ERASURE_KEY_PREFIX,
    ESCALATION,
    PENDING,
    Delivery,
)
from services.runtime.clock import naive_utc, utcnow
from services.runtime.errors import NotFoundError, ValidationError
from services.runtime.request_context import current_request_id

log = logging.getLogger(__name__)

DELETE_ITEM, DELETE_MESSAGE, REMOVE_MANUALLY = "delete-item", "delete-message", "remove-manually"
ALREADY_SENT, NOTHING_SENT = "already-sent", "nothing-sent"
_ERASURE_ID = re.compile(r"^[\x21-\x7e]{1,64}$")
MAX_IDENTIFIERS = 100


def redacted_payload(delivery: Delivery, erasure_id: str) -> str:
    """What stays of a redacted delivery's message: that it was erased, by which erasure, and what kind it was."""
    summary = {"redacted_by_erasure": erasure_id, "destination": delivery.destination, "kind": delivery.kind,
               "purpose": delivery.purpose}
    return json.dumps(summary, sort_keys=True)


class ErasureService:
    def __init__(self, settings: Settings, store: ErasureStore, dispatcher: Dispatcher):
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher

    def erase_person(
        self, erasure_id: str, email: str, phones: list[str], lead_ids: list[str], session_ids: list[str],
        conversation_ids: list[str], names: list[str],
    ) -> Erasure:
        """Redact the person's deliveries and follow up at the processors; the same erasure id again changes nothing
        and answers the first call's actions with their current status."""
        who = _person(erasure_id, email, phones, lead_ids, session_ids, conversation_ids, names)
        erasure = self.store.erase(
            erasure_id, who, lambda found: self.plan(erasure_id, found),
            lambda delivery: redacted_payload(delivery, erasure_id), current_request_id(),
        )
        if erasure.first_call:
            counts: dict[str, int] = {}
            for action in erasure.actions:
                counts[action.action] = counts.get(action.action, 0) + 1
            log.info("person erased from the deliveries", extra={
                "erasure_id": erasure_id, "deliveries_redacted": erasure.deliveries_redacted, **counts,
                "operator_notice_id": erasure.operator_notice_id,
            })
            self.dispatcher.wake()
        return erasure

    def actions(self, erasure_id: str) -> Erasure:
        if not _ERASURE_ID.match(erasure_id or ""):
            raise ValidationError("erasure_id is required: 1-64 printable characters without spaces")
        erasure = self.store.get(erasure_id)
        if erasure is None:
            raise NotFoundError("no erasure with this id")
        return erasure

    def plan(self, erasure_id: str, found: list[Delivery]) -> ErasurePlan:
        """What to do about each delivery found: a pure function of the rows as they were before redaction."""
        now = naive_utc(utcnow())
        actions = [self._action(erasure_id, d, now) for d in found]
        manual = [(a, d) for a, d in zip(actions, found, strict=True) if a.status == ACTION_MANUAL]
        return ErasurePlan(actions, self._operator_notice(erasure_id, manual) if manual else None)

    def _action(self, erasure_id: str, d: Delivery, now: datetime) -> PlannedAction:
        """A delivery a worker holds right now may be leaving as the erasure cancels it: it counts as sent."""
        in_flight = d.status == PENDING and d.lease_until is not None and d.lease_until > now
        key = f"{ERASURE_KEY_PREFIX}{erasure_id}:{d.id}"
        if d.destination == "monday":
            return self._monday_action(erasure_id, d, in_flight)
        if d.status != DELIVERED and not in_flight:
            return PlannedAction(d.id, d.destination, d.external_id, NOTHING_SENT, ACTION_DONE)
        if d.destination == "slack" and d.external_id and self.settings.slack_bot_token:
            payload = json.dumps({"operation": DELETE, "message": d.external_id})
            return PlannedAction(d.id, d.destination, d.external_id, DELETE_MESSAGE, ACTION_PENDING,
                                 FollowUp(key, "slack", payload))
        if d.destination == "slack":
            return PlannedAction(d.id, d.destination, d.external_id, REMOVE_MANUALLY, ACTION_MANUAL)
        return PlannedAction(d.id, d.destination, d.external_id, ALREADY_SENT, ACTION_DONE)

    @staticmethod
    def _monday_action(erasure_id: str, d: Delivery, in_flight: bool) -> PlannedAction:
        """The item by its id; a create that was tried but not recorded (a timeout, a crash, in flight) may still
        have made one: by its lookup key when it has one, else by hand."""
        if d.external_id:
            payload = json.dumps({"operation": DELETE, "item_id": d.external_id})
            follow_up = FollowUp(f"{ERASURE_KEY_PREFIX}{erasure_id}:item:{d.external_id}", "monday", payload)
            return PlannedAction(d.id, d.destination, d.external_id, DELETE_ITEM, ACTION_PENDING, follow_up)
        item = json.loads(d.payload) if d.kind != ESCALATION else {}
        tried = in_flight or (d.attempts > 0 and d.status != CANCELLED)
        if not tried or (item.get("operation") or CREATE) != CREATE:
            return PlannedAction(d.id, d.destination, "", NOTHING_SENT, ACTION_DONE)
        if item.get("lookup_key"):
            payload = json.dumps({"operation": DELETE, "lookup_key": item["lookup_key"]})
            follow_up = FollowUp(f"{ERASURE_KEY_PREFIX}{erasure_id}:{d.id}", "monday", payload)
            return PlannedAction(d.id, d.destination, "", DELETE_ITEM, ACTION_PENDING, follow_up)
        if in_flight:
            return PlannedAction(d.id, d.destination, "", REMOVE_MANUALLY, ACTION_MANUAL)
        return PlannedAction(d.id, d.destination, "", NOTHING_SENT, ACTION_DONE)

    def _operator_notice(self, erasure_id: str, manual: list[tuple[PlannedAction, Delivery]]) -> FollowUp:
        """One message to the operators (ESCALATION_EMAIL, else Slack): what to delete by hand, named by
        destination, delivery id, time and reference, never by what it said."""
        lines = [
            f"- {d.destination} delivery {d.id}, sent {_utc(d)}"
            + (f", message {a.external_id}" if a.external_id else ", no reference recorded")
            for a, d in manual
        ]
        text = (
            f"Erasure {erasure_id}: {len(manual)} message(s) about the erased person cannot be deleted through an API "
            "(Slack's incoming webhook cannot delete; a send in flight left no reference). Delete them by hand:\n"
            + "\n".join(lines)
            + "\nThe erasure report (NotifierInternal.GetErasureActions) lists them as remove-manually."
        )
        title = f"Erasure {erasure_id}: messages to remove by hand"[:150]
        key = f"{ERASURE_KEY_PREFIX}{erasure_id}:operators"
        if self.settings.escalation_email:
            email = {"to": self.settings.escalation_email, "subject": title, "body": text}
            return FollowUp(key, "email", json.dumps(email))
        return FollowUp(key, "slack", json.dumps({"title": title, "text": text[:3000], "fields": {}}))


def _person(
    erasure_id: str, email: str, phones: list[str], lead_ids: list[str], session_ids: list[str],
    conversation_ids: list[str], names: list[str],
) -> PersonMatch:
    """The matcher of ExportDeliveries, plus the person's full names (in any case); INVALID_ARGUMENT for bad input."""
    if not _ERASURE_ID.match(erasure_id or ""):
        raise ValidationError("erasure_id is required: 1-64 printable characters without spaces")
    lists = {"phones": phones, "lead_ids": lead_ids, "session_ids": session_ids,
             "conversation_ids": conversation_ids, "names": names}
    for what, values in lists.items():
        if len(values) > MAX_IDENTIFIERS:
            raise ValidationError(f"{what} has more than {MAX_IDENTIFIERS} entries")
        if any(len(v) > 200 for v in values):
            raise ValidationError(f"an entry of {what} is longer than 200 characters")
    email = email.strip().lower()
    if email and not EMAIL_PATTERN.match(email):
        raise ValidationError("email is malformed")
    # Blank entries (an identifier the person never gave) are skipped; a malformed one is refused.
    digits = [national_digits(p) for p in phones if p.strip()]
    if any(len(d) < 6 for d in digits):
        raise ValidationError("a phone has fewer than 6 digits")
    ids = [i.strip().lower() for i in lead_ids + session_ids if i.strip()]
    if any(len(i) < 6 for i in ids):
        raise ValidationError("a lead or session id is shorter than 6 characters")
    conversation_ids = [c.strip() for c in conversation_ids if c.strip()]
    if any(not c.isdigit() for c in conversation_ids):
        raise ValidationError("a conversation id must be a number")
    # A full name (two words or more) names a person; a first name alone would erase strangers' deliveries.
    full_names = [" ".join(n.lower().split()) for n in names if len(n.split()) >= 2]
    terms = ([email] if email else []) + ids + full_names
    prefixes = [f"followup:{c}:" for c in conversation_ids]
    if not (terms or digits or prefixes):
        raise ValidationError("name the person: an email, a phone, or their lead, session or conversation ids")
    return PersonMatch(terms, digits, prefixes)


def _utc(d: Delivery) -> str:
    sent = d.delivered_at or d.created_at
    return f"{sent.replace(tzinfo=UTC):%Y-%m-%d %H:%M:%S} UTC"
