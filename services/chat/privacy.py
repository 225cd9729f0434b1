"""Erasing a subject (GDPR Art. 17, requested by the consent service) and the retention purge.

Erasure finds the person by normalised email (trimmed, lower-cased): leads with that email and conversations
whose captured email or any message contains it. Their messages are deleted, the identifying lead fields (name,
email, phone, client IP, user agent, free-text start) are cleared and the captured slots dropped; the counts
statistics need (conversations, leads, scores, city, area, budget) stay. A request id is carried out once: a retry
returns the first result.

A person who gave only a phone (an operator's request, after an identity check) is found the same way by it: leads
with that phone and conversations whose messages hold its 9 national digits in any format; the same deletion runs.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

from services.chat import storage
from services.chat.slots import normalise_email, normalise_phone
from services.runtime.clock import utcnow
from services.runtime.db import Database
from services.runtime.errors import ValidationError

_EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class ErasureResult:
    conversations: int
    messages_erased: int
    leads_anonymised: int


def checked_email(email: str) -> str:
    """The email normalised as chat stores it; ValidationError when it is missing or malformed."""
    email = normalise_email(email or "")
    if not _EMAIL_SHAPE.match(email) or len(email) > 254:
        raise ValidationError("email is missing or malformed")
    return email


def checked_phone(phone: str) -> str:
    """The phone as chat stores it (E.164); ValidationError unless it is a 9-digit Polish number."""
    normalised = normalise_phone(phone or "") if len(phone or "") <= 40 else None
    if normalised is None:
        raise ValidationError("phone is missing or malformed (a 9-digit Polish number, +48 optional)")
    return normalised


def national_digits(phone: str) -> str:
    """'+48600700800' -> '600700800': what a message holds however the number was typed."""
    return phone[3:]


def checked_subject(email: str, phone: str) -> tuple[str, str]:
    """(email, "") or ("", phone), normalised; ValidationError unless exactly one of the two is given."""
    if bool((email or "").strip()) == bool((phone or "").strip()):
        raise ValidationError("give exactly one of email or phone")
    return (checked_email(email), "") if (email or "").strip() else ("", checked_phone(phone))


def erase_subject(db: Database, email: str, request_id: str, phone: str = "") -> ErasureResult:
    email, phone = checked_subject(email, phone)
    request_id = (request_id or "").strip()
    if not request_id or len(request_id) > 64:
        raise ValidationError("request_id is required (at most 64 characters)")
    with db.session() as s:
        done = storage.erasure_by_request(s, request_id)
        if done is not None:
            return ErasureResult(done.conversations, done.messages_erased, done.leads_anonymised)
        if email:
            leads = storage.leads_by_email(s, email)
            found = storage.conversation_ids_with_email(s, email)
        else:
            leads = storage.leads_by_phone(s, phone)
            found = storage.conversation_ids_mentioning_digits(s, national_digits(phone))
        conversation_ids = found | {lead.conversation_id for lead in leads}
        erased = 0
        if conversation_ids:
            erased = storage.delete_messages(s, conversation_ids)
            for conv in storage.conversations_by_ids(s, conversation_ids):
                conv.slots = {}
                conv.contact_email = None
                conv.marketing_consent = False
                conv.followups_stopped = True
        now = utcnow()
        for lead in leads:
            lead.name = lead.email = lead.phone = lead.client_ip = lead.user_agent = lead.start = None
            lead.anonymised_at = now
        result = ErasureResult(len(conversation_ids), erased, len(leads))
        storage.record_erasure(s, request_id, result.conversations, result.messages_erased, result.leads_anonymised)
        return result


def purge_retention(db: Database, days: int, batch_size: int, progress: Callable[[int], None] | None = None) -> int:
    """Delete conversations without a lead idle for more than `days`, batch by batch; returns how many."""
    if days < 1 or batch_size < 1:
        raise ValidationError("days and batch_size must be positive")
    cutoff = utcnow() - dt.timedelta(days=days)
    deleted = 0
    while True:
        with db.session() as s:
            ids = storage.idle_conversations_without_lead(s, cutoff, batch_size)
            if not ids:
                return deleted
            storage.delete_conversations(s, ids)
        deleted += len(ids)
        if progress:
            progress(deleted)
