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
  4. hand the email to the notifier with the key followup:<conversation_id>:<n>, as a marketing message (the notifier
     asks consent again before each of its attempts) that states the right to object and carries the one-click
     unsubscribe link consent issued, as text and in the List-Unsubscribe headers (RFC 8058);
  5. commit. If the notifier did not accept it, the transaction rolls back and the claim with it, so the next run
     tries again; if the process dies after step 4, the retry reuses the key, which the notifier deduplicates.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.orm import Session

from services.chat import storage
from services.chat.knowledge import KnowledgeBase
from services.chat.remote import ConsentClient, NotifierClient, PeerUnavailable
from services.chat.storage import AlreadyClaimed, Conversation
from services.runtime.clock import utcnow
from services.runtime.db import Database

log = logging.getLogger(__name__)

Outcome = Literal["sent", "already_sent", "skipped_no_consent", "failed"]


@dataclass
class FollowupRun:
    due: int = 0
    sent: int = 0
    already_sent: int = 0
    skipped_no_consent: int = 0
    failed: int = 0

    def add(self, outcome: Outcome) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


class _NotSent(Exception):
    """Roll the claim back: the follow-up was not handed over."""


class FollowupSender:
    """Finds the follow-ups due and hands each to the notifier, exactly once (see the module's docstring)."""

    def __init__(
        self,
        db: Database,
        kb: KnowledgeBase,
        consent: ConsentClient,
        notifier: NotifierClient,
        delays_s: tuple[int, ...],
        batch: int,
    ):
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
                previous_before = None
                if number > 1:
                    previous_before = now - dt.timedelta(seconds=delay - self.delays_s[number - 2])
                ids = storage.conversations_due_for_followup(
                    s, number, now - dt.timedelta(seconds=delay), previous_before, limit - len(pairs)
                )
                pairs.extend((cid, number) for cid in ids)
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

    def send(self, conversation_id: int, number: int, now: dt.datetime) -> Outcome:
        """One follow-up, in one transaction: claim, check consent, hand over, commit (or roll all back)."""
        try:
            with self.db.session() as s:
                conv = storage.lock_conversation_unless_taken(s, conversation_id)
                if conv is None or conv.contact_email is None or not self._still_due(conv, number):
                    return "already_sent"
                storage.claim_followup(s, conversation_id, number, now)
                if not self._marketing_allowed(conv.contact_email):
                    storage.release_followup_claim(s, conversation_id, number)
                    conv.followups_stopped = True
                    return "skipped_no_consent"
                self._hand_over(s, conv, conv.contact_email, number)
                conv.followups_sent = number
                conv.last_followup_at = now
                return "sent"
        except AlreadyClaimed:
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
        )

    def _marketing_allowed(self, email: str) -> bool:
        try:
            return self.consent.marketing_allowed(email)
        except PeerUnavailable as exc:
            log.warning("follow-up postponed: consent unknown", extra={"reason": str(exc)})
            raise _NotSent from None

    def _hand_over(self, s: Session, conv: Conversation, email: str, number: int) -> None:
        lead = storage.lead_by_id(s, conv.lead_id) if conv.lead_id else None
        name = ((lead.name if lead else None) or "").split(" ")[0]
        lang = conv.language
        subject = self.kb.say(f"followups.{number}.subject", lang)
        body = self.kb.say(f"followups.{number}.body", lang, name=name).replace("  ", " ").replace(" ,", ",")
        try:
            url = self.consent.unsubscribe_link(email)
        except PeerUnavailable as exc:
            log.warning("follow-up postponed: no unsubscribe link", extra={"reason": str(exc)})
            raise _NotSent from None
        body = f"{body}\n\n--\n{self.kb.say('followup_objection', lang, url=url)}\n"
        try:
            self.notifier.marketing_email(f"followup:{conv.id}:{number}", email, subject, body, url)
        except PeerUnavailable as exc:
            log.warning("follow-up postponed: notifier unavailable", extra={"reason": str(exc)})
            raise _NotSent from None
