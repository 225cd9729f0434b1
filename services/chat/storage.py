"""All of the chat service's SQL: the models (conversations, messages, leads, follow-up claims, erasures) and
every query the domain modules run, each a named function taking the session of the caller's transaction.

Times are stored as naive UTC (SQLite keeps no time zone); UTCDateTime converts at this edge, so the domain
only ever sees and passes aware datetimes from runtime.clock.utcnow().
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    CursorResult,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Result,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, aliased, mapped_column

from services.runtime.clock import naive_utc, utcnow

metadata = MetaData()


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A `timestamp` column holding naive UTC; written from aware (or naive UTC) datetimes, read as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else naive_utc(value)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    metadata = metadata


class Conversation(Base):
    __tablename__ = "conversation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(36), unique=True, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    last_activity_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    language: Mapped[str] = mapped_column(String(2), nullable=False, default="pl")
    # collecting -> consent_processing -> consent_marketing -> done (back to collecting if processing is declined)
    stage: Mapped[str] = mapped_column(String(32), nullable=False, default="collecting")
    awaiting_slot: Mapped[str | None] = mapped_column(String(16))
    slots: Mapped[dict[str, str | int | None]] = mapped_column(JSON, nullable=False, default=dict)  # slots.SlotValue
    lead_id: Mapped[str | None] = mapped_column(String(32))
    contact_email: Mapped[str | None] = mapped_column(String(254), index=True)
    marketing_consent: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    converted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    followups_sent: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    followups_stopped: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    last_followup_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    message_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # SHA-256 (hex) of the secret that reads the transcript; NULL for conversations from before it: unreadable.
    session_secret_hash: Mapped[str | None] = mapped_column(String(64))
    # The optional details already asked for (each is asked once) and those the visitor declined to give.
    asked: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    # A callback, consultation or site-visit request made before the visitor's contact was known (slots.Request).
    request: Mapped[dict[str, str] | None] = mapped_column(JSON)
    # Messages in a row the bot did not understand; the second one hands the visitor to a person.
    not_understood: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # When the visitor asked for a person (or the bot failed them twice); NULL when they never did.
    handoff_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # NULL: the bot answers; "waiting", "agent" or "callback" (SendMessageResponse.handoff), and why.
    handoff: Mapped[str | None] = mapped_column(String(16))
    handoff_reason: Mapped[str | None] = mapped_column(String(16))
    agent: Mapped[str | None] = mapped_column(String(64))  # the agent who took it over
    taken_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    first_agent_reply_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_conversation_followup_due", "marketing_consent", "followups_stopped", "followups_sent"),
        Index("ix_conversation_retention", "lead_id", "last_activity_at"),
        Index("ix_conversation_handoff", "handoff", "handoff_at"),
        Index("ix_conversation_created_at", "created_at"),  # the inbox's numbers: a day's, a week's conversations
        Index("ix_conversation_handoff_at", "handoff_at"),  # ... and handoffs
    )


class Message(Base):
    __tablename__ = "message"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversation.id", ondelete="CASCADE"), nullable=False, index=True
    )
    role: Mapped[str] = mapped_column(String(8), nullable=False)  # user, bot or agent
    text: Mapped[str] = mapped_column(Text, nullable=False)
    author: Mapped[str | None] = mapped_column(String(64))  # the agent's display name
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Lead(Base):
    __tablename__ = "lead"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id"), unique=True, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, index=True)
    language: Mapped[str] = mapped_column(String(2), nullable=False)
    name: Mapped[str | None] = mapped_column(String(120))
    email: Mapped[str | None] = mapped_column(String(254), index=True)
    phone: Mapped[str | None] = mapped_column(String(16), index=True)  # a returning visitor is found by it
    city: Mapped[str | None] = mapped_column(String(80))
    area_m2: Mapped[int | None] = mapped_column(Integer)
    budget_pln: Mapped[int | None] = mapped_column(Integer)  # the budget in PLN (converted with EUR_PLN_RATE)
    budget_amount: Mapped[int | None] = mapped_column(Integer)  # the budget as the visitor gave it ...
    budget_currency: Mapped[str | None] = mapped_column(String(3))  # ... in this currency (PLN, EUR)
    start: Mapped[str | None] = mapped_column(String(80))  # YYYY-MM-DD, YYYY-MM or asap (Europe/Warsaw)
    start_months: Mapped[int | None] = mapped_column(Integer)
    score: Mapped[int] = mapped_column(Integer, nullable=False)
    # The latest callback / consultation / site-visit request: kind, day (YYYY-MM-DD), time, channel.
    request_kind: Mapped[str | None] = mapped_column(String(16))
    request_day: Mapped[str | None] = mapped_column(String(10))
    request_time: Mapped[str | None] = mapped_column(String(16))
    request_channel: Mapped[str | None] = mapped_column(String(8))
    requested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    processing_consent: Mapped[bool] = mapped_column(Boolean, nullable=False)
    marketing_consent: Mapped[bool] = mapped_column(Boolean, nullable=False)
    consent_text_version: Mapped[str] = mapped_column(String(64), nullable=False)
    client_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    # Set by ChatAdmin.MarkCustomer: the lead became a customer and is kept past LEAD_RETENTION_DAYS.
    customer_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="new")  # new, contacted, won, lost


class LeadOutbox(Base):
    """What the consent service and the notifier must be told about a lead, written in the transaction that changed
    the lead and sent after it (in id order, each once: `key` is also the idempotency key the other service sees)."""

    __tablename__ = "lead_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lead_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(24), nullable=False)  # leads.OUTBOX_KINDS
    key: Mapped[str] = mapped_column(String(160), unique=True, nullable=False)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_lead_outbox_pending", "sent_at", "id"),)


class AgentAction(Base):
    """The agent audit: who did what, when, to which conversation or lead; never the values an agent set. Erased
    with the person's conversations and leads, purged with them by retention."""

    __tablename__ = "agent_action"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, index=True)
    agent: Mapped[str] = mapped_column(String(64), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    session_id: Mapped[str | None] = mapped_column(String(36), index=True)
    lead_id: Mapped[str | None] = mapped_column(String(32), index=True)
    detail: Mapped[str] = mapped_column(String(200), nullable=False, default="")


class StaffRevokedToken(Base):
    """A staff token signed out before it expired (Logout); kept until then."""

    __tablename__ = "staff_revoked_token"

    token_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class AgentPresence(Base):
    """When each agent's inbox stream was last alive: an agent seen within two heartbeats is present."""

    __tablename__ = "agent_presence"

    agent: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class FollowupEvent(Base):
    """One row per follow-up ever sent: the UNIQUE pair is what makes a second send impossible."""

    __tablename__ = "followup_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversation.id", ondelete="CASCADE"), nullable=False, index=True
    )
    followup_number: Mapped[int] = mapped_column(Integer, nullable=False)
    sent_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, index=True)

    __table_args__ = (UniqueConstraint("conversation_id", "followup_number", name="uq_followup_once"),)


