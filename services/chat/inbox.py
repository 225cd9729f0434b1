"""The sales inbox (the Inbox service): conversations waiting for a person and those an agent is in, transcripts,
taking a conversation over, replying and handing it back to the bot; a day's leads, their corrections and sales
status; the numbers sales asks for.

An agent is who Envoy's JWT filter says (x-staff-agent, the username, and x-staff-name, the display name visitors
see); staff_auth's interceptor refuses an Inbox call without them. One agent at a time holds a conversation: taking
it over locks its row (SELECT ... FOR UPDATE on PostgreSQL, SQLite's one writer), so of two agents who click at once
exactly one gets it and the other is told who did. Only the agent holding a conversation replies in it; any agent
may hand it back to the bot (a colleague who left for the day must not keep a visitor waiting), which the audit
records. Every change writes its agent_action row in its own transaction (audit.py) and, once committed, is
published to the streams (events.py), so the visitor's widget and the other agents' inboxes see it at once.

A correction is read with the parsers a visitor's own answers go through (slots.py, when.py, names.py), so a value
the bot would refuse is refused here too, naming the field, and nothing is changed. The corrected lead is rescored
and its Monday.com item updated through the lead outbox (the same item: the notifier finds it by the lead id), once
per correction whatever the retries. A status goes to Monday.com too when MONDAY_COLUMNS maps `status`.

Days (ListLeads, GetStats) are calendar days in HANDOFF_TIMEZONE.
"""
from __future__ import annotations

import datetime as dt
import re
import statistics
import textwrap
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import grpc
from sqlalchemy.orm import Session

from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from services.chat import audit, inbox_store, leads, storage
from services.chat.conversation import SESSION_ID, lead_values
from services.chat.events import EventBus
from services.chat.leads import LeadDelivery
from services.chat.names import as_name
from services.chat.sales import SalesView
from services.chat.slots import SlotValue, extract, find_city, looks_like_name, normalise_email, normalise_phone
from services.chat.staff_auth import Agent, verified_agent
from services.chat.storage import Conversation, Lead
from services.chat.streams import Streams
from services.runtime.clock import utcnow
from services.runtime.db import Database
from services.runtime.errors import NotFoundError, PreconditionError, ValidationError
from services.runtime.timestamps import to_timestamp

