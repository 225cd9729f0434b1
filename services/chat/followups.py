"""Follow-up emails, exactly once per (conversation, follow-up number).

A conversation gets follow-up n when it has a captured email and marketing consent, is not converted, its
sequence was not stopped (a visitor reply or an unsubscribe stops it), n-1 follow-ups went out, and it has been
idle for FOLLOWUP_DELAYS[n-1] (and, for n > 1, the gap between the configured delays has passed since the
previous follow-up).

Sending one follow-up is a single transaction:
  1. lock the conversation row (SKIP LOCKED on PostgreSQL: another worker holding it is already on it) and
     re-check that it is still due;
  2. claim it: INSERT INTO followup_event (conversation_id, followup_number); the UNIQUE pair makes a second claim
     fail, which is a normal "already sent";
  3. ask the consent service, at send time, whether marketing consent is still on (an unsubscribe that landed
     after scheduling wins: no send, and the sequence stops);
  4. hand the email to the notifier with the key followup:<conversation_id>:<n>;
  5. commit. If the notifier did not accept it, the transaction rolls back and the claim with it, so the next run
     tries again; if the process dies after step 4, the retry reuses the key, which the notifier deduplicates.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.chat.knowledge import KnowledgeBase
from services.chat.remote import PeerUnavailable
from services.chat.storage import Conversation, FollowupEvent, Lead, utcnow
from services.runtime.db import Database

log = logging.getLogger(__name__)


@dataclass
class FollowupRun:
    due: int = 0
    sent: int = 0
    already_sent: int = 0
    skipped_no_consent: int = 0
    failed: int = 0

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


class _NotSent(Exception):
    """Roll the claim back: the follow-up was not handed over."""


class FollowupScheduler:
    def __init__(self, db: Database, kb: KnowledgeBase, consent, notifier, delays_s: tuple[int, ...], batch: int):
        self.db = db
        self.kb = kb
        self.consent = consent
        self.notifier = notifier
        self.delays_s = delays_s
        self.batch = batch

    def due(self, now: dt.datetime, limit: int) -> list[tuple[int, int]]:
        """(conversation id, follow-up number) pairs due at `now`, oldest conversations first."""
        pairs: list[tuple[int, int]] = []
        with self.db.session() as s:
            for number, delay in enumerate(self.delays_s, start=1):
                query = (
                    select(Conversation.id)
                    .where(Conversation.marketing_consent.is_(True))
                    .where(Conversation.followups_stopped.is_(False))
                    .where(Conversation.converted.is_(False))
                    .where(Conversation.contact_email.is_not(None))
                    .where(Conversation.followups_sent == number - 1)
                    .where(Conversation.last_activity_at <= now - dt.timedelta(seconds=delay))
                    .order_by(Conversation.id)
                    .limit(limit - len(pairs))
                )
                if number > 1:
                    gap = dt.timedelta(seconds=delay - self.delays_s[number - 2])
                    query = query.where(Conversation.last_followup_at <= now - gap)
                pairs.extend((cid, number) for cid in s.scalars(query))
                if len(pairs) >= limit:
                    break
        return pairs

    def run(self, limit: int = 0, now: dt.datetime | None = None) -> FollowupRun:
        now = now or utcnow()
        result = FollowupRun()
        pairs = self.due(now, limit or self.batch)
        result.due = len(pairs)
        for conversation_id, number in pairs:
            result.add(self.send(conversation_id, number, now))
        if result.due:
            log.info("follow-ups run", extra=vars(result))
        return result

    def send(self, conversation_id: int, number: int, now: dt.datetime) -> str:
        """One follow-up: 'sent', 'already_sent', 'skipped_no_consent' or 'failed'."""
        try:
            with self.db.session() as s:
                conv = s.scalars(
                    select(Conversation).where(Conversation.id == conversation_id).with_for_update(skip_locked=True)
                ).first()
                if conv is None or not self._still_due(conv, number):
                    return "already_sent"
                s.add(FollowupEvent(conversation_id=conversation_id, followup_number=number, sent_at=now))
                s.flush()
                email = conv.contact_email
                if not self._marketing_allowed(email):
                    s.query(FollowupEvent).filter_by(conversation_id=conversation_id, followup_number=number).delete()
                    conv.followups_stopped = True
                    return "skipped_no_consent"
                self._hand_over(s, conv, number)
                conv.followups_sent = number
                conv.last_followup_at = now
                return "sent"
        except IntegrityError:
            return "already_sent"
        except _NotSent:
            return "failed"

    @staticmethod
    def _still_due(conv: Conversation, number: int) -> bool:
        return (
            conv.followups_sent == number - 1
            and conv.marketing_consent
            and not conv.followups_stopped
            and not conv.converted
            and conv.contact_email is not None
        )

    def _marketing_allowed(self, email: str) -> bool:
        try:
            return self.consent.marketing_allowed(email)
        except PeerUnavailable as exc:
            log.warning("follow-up postponed: consent unknown", extra={"reason": str(exc)})
            raise _NotSent from None

    def _hand_over(self, s, conv: Conversation, number: int) -> None:
        lead = s.get(Lead, conv.lead_id) if conv.lead_id else None
        name = ((lead.name if lead else None) or "").split(" ")[0]
        lang = conv.language
        subject = self.kb.say(f"followups.{number}.subject", lang)
        body = self.kb.say(f"followups.{number}.body", lang, name=name).replace("  ", " ").replace(" ,", ",")
        try:
            self.notifier.email(f"followup:{conv.id}:{number}", conv.contact_email, subject, body)
        except PeerUnavailable as exc:
            log.warning("follow-up postponed: notifier unavailable", extra={"reason": str(exc)})
            raise _NotSent from None