class ErasureRequest(Base):
    """Erasures already carried out, by the consent ledger's request id, so a retry erases once."""

    __tablename__ = "erasure_request"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    conversations: Mapped[int] = mapped_column(Integer, nullable=False)
    messages_erased: Mapped[int] = mapped_column(Integer, nullable=False)
    leads_anonymised: Mapped[int] = mapped_column(Integer, nullable=False)


# --- conversations and their messages ---------------------------------------------------------------------------


def conversation_by_session(session: Session, session_id: str, lock: bool = False) -> Conversation | None:
    """The conversation of a session; lock=True holds its row until commit (ordering on PostgreSQL)."""
    query = select(Conversation).where(Conversation.session_id == session_id)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def new_conversation(session_id: str, language: str, secret_hash: str, at: dt.datetime) -> Conversation:
    """A conversation not stored yet, with the values the columns' defaults would give it: its first turn reads and
    changes them, and add_conversation() then inserts it once, with no update after the insert."""
    return Conversation(
        session_id=session_id, language=language, session_secret_hash=secret_hash, created_at=at,
        last_activity_at=at, stage="collecting", slots={}, asked=[], marketing_consent=False, converted=False,
        followups_sent=0, followups_stopped=False, message_count=0, not_understood=0,
    )


def add_conversation(session: Session, conversation: Conversation) -> None:
    """Insert a new conversation now, in one Core statement that returns its id for its messages (the ORM's unit of
    work cost more than the insert itself). The object stays outside the session: nothing changes it afterwards.
    Unset attributes are left out, so a column's own default still applies to them."""
    table = metadata.tables["conversation"]
    values = {c.key: value for c in table.columns
              if c.key != "id" and (value := getattr(conversation, c.key)) is not None}
    conversation.id = session.execute(insert(table).values(values).returning(table.c.id)).scalar_one()