WAITING, AGENT = "waiting", "agent"
VIEWS = ("", "waiting", "live")
STATUSES = ("contacted", "won", "lost")  # what an agent may set; a lead starts as "new"
CORRECTABLE = ("name", "email", "phone", "city", "area_m2", "budget", "start")
MAX_VALUE_CHARS = 200  # a corrected value, as typed
SUMMARY_CHARS = 140  # the last visitor message in a summary
_LEAD_ID = re.compile(r"^[0-9a-f]{32}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PLACE = re.compile(r"^[^\W\d_][^\W\d_' -]{1,79}$")  # a city named by letters alone (one the bot does not list)
# Slot keys a correction of each field sets (or clears): a budget carries its currency, a start its months away.
_SLOT_KEYS = {"budget": ("budget", "budget_currency"), "start": ("start", "start_months")}
_FIELD_PARSERS: dict[str, Callable[[str], str | None]] = {
    "name": lambda text: as_name(text) if looks_like_name(text) else None,
    "email": normalise_email,
    "phone": normalise_phone,
    "city": lambda text: find_city(text) or (" ".join(w.capitalize() for w in text.split()) if _PLACE.match(text)
                                             else None),
}


@dataclass
class Summary:
    session_id: str
    handoff: str
    language: str
    visitor: str
    last_message: str
    waiting_since: dt.datetime | None
    waiting_seconds: int
    agent: str
    reason: str
    last_activity_at: dt.datetime


@dataclass
class Entry:
    seq: int
    role: str
    text: str
    author: str
    created_at: dt.datetime


@dataclass
class LeadView:
    lead: Lead
    session_id: str
    missing: list[str]


@dataclass
class TranscriptView:
    summary: Summary
    messages: list[Entry]
    lead: LeadView | None


@dataclass
class Period:
    conversations: int = 0
    leads_complete: int = 0
    leads_partial: int = 0
    handoffs: int = 0
    median_first_reply_s: float = 0.0
    conversion: float = 0.0


@dataclass
class Stats:
    today: Period = field(default_factory=Period)
    week: Period = field(default_factory=Period)


def parse_correction(name: str, raw: str) -> dict[str, SlotValue]:
    """The slot values a corrected field sets, read as the bot reads a visitor's answer to its question for that
    field; an empty value clears the field. ValidationError naming the field when the value does not parse."""
    if name not in CORRECTABLE:
        raise ValidationError(f"fields: {name!r} cannot be corrected (one of {', '.join(CORRECTABLE)})")
    text = " ".join(raw.split())
    keys = _SLOT_KEYS.get(name, (name,))
    if not text:
        return dict.fromkeys(keys)
    if len(text) > MAX_VALUE_CHARS or any(unicodedata.category(ch) == "Cc" for ch in raw):
        raise ValidationError(f"fields.{name}: not a value (control characters, or over {MAX_VALUE_CHARS} characters)")
    if name in _FIELD_PARSERS:
        value = _FIELD_PARSERS[name](text)
        found: dict[str, SlotValue] = {} if value is None else {name: value}
    else:
        found = {key: value for key, value in extract(text, name, True).values.items() if key in keys}
    if name not in found:
        raise ValidationError(f"fields.{name}: {_WHAT[name]} could not be read from the value given")
    return {key: found.get(key) for key in keys}


_WHAT = {
    "name": "a person's name", "email": "an email address", "phone": "a phone number", "city": "a city",
    "area_m2": "a flat area between 10 and 1000 m²", "budget": "an amount", "start": "a date or month",
}


def _lead_slots(lead: Lead) -> dict[str, SlotValue]:
    """The lead's values as conversation slots, so conversation.lead_values derives and scores them as it does for a
    visitor's."""
    return {
        "name": lead.name, "email": lead.email, "phone": lead.phone, "city": lead.city, "area_m2": lead.area_m2,
        "budget": lead.budget_amount, "budget_currency": lead.budget_currency, "start": lead.start,
        "start_months": lead.start_months,
    }


def check_text(text: str, max_chars: int) -> str:
    """An agent's reply: not empty, at most `max_chars`, no control characters but line breaks and tabs."""
    stripped = text.strip()
    if not stripped:
        raise ValidationError("text is empty")
    if len(stripped) > max_chars:
        raise ValidationError(f"text is too long: {len(stripped)} characters, at most {max_chars}")
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in stripped):
        raise ValidationError("text contains control characters")
    return stripped


def _shorten(text: str) -> str:
    return textwrap.shorten(text, SUMMARY_CHARS, placeholder=" …") if text else ""


def _check_session_id(session_id: str) -> str:
    if not SESSION_ID.match(session_id or ""):
        raise ValidationError("conversation_id is malformed: expected the conversation's session id (a UUID)")
    return session_id


def _check_lead_id(lead_id: str) -> str:
    if not _LEAD_ID.match(lead_id or ""):
        raise ValidationError("lead_id is malformed: expected the 32 hex digits of a lead id")
    return lead_id


class Inbox:
    def __init__(
        self, db: Database, delivery: LeadDelivery, sales: SalesView, events: EventBus, zone: ZoneInfo,
        max_message_chars: int, eur_pln_rate: float | None,
    ):
        self.db = db
        self.delivery = delivery
        self.sales = sales
        self.events = events
        self.zone = zone
        self.max_message_chars = max_message_chars
        self.eur_pln_rate = eur_pln_rate

    # --- conversations -----------------------------------------------------------------------------------------

    def conversations(self, view: str) -> tuple[list[Summary], list[Summary]]:
        """(waiting, live): the waiting ones oldest first, the live ones in the order they were taken."""
        if view not in VIEWS:
            raise ValidationError("view must be 'waiting', 'live' or empty (both)")
        now = utcnow()
        with self.db.session() as s:
            waiting = inbox_store.conversations_in(s, WAITING) if view in ("", "waiting") else []
            live = inbox_store.conversations_in(s, AGENT) if view in ("", "live") else []
            summaries = self._summaries(s, [*waiting, *live], now)
        return summaries[:len(waiting)], summaries[len(waiting):]

    def summary(self, session_id: str) -> Summary | None:
        """The conversation as the inbox lists it; None when there is no such conversation (any more)."""
        with self.db.session() as s:
            conv = storage.conversation_by_session(s, session_id)
            return None if conv is None else self._summaries(s, [conv], utcnow())[0]

    def transcript(self, session_id: str) -> TranscriptView:
        _check_session_id(session_id)
        with self.db.session() as s:
            conv = storage.conversation_by_session(s, session_id)
            if conv is None:
                raise NotFoundError("no conversation with this conversation_id")
            return self._transcript(s, conv)

    def take_over(self, agent: Agent, session_id: str) -> TranscriptView:
        """The agent joins the conversation (waiting for a person, or the bot's): the bot is silent until HandBack."""
        _check_session_id(session_id)
        with self.db.session() as s:
            conv = self._locked(s, session_id)
            if conv.handoff == AGENT and conv.agent != agent.username:
                raise PreconditionError(f"{conv.agent} is already in this conversation")
            changed = conv.handoff != AGENT
            if changed:
                conv.handoff, conv.agent, conv.taken_at = AGENT, agent.username, utcnow()
                audit.record(s, agent.username, audit.TAKE_OVER, session_id=session_id, lead_id=conv.lead_id)
            view = self._transcript(s, conv)
        if changed:
            self.events.handoff_changed(session_id, AGENT)
            self.events.inbox_changed(session_id)
        return view

    def reply(self, agent: Agent, session_id: str, text: str) -> Entry:
        _check_session_id(session_id)
        text = check_text(text, self.max_message_chars)
        with self.db.session() as s:
            conv = self._locked(s, session_id)
            if conv.handoff != AGENT:
                raise PreconditionError("take the conversation over before replying")
            if conv.agent != agent.username:
                raise PreconditionError(f"{conv.agent} is in this conversation: only they reply")
            now = utcnow()
            seq = inbox_store.add_agent_message(s, conv.id, text, agent.name, now)
            conv.message_count += 1
            conv.last_activity_at = now
            conv.first_agent_reply_at = conv.first_agent_reply_at or now
            audit.record(s, agent.username, audit.REPLY, session_id=session_id, lead_id=conv.lead_id)
        self.events.message_added(session_id, seq)
        self.events.inbox_changed(session_id)
        return Entry(seq, AGENT, text, agent.name, now)

    def hand_back(self, agent: Agent, session_id: str) -> TranscriptView:
        """The bot answers again. Any agent may hand a conversation back (the audit says who)."""
        _check_session_id(session_id)
        with self.db.session() as s:
            conv = self._locked(s, session_id)
            changed = conv.handoff is not None
            if changed:
                conv.handoff, conv.agent = None, None
                conv.not_understood = 0  # the bot starts afresh: its earlier misses do not hand the visitor over again
                audit.record(s, agent.username, audit.HAND_BACK, session_id=session_id, lead_id=conv.lead_id)
            view = self._transcript(s, conv)
        if changed:
            self.events.handoff_changed(session_id, "")
            self.events.inbox_changed(session_id)
        return view

    # --- leads -------------------------------------------------------------------------------------------------

    def leads_of_day(self, day: str) -> list[LeadView]:
        """Leads created on `day` (YYYY-MM-DD in HANDOFF_TIMEZONE; empty: today), newest first."""
        start = self._day_start(self._day(day))
        end = self._day_start(self._day(day) + dt.timedelta(days=1))
        with self.db.session() as s:
            return [LeadView(lead, session_id, inbox_store.missing_details(lead))
                    for lead, session_id in inbox_store.leads_created_between(s, start, end)]

    def correct_lead(self, agent: Agent, lead_id: str, fields: Mapping[str, str]) -> LeadView:
        _check_lead_id(lead_id)
        if not fields:
            raise ValidationError("fields is empty: name at least one of " + ", ".join(CORRECTABLE))
        corrections: dict[str, SlotValue] = {}
        for name in sorted(fields):
            corrections.update(parse_correction(name, fields[name]))
        with self.db.session() as s:
            lead = self._locked_lead(s, lead_id)
            slots: dict[str, SlotValue] = {
                key: value for key, value in {**_lead_slots(lead), **corrections}.items() if value is not None
            }
            if not (slots.get("email") or slots.get("phone")):
                raise ValidationError("fields: a lead keeps an email or a phone; both cannot be cleared")
            values = lead_values(slots, self.eur_pln_rate, self.sales.served_cities())
            changed = {name for name, value in values.items() if getattr(lead, name) != value}
            for name in changed:
                setattr(lead, name, values[name])
            inbox_store.carry_corrections(s, lead.id, corrections)
            if changed:
                lead.updated_at = utcnow()
                if "email" in changed:
                    self._follow_email(s, lead)
                leads.queue_item_update(s, lead)
            audit.record(s, agent.username, audit.CORRECT_LEAD, lead_id=lead.id, detail=audit.field_names(fields))
            view = self._lead_view(s, lead)
        if changed:
            self.delivery.deliver(lead_id)
        self.events.lead_changed(lead_id)
        return view

    def set_status(self, agent: Agent, lead_id: str, status: str) -> LeadView:
        _check_lead_id(lead_id)
        if status not in STATUSES:
            raise ValidationError(f"status must be one of {', '.join(STATUSES)}")
        to_monday = bool(self.sales.monday_columns.get("status"))
        with self.db.session() as s:
            lead = self._locked_lead(s, lead_id)
            changed = lead.status != status
            if changed:
                lead.status = status
                lead.updated_at = utcnow()
                if to_monday:
                    leads.queue_item_update(s, lead)
            audit.record(s, agent.username, audit.SET_STATUS, lead_id=lead.id, detail=status)
            view = self._lead_view(s, lead)
        if changed and to_monday:
            self.delivery.deliver(lead_id)
        self.events.lead_changed(lead_id)
        return view

    # --- numbers -----------------------------------------------------------------------------------------------

    def stats(self) -> Stats:
        """Today and the last 7 days (today included), in HANDOFF_TIMEZONE."""
        today = self._day("")
        today_start = self._day_start(today)
        week_start = self._day_start(today - dt.timedelta(days=6))
        with self.db.session() as s:
            day_counts, week_counts = inbox_store.period_counts(s, week_start, today_start)
            answered = inbox_store.answered_handoffs(s, week_start)
        stats = Stats()
        for period, counts, since in ((stats.today, day_counts, today_start), (stats.week, week_counts, week_start)):
            period.conversations = counts.conversations
            period.leads_complete, period.leads_partial = counts.leads_complete, counts.leads_partial
            period.handoffs = counts.handoffs
            delays = [(replied - asked).total_seconds() for asked, replied in answered if asked >= since]
            period.median_first_reply_s = float(statistics.median(delays)) if delays else 0.0
            period.conversion = counts.converted / counts.engaged if counts.engaged else 0.0
        return stats

    # --- helpers -----------------------------------------------------------------------------------------------

    def _day(self, day: str) -> dt.date:
        if not day:
            return dt.datetime.now(self.zone).date()
        try:
            if not _DAY.match(day):
                raise ValueError(day)
            return dt.date.fromisoformat(day)
        except ValueError:
            raise ValidationError("day must be a date as YYYY-MM-DD (or empty: today)") from None

    def _day_start(self, day: dt.date) -> dt.datetime:
        """The day's first moment in HANDOFF_TIMEZONE, in UTC."""
        return dt.datetime.combine(day, dt.time(), self.zone).astimezone(dt.UTC)

    def _locked(self, s: Session, session_id: str) -> Conversation:
        conv = storage.conversation_by_session(s, session_id, lock=True)
        if conv is None:
            raise NotFoundError("no conversation with this conversation_id")
        return conv

    def _locked_lead(self, s: Session, lead_id: str) -> Lead:
        lead = storage.lead_for_update(s, lead_id)
        if lead is None:
            raise NotFoundError("no lead with this lead_id")
        return lead

    def _follow_email(self, s: Session, lead: Lead) -> None:
        """A corrected email: the consent ledger, kept by email, gets the person's statement under it, and the
        follow-ups (sent to the conversation's contact email) use it from now on."""
        if lead.email:
            leads.queue_email(s, lead, utcnow())
        for conv in storage.conversations_by_ids(s, [lead.conversation_id]):
            conv.contact_email = lead.email

    def _lead_view(self, s: Session, lead: Lead) -> LeadView:
        session_id = inbox_store.session_ids_of(s, [lead.conversation_id]).get(lead.conversation_id, "")
        return LeadView(lead, session_id, inbox_store.missing_details(lead))

    def _summaries(self, s: Session, conversations: list[Conversation], now: dt.datetime) -> list[Summary]:
        last = inbox_store.last_visitor_messages(s, [c.id for c in conversations])
        leads_by_id = inbox_store.leads_by_ids(s, [c.lead_id or "" for c in conversations])
        return [self._summary(c, last.get(c.id, ""), leads_by_id.get(c.lead_id or ""), now) for c in conversations]

    def _summary(self, conv: Conversation, last_message: str, lead: Lead | None, now: dt.datetime) -> Summary:
        name = (conv.slots or {}).get("name")
        visitor = name if isinstance(name, str) else (lead.name if lead is not None and lead.name else "")
        waiting = conv.handoff == WAITING and conv.handoff_at is not None
        return Summary(
            session_id=conv.session_id,
            handoff=conv.handoff or "",
            language=conv.language,
            visitor=visitor,
            last_message=_shorten(last_message),
            waiting_since=conv.handoff_at,
            waiting_seconds=max(0, int((now - conv.handoff_at).total_seconds())) if waiting and conv.handoff_at else 0,
            agent=conv.agent or "",
            reason=conv.handoff_reason or "",
            last_activity_at=conv.last_activity_at,
        )

    def _transcript(self, s: Session, conv: Conversation) -> TranscriptView:
        last = inbox_store.last_visitor_messages(s, [conv.id]).get(conv.id, "")
        lead = storage.lead_by_id(s, conv.lead_id) if conv.lead_id else None
        messages = [Entry(m.id, m.role, m.text, m.author or "", m.created_at) for m in storage.messages_of(s, conv.id)]
        return TranscriptView(
            self._summary(conv, last, lead, utcnow()), messages, self._lead_view(s, lead) if lead else None
        )


# --- gRPC ------------------------------------------------------------------------------------------------------

def summary_pb(summary: Summary) -> chat_pb2.InboxConversationSummary:
    return chat_pb2.InboxConversationSummary(
        conversation_id=summary.session_id, handoff=summary.handoff, language=summary.language,
        visitor=summary.visitor, last_message=summary.last_message, waiting_since=to_timestamp(summary.waiting_since),
        waiting_seconds=summary.waiting_seconds, agent=summary.agent, reason=summary.reason,
        last_activity_at=to_timestamp(summary.last_activity_at),
    )


def message_pb(entry: Entry) -> chat_pb2.ChatMessage:
    return chat_pb2.ChatMessage(
        role=entry.role, text=entry.text, created_at=to_timestamp(entry.created_at), author=entry.author,
        seq=entry.seq,
    )


def lead_pb(view: LeadView) -> chat_pb2.InboxLead:
    lead = view.lead
    return chat_pb2.InboxLead(
        lead_id=lead.id, conversation_id=view.session_id, created_at=to_timestamp(lead.created_at),
        name=lead.name or "", email=lead.email or "", phone=lead.phone or "", city=lead.city or "",
        area_m2=lead.area_m2 or 0, budget_amount=lead.budget_amount or 0, budget_currency=lead.budget_currency or "",
        start=lead.start or "", score=lead.score, status=lead.status, missing=view.missing, complete=not view.missing,
        request_kind=lead.request_kind or "", request_day=lead.request_day or "", request_time=lead.request_time or "",
    )


def conversation_pb(view: TranscriptView) -> chat_pb2.InboxConversation:
    return chat_pb2.InboxConversation(
        summary=summary_pb(view.summary), messages=[message_pb(m) for m in view.messages],
        lead=lead_pb(view.lead) if view.lead else None,
    )


def _period_pb(period: Period) -> chat_pb2.PeriodStats:
    return chat_pb2.PeriodStats(
        conversations=period.conversations, leads_complete=period.leads_complete, leads_partial=period.leads_partial,
        handoffs=period.handoffs, median_first_reply_seconds=period.median_first_reply_s, conversion=period.conversion,
    )


class InboxServicer(chat_pb2_grpc.InboxServicer):
    """Proto in, Inbox call, proto out."""

    def __init__(self, inbox: Inbox, streams: Streams):
        self.inbox = inbox
        self.streams = streams

    def ListConversations(
        self, request: chat_pb2.ListConversationsRequest, context: grpc.ServicerContext
    ) -> chat_pb2.ListConversationsResponse:
        waiting, live = self.inbox.conversations(request.view)
        return chat_pb2.ListConversationsResponse(
            waiting=[summary_pb(s) for s in waiting], live=[summary_pb(s) for s in live]
        )

    def GetTranscript(
        self, request: chat_pb2.InboxConversationRequest, context: grpc.ServicerContext
    ) -> chat_pb2.InboxConversation:
        return conversation_pb(self.inbox.transcript(request.conversation_id))

    def TakeOver(
        self, request: chat_pb2.InboxConversationRequest, context: grpc.ServicerContext
    ) -> chat_pb2.InboxConversation:
        return conversation_pb(self.inbox.take_over(verified_agent(context), request.conversation_id))

    def Reply(self, request: chat_pb2.AgentReplyRequest, context: grpc.ServicerContext) -> chat_pb2.ChatMessage:
        return message_pb(self.inbox.reply(verified_agent(context), request.conversation_id, request.text))

    def HandBack(
        self, request: chat_pb2.InboxConversationRequest, context: grpc.ServicerContext
    ) -> chat_pb2.InboxConversation:
        return conversation_pb(self.inbox.hand_back(verified_agent(context), request.conversation_id))

    def ListLeads(
        self, request: chat_pb2.ListLeadsRequest, context: grpc.ServicerContext
    ) -> chat_pb2.ListLeadsResponse:
        return chat_pb2.ListLeadsResponse(leads=[lead_pb(view) for view in self.inbox.leads_of_day(request.day)])

    def CorrectLead(self, request: chat_pb2.CorrectLeadRequest, context: grpc.ServicerContext) -> chat_pb2.InboxLead:
        return lead_pb(self.inbox.correct_lead(verified_agent(context), request.lead_id, dict(request.fields)))

    def SetLeadStatus(
        self, request: chat_pb2.SetLeadStatusRequest, context: grpc.ServicerContext
    ) -> chat_pb2.InboxLead:
        return lead_pb(self.inbox.set_status(verified_agent(context), request.lead_id, request.status))

    def GetStats(self, request: chat_pb2.GetStatsRequest, context: grpc.ServicerContext) -> chat_pb2.InboxStats:
        stats = self.inbox.stats()
        return chat_pb2.InboxStats(today=_period_pb(stats.today), week=_period_pb(stats.week))

    def WatchInbox(
        self, request: chat_pb2.WatchInboxRequest, context: grpc.ServicerContext
    ) -> Iterator[chat_pb2.InboxEvent]:
        return self.streams.watch_inbox(verified_agent(context).username, context, self._summary)

    def _summary(self, session_id: str) -> chat_pb2.InboxConversationSummary | None:
        found = self.inbox.summary(session_id)
        return None if found is None else summary_pb(found)
