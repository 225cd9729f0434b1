"""Erasure on request and the retention purge remove what identifies people and keep the statistics."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import func, select

from services.chat import privacy
from services.chat.storage import Conversation, ErasureRequest, Lead, Message
from services.runtime.clock import utcnow
from services.runtime.errors import NotFoundError, ValidationError
from tests.chat.scripts import ENGLISH_LOW_SCORE, POLISH_HIGH_SCORE
from tests.chat.test_conversation import send_concurrently, talk
from testsupport import backing


def stored_lead(world, messages=POLISH_HIGH_SCORE):
    """The reply that stored the lead, and the conversation's secret."""
    replies = talk(world.chat, messages)
    return world.chat.send_message(replies[-1].session_id, "", True, True), replies[0].session_secret


def test_erasure_deletes_the_conversation_and_lead_and_keeps_only_the_counts(world):
    lead, secret = stored_lead(world)
    other = world.chat.send_message("", "Dzień dobry, ile kosztuje remont?")
    result = privacy.erase_subject(world.db, "  Jan.Kowalski@EXAMPLE.com ", "revoke-1")
    assert (result.conversations, result.leads_anonymised) == (1, 1) and result.messages_erased == 10

    with world.db.session() as s:
        assert s.get(Lead, lead.lead.lead_id) is None
        assert s.scalar(select(func.count()).select_from(Lead)) == 0
        assert list(s.scalars(select(Conversation.session_id))) == [other.session_id]
        proof = s.get(ErasureRequest, "revoke-1")
        assert (proof.conversations, proof.messages_erased, proof.leads_anonymised) == (1, 10, 1)
    with pytest.raises(NotFoundError):
        world.chat.transcript(lead.session_id, secret)
    assert len(world.chat.transcript(other.session_id, other.session_secret).messages) == 2


def test_erasure_is_carried_out_once_per_request_id(world):
    stored_lead(world)
    first = privacy.erase_subject(world.db, "jan.kowalski@example.com", "revoke-7")
    again = privacy.erase_subject(world.db, "jan.kowalski@example.com", "revoke-7")
    assert again == first
    assert privacy.erase_subject(world.db, "jan.kowalski@example.com", "revoke-8").messages_erased == 0


def test_erasure_finds_an_email_typed_in_a_conversation_without_a_lead(world):
    reply = world.chat.send_message("", "Mój mail to ANNA@example.com")
    assert privacy.erase_subject(world.db, "anna@example.com", "r-1").messages_erased == 2
    with pytest.raises(NotFoundError):
        world.chat.transcript(reply.session_id, reply.session_secret)


@pytest.mark.parametrize("email, request_id", [("", "r"), ("not-an-email", "r"), ("a@b.pl", ""), ("a@b.pl", "x" * 65)])
def test_erasure_with_bad_input_is_refused(world, email, request_id):
    with pytest.raises(ValidationError):
        privacy.erase_subject(world.db, email, request_id)


def test_retention_purge_deletes_old_conversations_without_a_lead_in_batches(world):
    lead, _ = stored_lead(world)
    for i in range(7):
        world.chat.send_message("", f"pytanie {i}")
    recent = world.chat.send_message("", "świeże pytanie").session_id
    with world.db.session() as s:
        for conv in s.scalars(select(Conversation)):
            if conv.session_id != recent:
                conv.last_activity_at = utcnow() - dt.timedelta(days=91)
    progress: list[int] = []
    done = privacy.purge_retention(
        world.db, days=90, lead_days=365, batch_size=3, progress=lambda p: progress.append(p.conversations_deleted)
    )
    assert (done.conversations_deleted, done.leads_deleted) == (7, 0)
    assert progress == [3, 6, 7]
    with world.db.session() as s:
        remaining = set(s.scalars(select(Conversation.session_id)))
        assert remaining == {lead.session_id, recent}
        assert s.scalar(select(func.count()).select_from(Message)) == 10 + 2


@pytest.mark.postgres
def test_concurrent_messages_of_one_session_are_serialised_on_postgresql(pg_world):
    first, texts = send_concurrently(pg_world.chat, 16)
    messages = pg_world.chat.transcript(first.session_id, first.session_secret).messages
    assert [m.role for m in messages] == ["user", "bot"] * (1 + len(texts))
    with pg_world.db.session() as s:
        assert s.scalar(select(Conversation.message_count)) == len(messages)


def stored_texts(schema: str, session_id: str) -> list[str]:
    """The conversation's message texts, read from PostgreSQL directly, not through the service."""
    with backing.postgres_connect() as conn:
        rows = conn.execute(
            f'SELECT m.text FROM "{schema}".message m JOIN "{schema}".conversation c ON c.id = m.conversation_id '
            "WHERE c.session_id = %s ORDER BY m.id",
            (session_id,),
        ).fetchall()
    return [row[0] for row in rows]


def leaks(texts: list[str], typed: list[str], phone_digits: str) -> list[str]:
    """The texts holding any of the typed values (in any case) or the phone's nine digits in any spacing."""
    return [
        text for text in texts
        if any(value.lower() in text.lower() for value in typed) or phone_digits in re.sub(r"\D", "", text)
    ]


REFUSALS = {
    # Polish: the details in one message, refused in words that themselves carry the phone number again.
    "pl": (POLISH_HIGH_SCORE, "Nie. Mój numer to 600 700 800, ale nie dzwońcie", None,
           ["jan.kowalski@example.com", "600 700 800", "Jan Kowalski", "Kowalski"], "600700800"),
    # English: one detail a message, refused with the widget's checkbox.
    "en": (ENGLISH_LOW_SCORE, "", False,
           ["john.smith@example.org", "+48 601 234 567", "John Smith"], "601234567"),
}


@pytest.mark.postgres
@pytest.mark.parametrize("language", ["pl", "en"])
def test_refused_processing_consent_leaves_no_typed_email_phone_or_name_in_any_stored_message(
    pg_world, pg_schema, language
):
    script, refusal, checkbox, typed, phone_digits = REFUSALS[language]
    replies = talk(pg_world.chat, script)
    first, session = replies[0], replies[0].session_id
    assert leaks(stored_texts(pg_schema, session), typed, phone_digits)  # the details were stored while collecting

    declined = pg_world.chat.send_message(session, refusal, processing_consent=checkbox)
    assert declined.intent == "consent_declined" and declined.lead.captured == []
    texts = stored_texts(pg_schema, session)
    assert texts and leaks(texts, typed, phone_digits) == []
    transcript = pg_world.chat.transcript(session, first.session_secret)
    assert leaks([m.text for m in transcript.messages], typed, phone_digits) == []

    marker = pg_world.app.kb.say("consent.redacted", language)
    visitor = [m.text for m in transcript.messages if m.role == "user"]
    assert visitor == [marker] * len(script) + ["[consent processing=no]"]
    assert len(transcript.messages) == 2 * (len(script) + 1)  # the bot's side stays, the turns are all there
    with pg_world.db.session() as s:
        conversation = s.scalars(select(Conversation).where(Conversation.session_id == session)).one()
        assert conversation.slots == {} and conversation.lead_id is None
        assert s.scalar(select(func.count()).select_from(Lead)) == 0

    # The conversation goes on as a new one would: questions are answered and stored as typed.
    later = pg_world.chat.send_message(session, "Ile kosztuje remont?" if language == "pl" else "How much is it?")
    assert later.intent == "packages"
    assert pg_world.chat.transcript(session, first.session_secret).messages[-2].text in (
        "Ile kosztuje remont?", "How much is it?"
    )