def idle_unhanded_conversations(session: Session, idle_since: dt.datetime, limit: int) -> list[Conversation]:
    """Conversations that consented to processing and were still being asked for details (or the marketing question)
    with no activity since `idle_since` and no lead yet, locked until commit; rows another replica holds are skipped."""
    return list(session.scalars(
        select(Conversation)
        .where(Conversation.stage.in_(("details", "consent_marketing")))
        .where(Conversation.lead_id.is_(None))
        .where(Conversation.last_activity_at < idle_since)
        .order_by(Conversation.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ))


def add_turn(session: Session, conversation_id: int, visitor_text: str, bot_text: str, at: dt.datetime) -> None:
    """The visitor's message and the bot's reply, in one statement (no ORM objects: nothing reads them back)."""
    session.execute(insert(metadata.tables["message"]), [  # Core: the ORM's bulk path costs more than the insert
        {"conversation_id": conversation_id, "role": "user", "text": visitor_text, "created_at": at},
        {"conversation_id": conversation_id, "role": "bot", "text": bot_text, "created_at": at},
    ])


def messages_of(session: Session, conversation_id: int) -> list[Message]:
    return list(session.scalars(select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)))


def redact_visitor_messages(session: Session, conversation_id: int, marker: str) -> int:
    """Replace the text of every visitor ('user') message of the conversation stored so far with `marker`; returns
    how many."""
    result = session.execute(
        update(Message)
        .where(Message.conversation_id == conversation_id)
        .where(Message.role == "user")
        .values(text=marker)
    )
    return result.rowcount if isinstance(result, CursorResult) else 0


def add_visitor_message(session: Session, conversation_id: int, text: str, at: dt.datetime) -> int:
    """A visitor's message without a bot reply (a person is in charge of the conversation); returns its seq."""
    message = Message(conversation_id=conversation_id, role="user", text=text, created_at=at)
    session.add(message)
    session.flush()
    return message.id


def last_seq(session: Session, conversation_id: int) -> int:
    query = select(func.max(Message.id)).where(Message.conversation_id == conversation_id)
    return session.scalar(query) or 0


@dataclass(frozen=True)
class Watched:
    """What a visitor's stream reads each time: the handoff state and the messages past its cursor."""

    handoff: str
    messages: list[Message]


def watched_conversation(
    session: Session, conversation_id: int, after_seq: int, roles: Sequence[str]
) -> Watched | None:
    """The conversation's handoff state and its messages in `roles` with seq > after_seq, oldest first; None once
    the conversation is gone (erased, purged)."""
    handoff = session.execute(select(Conversation.handoff).where(Conversation.id == conversation_id)).first()
    if handoff is None:
        return None
    messages = session.scalars(
        select(Message)
        .where(Message.conversation_id == conversation_id, Message.id > after_seq, Message.role.in_(list(roles)))
        .order_by(Message.id)
    )
    return Watched(handoff[0] or "", list(messages))


def inbox_changes_since(session: Session, since: dt.datetime) -> list[str]:
    """Session ids of conversations with a person involved (now or until recently) that changed since `since`: what
    an inbox stream re-reads each heartbeat in case a published event was lost."""
    changed = or_(
        Conversation.last_activity_at > since, Conversation.handoff_at > since, Conversation.taken_at > since
    )
    query = select(Conversation.session_id).where(Conversation.handoff_at.is_not(None), changed)
    return list(session.scalars(query.order_by(Conversation.id).limit(500)))


def leads_changed_since(session: Session, since: dt.datetime) -> list[str]:
    query = select(Lead.id).where(or_(Lead.created_at > since, Lead.updated_at > since))
    return list(session.scalars(query.order_by(Lead.created_at).limit(500)))


# --- agents present in the inbox ----------------------------------------------------------------------------------


def touch_presence(session: Session, agent: str, at: dt.datetime) -> None:
    """agent_presence.seen_at = at, inserted or updated in one statement (two replicas may hold the same agent's
    streams)."""
    table = metadata.tables["agent_presence"]
    dialect = session.get_bind().dialect.name
    upsert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table).values(agent=agent, seen_at=at)
    session.execute(upsert.on_conflict_do_update(index_elements=["agent"], set_={"seen_at": upsert.excluded.seen_at}))


def agent_seen_since(session: Session, since: dt.datetime) -> bool:
    return session.scalar(select(AgentPresence.agent).where(AgentPresence.seen_at >= since).limit(1)) is not None


# --- leads --------------------------------------------------------------------------------------------------------


