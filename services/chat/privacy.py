"""Erasing a subject (GDPR Art. 17, requested by the consent service) and the retention purges.

Erasure finds the person as an access request does (subject.find_subject: by email or by phone in any format, by
the phones and full names captured with them, by linkage between conversations and leads) and deletes what was
found: the conversations with their messages, slots, contact email, transcript secret hash and follow-up claims,
and the leads (whose city, area, budget and score would otherwise link back to the deliveries made about them).
Cached intents keyed by what the visitor typed are forgotten too. What stays is the proof: the erasure record with
its request id and counts. A request id is carried out once: a retry, or a second call racing the first, returns
the first result.

Retention: conversations without a lead go RETENTION_DAYS after their last message; leads with their transcripts
go LEAD_RETENTION_DAYS after the last message of their conversation, unless marked as a customer (MarkCustomer).
Both purges run in batches, each batch a transaction whose rows are locked and skipped by any other purge running
at the same time (SKIP LOCKED on PostgreSQL), so several replicas or a CronJob and a manual run never collide.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.chat import staff_store, storage
from services.chat.cache import Cache, intent_key
from services.chat.knowledge import LANGUAGES, normalise
from services.chat.subject import checked_email, checked_phone, checked_subject, find_subject
from services.runtime.clock import utcnow
from services.runtime.db import Database
from services.runtime.errors import NotFoundError, ValidationError

__all__ = ["checked_email", "checked_phone", "erase_subject", "mark_customer", "purge_retention"]

log = logging.getLogger(__name__)
_LEAD_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class ErasureResult:
    conversations: int
    messages_erased: int
    leads_anonymised: int  # leads deleted (the wire name is kept)


@dataclass
class PurgeResult:
    conversations_deleted: int = 0  # conversations without a lead
    leads_deleted: int = 0  # leads past their retention, each with its conversation


def erase_subject(
    db: Database, email: str, request_id: str, phone: str = "", cache: Cache | None = None
) -> ErasureResult:
    email, phone = checked_subject(email, phone)
    request_id = (request_id or "").strip()
    if not request_id or len(request_id) > 64:
        raise ValidationError("request_id is required (at most 64 characters)")
    try:
        with db.session() as s:
            done = _erased(s, request_id)
            if done is not None:
                return done
            found = find_subject(s, email, phone)
            ids = storage.lock_conversations(s, [c.id for c in found.conversations])
            typed = storage.visitor_texts(s, ids)
            deleted = storage.delete_conversations(s, ids)
            result = ErasureResult(deleted.conversations, deleted.messages, deleted.leads)
            storage.record_erasure(s, request_id, result.conversations, result.messages_erased, result.leads_anonymised)
            s.flush()
    except IntegrityError:  # the same request id, erased by a call that committed first
        with db.session() as s:
            first = _erased(s, request_id)
        if first is None:
            raise
        return first
    if cache is not None:
        _forget_cached(cache, typed)
    return result


def _erased(s: Session, request_id: str) -> ErasureResult | None:
    done = storage.erasure_by_request(s, request_id)
    return None if done is None else ErasureResult(done.conversations, done.messages_erased, done.leads_anonymised)


def _forget_cached(cache: Cache, typed: list[str]) -> None:
    """The cached intents keyed by these texts (in every language): the key is a hash of the text, which could still
    confirm a guess of what the person typed."""
    keys = [intent_key(normalise(text), language) for text in typed for language in LANGUAGES]
    cache.forget(keys)


def mark_customer(db: Database, lead_id: str, customer: bool) -> bool:
    """Mark the lead a customer (kept past LEAD_RETENTION_DAYS) or clear the mark; returns the mark now set."""
    lead_id = (lead_id or "").strip()
    if not _LEAD_ID.match(lead_id):
        raise ValidationError("lead_id is malformed: expected the 32 hex digits of a lead id")
    with db.session() as s:
        lead = storage.set_customer(s, lead_id, utcnow() if customer else None)
        if lead is None:
            raise NotFoundError("no lead with this lead_id")
        return lead.customer_at is not None


def purge_retention(
    db: Database,
    days: int,
    lead_days: int,
    batch_size: int,
    progress: Callable[[PurgeResult], None] | None = None,
) -> PurgeResult:
    """Delete conversations without a lead idle for more than `days`, then leads (not customers) whose conversation
    has been idle for more than `lead_days`, with their transcripts, batch by batch."""
    if days < 1 or lead_days < 1 or batch_size < 1:
        raise ValidationError("days, lead_days and batch_size must be positive")
    now = utcnow()
    result = PurgeResult()
    steps: list[tuple[Callable[[Session, dt.datetime, int], list[int]], dt.datetime]] = [
        (storage.idle_conversations_without_lead, now - dt.timedelta(days=days)),
        (storage.expired_lead_conversations, now - dt.timedelta(days=lead_days)),
    ]
    for select_batch, cutoff in steps:
        while True:
            with db.session() as s:
                ids = select_batch(s, cutoff, batch_size)
                if not ids:
                    break
                deleted = storage.delete_conversations(s, ids)
            result.conversations_deleted += deleted.conversations - deleted.leads
            result.leads_deleted += deleted.leads
            if progress:
                progress(result)
    # Staff sign-in lines name no visitor; they are kept as long as a lead would be.
    staff_store.purge(db, now - dt.timedelta(days=lead_days))
    return result
