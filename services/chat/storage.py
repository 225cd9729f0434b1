"""SQLAlchemy models and queries of the chat service: conversations, messages, leads, follow-up claims, erasures.

Times are naive UTC throughout (SQLite keeps no time zone), produced by utcnow().
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

metadata = MetaData()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = metadata


class Conversation(Base):
    __tablename__ = "conversation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(36), unique=True, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    last_activity_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    language: Mapped[str] = mapped_column(String(2), nullable=False, default="pl")
    # collecting -> consent_processing -> consent_marketing -> done (back to collecting if processing is declined)
    stage: Mapped[str] = mapped_column(String(32), nullable=False, default="collecting")
    awaiting_slot: Mapped[str | None] = mapped_column(String(16))
    slots: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    lead_id: Mapped[str | None] = mapped_column(String(32))
    contact_email: Mapped[str | None] = mapped_column(String(254), index=True)
    marketing_consent: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    converted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    followups_sent: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    followups_stopped: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    last_followup_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    message_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    __table_args__ = (
        Index("ix_conversation_followup_due", "marketing_consent", "followups_stopped", "followups_sent"),
        Index("ix_conversation_retention", "lead_id", "last_activity_at"),
    )


class Message(Base):
    __tablename__ = "message"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversation.id", ondelete="CASCADE"), nullable=False, index=True
    )
    role: Mapped[str] = mapped_column(String(8), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)


class Lead(Base):
    __tablename__ = "lead"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id"), unique=True, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    language: Mapped[str] = mapped_column(String(2), nullable=False)
    name: Mapped[str | None] = mapped_column(String(120))
    email: Mapped[str | None] = mapped_column(String(254), index=True)
    phone: Mapped[str | None] = mapped_column(String(16))
    city: Mapped[str | None] = mapped_column(String(80))
    area_m2: Mapped[int | None] = mapped_column(Integer)
    budget_pln: Mapped[int | None] = mapped_column(Integer)
    start: Mapped[str | None] = mapped_column(String(80))
    start_months: Mapped[int | None] = mapped_column(Integer)
    score: Mapped[int] = mapped_column(Integer, nullable=False)
    processing_consent: Mapped[bool] = mapped_column(Boolean, nullable=False)
    marketing_consent: Mapped[bool] = mapped_column(Boolean, nullable=False)
    consent_text_version: Mapped[str] = mapped_column(String(64), nullable=False)
    client_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    # Hand-over state: NULL until the consent service / the notifier acknowledged; retried until then.
    consent_recorded_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    notified_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    anonymised_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class FollowupEvent(Base):
    """One row per follow-up ever sent: the UNIQUE pair is what makes a second send impossible."""

    __tablename__ = "followup_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversation.id", ondelete="CASCADE"), nullable=False, index=True
    )
    followup_number: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="sent")
    sent_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow, index=True)

    __table_args__ = (UniqueConstraint("conversation_id", "followup_number", name="uq_followup_once"),)


class ErasureRequest(Base):
    """Erasures already carried out, by the consent ledger's request id, so a retry erases once."""

    __tablename__ = "erasure_request"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    conversations: Mapped[int] = mapped_column(Integer, nullable=False)
    messages_erased: Mapped[int] = mapped_column(Integer, nullable=False)
    leads_anonymised: Mapped[int] = mapped_column(Integer, nullable=False)


def conversation_by_session(session: Session, session_id: str, lock: bool = False) -> Conversation | None:
    """The conversation of a session; lock=True holds its row until commit (ordering on PostgreSQL)."""
    query = select(Conversation).where(Conversation.session_id == session_id)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def messages_of(session: Session, conversation_id: int) -> list[Message]:
    return list(session.scalars(select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)))