def lead_by_id(session: Session, lead_id: str) -> Lead | None:
    return session.get(Lead, lead_id)


def add_lead(session: Session, lead: Lead) -> None:
    session.add(lead)


def lead_for_handover(session: Session, lead_id: str) -> tuple[Lead, str] | None:
    """The lead (detached: read after the transaction) and its first conversation's session id; None once the lead
    is gone (erased or purged), when there is nothing left to hand over."""
    row = session.execute(
        select(Lead, Conversation.session_id)
        .join(Conversation, Conversation.id == Lead.conversation_id)
        .where(Lead.id == lead_id)
    ).first()
    if row is None:
        return None
    lead, session_id = row
    session.expunge(lead)
    return lead, session_id


def lead_for_update(session: Session, lead_id: str) -> Lead | None:
    """The lead, locked until commit (a correction and an agent's edit never interleave)."""
    return session.get(Lead, lead_id, with_for_update=True)


def lead_by_contact(session: Session, email: str | None, phone: str | None) -> Lead | None:
    """The earliest lead with this email or this phone: a returning visitor's (one indexed query)."""
    matches = [column == value for column, value in ((Lead.email, email), (Lead.phone, phone)) if value]
    if not matches:
        return None
    return session.scalars(select(Lead).where(or_(*matches)).order_by(Lead.created_at).limit(1)).first()


def set_customer(session: Session, lead_id: str, at: dt.datetime | None) -> Lead | None:
    """Mark the lead a customer since `at` (kept if already marked), or clear the mark (None); None when there is no
    such lead."""
    lead = session.get(Lead, lead_id, with_for_update=True)
    if lead is not None and (at is None or lead.customer_at is None):
        lead.customer_at = at
    return lead


@dataclass(frozen=True)
class Queued:
    """One message queued about a lead, as the sender reads it."""

    id: int
    kind: str
    key: str
    details: dict[str, Any]


