"""The reference monolith of bench_versus: what the platform replaced (Flask, Flask-Limiter on Redis, SQLAlchemy on
PostgreSQL, gunicorn), doing a request's unit of work as the platform does: one limiter decision (the same `limits`
moving window), chat's own knowledge base and slot extraction, one transaction committed per request. The lead
hand-over and emails go to an outbox row for a worker (not benchmarked). Bench-only: no service imports it."""
import datetime as dt
import hashlib
import os
import secrets
import uuid

from flask import Flask, jsonify, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import JSON, DateTime, ForeignKey, MetaData, String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from services.chat.knowledge import KnowledgeBase
from services.chat.slots import extract
from services.consent.validation import normalise_email

env = os.environ.get
engine = create_engine(env("MONOLITH_DATABASE_URL", "sqlite://"), pool_size=2)
app = Flask(__name__)
limiter = Limiter(get_remote_address, app=app, strategy="moving-window", storage_uri=env("MONOLITH_REDIS_URL",
                  "memory://"), storage_options={"key_prefix": env("MONOLITH_KEY_PREFIX", "monolith")})
signer = URLSafeTimedSerializer(secrets.token_bytes(32))
KB = KnowledgeBase.load()
KB.warm_up()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(schema=env("MONOLITH_SCHEMA"))
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=now, index=True)


class Conversation(Base):
    __tablename__ = "conversations"
    session_id: Mapped[str] = mapped_column(String(36), unique=True)
    secret_hash: Mapped[str]
    language: Mapped[str]
    slots: Mapped[dict] = mapped_column(JSON)
    message_count: Mapped[int] = mapped_column(default=0)
    last_activity_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=now)


class Message(Base):
    __tablename__ = "messages"
    conversation_id: Mapped[int] = mapped_column(ForeignKey(Conversation.id), index=True)
    role: Mapped[str]
    text: Mapped[str]


class Lead(Base):
    __tablename__ = "leads"
    conversation_id: Mapped[int] = mapped_column(ForeignKey(Conversation.id), unique=True)
    details: Mapped[dict] = mapped_column(JSON)
    processing_consent: Mapped[bool]
    marketing_consent: Mapped[bool]


class Outbox(Base):
    __tablename__ = "outbox"
    kind: Mapped[str]
    address_hash: Mapped[str | None] = mapped_column(index=True)
    payload: Mapped[dict] = mapped_column(JSON)


@app.post("/api/chatbot/chat")
@limiter.limit(env("CHAT_RATE_LIMIT", "30 per minute"))
def chat():
    body, secret = request.get_json(force=True), ""
    text, consents = str(body.get("message", "")).strip()[:2000], (body.get("processing_consent"),
                                                                    body.get("marketing_consent"))
    with Session(engine) as s, s.begin():
        if body.get("session_id"):
            conv = s.scalars(select(Conversation).filter_by(session_id=body["session_id"]).with_for_update()).first()
            if conv is None:
                return jsonify(code=3, message="session_id is unknown", details=[]), 400
            conv.language = KB.language(text, conv.language) if text else conv.language
        else:
            secret = secrets.token_urlsafe(32)
            conv = Conversation(session_id=str(uuid.uuid4()), secret_hash=hashlib.sha256(secret.encode()).hexdigest(),
                                language=KB.language(text), slots={})
            s.add(conv)
            s.flush()
        if consents != (None, None):  # the consent answer completes the lead: stored, handed over by a worker
            reply, intent = "Dziękujemy, konsultant wkrótce się odezwie.", "lead_stored"
            s.add(Lead(conversation_id=conv.id, details=conv.slots, processing_consent=bool(consents[0]),
                       marketing_consent=bool(consents[1])))
            s.add(Outbox(kind="lead", payload={"conversation_id": conv.id, "consents": consents}))
        else:
            match = KB.match(text, conv.language)
            found = extract(text, today=dt.date.today()).values
            conv.slots = {**conv.slots, **{k: str(v) for k, v in found.items()}}
            reply, intent = match.answer, match.intent
        s.add_all([Message(conversation_id=conv.id, role="user", text=text),
                   Message(conversation_id=conv.id, role="bot", text=reply)])
        conv.message_count, conv.last_activity_at = conv.message_count + 2, now()
        return jsonify(session_id=conv.session_id, reply=reply, language=conv.language, intent=intent,
                       session_secret=secret)


@app.get("/api/unsubscribe/status/<email>")
@limiter.limit(env("API_RATE_LIMIT_MINUTE", "50 per minute"))
@limiter.limit(env("API_RATE_LIMIT_HOUR", "200 per hour"))
def status(email):
    """As the platform does: email a signed link (at most 5 an hour per address); never look the address up."""
    email = normalise_email(email)
    address = hashlib.sha256(email.encode()).hexdigest()
    with Session(engine) as s, s.begin():
        hour_ago = now() - dt.timedelta(hours=1)
        sent = s.scalar(select(func.count()).where(Outbox.address_hash == address, Outbox.created_at > hour_ago))
        if (sent or 0) < 5:
            token = signer.dumps([email, "status"])
            s.add(Outbox(kind="verify", address_hash=address, payload={"to": email, "token": token}))
    return jsonify(email=email, message="If this address can receive email, a link to confirm is on its way.")


@app.get("/api/health")
@limiter.exempt
def health():
    return jsonify(status="ok")


if __name__ == "__main__":  # bench_versus creates the tables once, before gunicorn starts the workers
    Base.metadata.create_all(engine)