def add_outbox(session: Session, lead_id: str, messages: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
    """Queue (kind, key, details) messages about the lead in one statement; each key is unique by construction (the
    UNIQUE constraint says so)."""
    now = utcnow()
    rows = [{"lead_id": lead_id, "kind": kind, "key": key, "details": details, "created_at": now}
            for kind, key, details in messages]
    session.execute(insert(metadata.tables["lead_outbox"]), rows)


def pending_outbox(session: Session, lead_id: str) -> list[Queued]:
    """The lead's unsent messages in the order they were queued."""
    query = (
        select(LeadOutbox.id, LeadOutbox.kind, LeadOutbox.key, LeadOutbox.details)
        .where(LeadOutbox.lead_id == lead_id, LeadOutbox.sent_at.is_(None))
        .order_by(LeadOutbox.id)
    )
    return [Queued(*row) for row in session.execute(query)]


def mark_outbox_sent(session: Session, outbox_ids: Sequence[int], at: dt.datetime) -> None:
    session.execute(update(LeadOutbox).where(LeadOutbox.id.in_(outbox_ids)).values(sent_at=at))


def pending_lead_ids(session: Session, limit: int) -> list[str]:
    """Leads with unsent messages, the longest waiting first."""
    query = (
        select(LeadOutbox.lead_id)
        .where(LeadOutbox.sent_at.is_(None))
        .group_by(LeadOutbox.lead_id)
        .order_by(func.min(LeadOutbox.id))
        .limit(limit)
    )
    return list(session.scalars(query))


def count_pending_leads(session: Session) -> int:
    query = select(func.count(func.distinct(LeadOutbox.lead_id))).where(LeadOutbox.sent_at.is_(None))
    return session.scalar(query) or 0


def outbox_of(session: Session, lead_id: str) -> list[LeadOutbox]:
    """Everything ever queued about the lead, oldest first."""
    return list(session.scalars(select(LeadOutbox).where(LeadOutbox.lead_id == lead_id).order_by(LeadOutbox.id)))


def lead_handed_over(session: Session, lead_id: str) -> bool:
    """Whether everything queued about the lead was acknowledged."""
    query = select(LeadOutbox.id).where(LeadOutbox.lead_id == lead_id, LeadOutbox.sent_at.is_(None)).limit(1)
    return session.scalar(query) is None


# --- follow-ups ---------------------------------------------------------------------------------------------------


class AlreadyClaimed(Exception):
    """The follow-up's claim row exists: another run sent it. The transaction cannot go on and rolls back."""


def conversations_due_for_followup(
    session: Session, number: int, idle_since: dt.datetime, previous_before: dt.datetime | None, limit: int
) -> list[int]:
    """Ids of conversations due for follow-up `number`, oldest first: a captured email and marketing consent, not
    converted or stopped, number-1 follow-ups sent, no activity since `idle_since` and (for number > 1) the
    previous follow-up sent before `previous_before`."""
    query = (
        select(Conversation.id)
        .where(Conversation.marketing_consent.is_(True))
        .where(Conversation.followups_stopped.is_(False))
        .where(Conversation.converted.is_(False))
        .where(Conversation.contact_email.is_not(None))
        .where(Conversation.followups_sent == number - 1)
        .where(Conversation.last_activity_at <= idle_since)
        .order_by(Conversation.id)
        .limit(limit)
    )
    if previous_before is not None:
        query = query.where(Conversation.last_followup_at <= previous_before)
    return list(session.scalars(query))


def lock_conversation_unless_taken(session: Session, conversation_id: int) -> Conversation | None:
    """The conversation, locked until commit; None when another worker holds its lock (SKIP LOCKED on PostgreSQL)
    or it is gone."""
    return session.scalars(
        select(Conversation).where(Conversation.id == conversation_id).with_for_update(skip_locked=True)
    ).first()


def claim_followup(session: Session, conversation_id: int, number: int, at: dt.datetime) -> None:
    """Insert the follow-up's claim row now (flushed); AlreadyClaimed when it exists."""
    session.add(FollowupEvent(conversation_id=conversation_id, followup_number=number, sent_at=at))
    try:
        session.flush()
    except IntegrityError:
        raise AlreadyClaimed(f"follow-up {number} of conversation {conversation_id}") from None


def release_followup_claim(session: Session, conversation_id: int, number: int) -> None:
    session.execute(
        delete(FollowupEvent)
        .where(FollowupEvent.conversation_id == conversation_id)
        .where(FollowupEvent.followup_number == number)
    )


# --- erasure and retention ----------------------------------------------------------------------------------------


def erasure_by_request(session: Session, request_id: str) -> ErasureRequest | None:
    return session.get(ErasureRequest, request_id)


def record_erasure(
    session: Session, request_id: str, conversations: int, messages_erased: int, leads_anonymised: int
) -> None:
    session.add(
        ErasureRequest(
            request_id=request_id,
            conversations=conversations,
            messages_erased=messages_erased,
            leads_anonymised=leads_anonymised,
        )
    )


def leads_by_email(session: Session, email: str) -> list[Lead]:
    return list(session.scalars(select(Lead).where(Lead.email == email)))


def leads_by_phone(session: Session, phone: str) -> list[Lead]:
    return list(session.scalars(select(Lead).where(Lead.phone == phone)))


def _escaped_like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _captured(value: str) -> ColumnElement[bool]:
    """The conversation's captured slots hold `value` as a JSON string."""
    return cast(Conversation.slots, Text).like(_escaped_like(json.dumps(value)), escape="\\")


def conversation_ids_with_email(session: Session, email: str) -> set[int]:
    """Conversations that captured `email` (already normalised) or whose messages contain it, in any case."""
    mentioned = select(Message.conversation_id).where(
        func.lower(Message.text).like(_escaped_like(email), escape="\\")
    )
    query = select(Conversation.id).where(
        or_(Conversation.contact_email == email, _captured(email), Conversation.id.in_(mentioned))
    )
    return set(session.scalars(query))


def conversation_ids_capturing(session: Session, value: str) -> set[int]:
    """Conversations whose captured slots hold `value` (a normalised phone or email)."""
    return set(session.scalars(select(Conversation.id).where(_captured(value))))


def messages_with_digits(session: Session, digits: str) -> list[tuple[int, str]]:
    """(conversation id, text) of the messages holding these digits in this order with anything between them: every
    way a number can be typed, and more, for the caller to confirm."""
    pattern = "%" + "%".join(digits) + "%"
    return [(cid, text) for cid, text in session.execute(
        select(Message.conversation_id, Message.text).where(Message.text.like(pattern))
    )]


def conversation_ids_mentioning(session: Session, words: str) -> set[int]:
    """Conversations with a message containing `words` (already lower-cased), in any case."""
    query = select(Message.conversation_id).where(
        func.lower(Message.text).like(_escaped_like(words), escape="\\")
    ).distinct()
    return set(session.scalars(query))


def leads_of_conversations(session: Session, conversation_ids: Iterable[int]) -> list[Lead]:
    return list(session.scalars(select(Lead).where(Lead.conversation_id.in_(list(conversation_ids)))))


def followups_of(session: Session, conversation_id: int) -> list[FollowupEvent]:
    return list(
        session.scalars(
            select(FollowupEvent).where(FollowupEvent.conversation_id == conversation_id).order_by(FollowupEvent.id)
        )
    )


def conversations_by_ids(session: Session, ids: Iterable[int]) -> list[Conversation]:
    return list(session.scalars(select(Conversation).where(Conversation.id.in_(list(ids)))))


def lock_conversations(session: Session, ids: Iterable[int]) -> list[int]:
    """Lock these conversations until commit, in id order (a turn in progress finishes first, a later one finds
    them gone); returns the ids still there."""
    query = select(Conversation.id).where(Conversation.id.in_(list(ids))).order_by(Conversation.id)
    return list(session.scalars(query.with_for_update()))


def visitor_texts(session: Session, conversation_ids: Iterable[int]) -> list[str]:
    """What the visitors typed in these conversations (distinct texts)."""
    query = select(Message.text).where(Message.conversation_id.in_(list(conversation_ids)), Message.role == "user")
    return list(session.scalars(query.distinct()))


def idle_conversations_without_lead(session: Session, idle_since: dt.datetime, limit: int) -> list[int]:
    """Ids of up to `limit` conversations without a lead and without activity since `idle_since`, oldest first,
    locked until commit; rows another purge holds are skipped (SKIP LOCKED on PostgreSQL)."""
    return list(
        session.scalars(
            select(Conversation.id)
            .where(Conversation.lead_id.is_(None))
            .where(Conversation.last_activity_at < idle_since)
            .order_by(Conversation.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


def expired_lead_conversations(session: Session, idle_since: dt.datetime, limit: int) -> list[int]:
    """Ids of up to `limit` conversations linked to a lead that is not a customer (or is gone already) when none of
    that lead's conversations has had activity since `idle_since`, oldest first, locked until commit; rows another
    purge or a MarkCustomer holds are skipped (SKIP LOCKED on PostgreSQL)."""
    other = aliased(Conversation)
    recent = select(other.id).where(other.lead_id == Conversation.lead_id, other.last_activity_at >= idle_since)
    return list(
        session.scalars(
            select(Conversation.id)
            .outerjoin(Lead, Lead.id == Conversation.lead_id)
            .where(Conversation.lead_id.is_not(None))
            .where(or_(Lead.id.is_(None), Lead.customer_at.is_(None)))
            .where(Conversation.last_activity_at < idle_since)
            .where(~recent.exists())
            .order_by(Conversation.id)
            .limit(limit)
            .with_for_update(of=Conversation, skip_locked=True)
        )
    )


@dataclass
class Deleted:
    conversations: int
    messages: int
    leads: int


def delete_conversations(session: Session, ids: Sequence[int]) -> Deleted:
    """Delete these conversations with their messages, follow-up claims and leads (with what was queued about them
    and the agent audit's rows about either); returns how many of each."""
    linked = select(Conversation.lead_id).where(Conversation.id.in_(ids), Conversation.lead_id.is_not(None))
    lead_ids = set(session.scalars(select(Lead.id).where(or_(Lead.conversation_id.in_(ids), Lead.id.in_(linked)))))
    sessions = select(Conversation.session_id).where(Conversation.id.in_(ids))
    audited = or_(AgentAction.session_id.in_(sessions), AgentAction.lead_id.in_(lead_ids))
    session.execute(delete(AgentAction).where(audited))
    messages = session.execute(delete(Message).where(Message.conversation_id.in_(ids)))
    session.execute(delete(FollowupEvent).where(FollowupEvent.conversation_id.in_(ids)))
    session.execute(delete(LeadOutbox).where(LeadOutbox.lead_id.in_(lead_ids)))
    # A returning visitor's later conversation holds the lead of the first: it no longer points at it.
    session.execute(update(Conversation).where(Conversation.lead_id.in_(lead_ids)).values(lead_id=None))
    leads = session.execute(delete(Lead).where(Lead.id.in_(lead_ids)))
    conversations = session.execute(delete(Conversation).where(Conversation.id.in_(ids)))
    return Deleted(_rowcount(conversations), _rowcount(messages), _rowcount(leads))


def _rowcount(result: Result[Any]) -> int:
    return result.rowcount if isinstance(result, CursorResult) else 0
