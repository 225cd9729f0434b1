"""Conversations as a visitor has them: answers, one question at a time, consent, a stored and handed-over lead."""
from __future__ import annotations

import hashlib
import threading

import pytest
from sqlalchemy import func, select

from services.chat.conversation import Reply
from services.chat.storage import Conversation, Lead, Message
from services.runtime.errors import NotFoundError, ValidationError
from services.runtime.request_context import Caller
from tests.chat.scripts import POLISH_HIGH_SCORE
from testsupport.waiting import poll


def talk(chat, messages, session_id="", caller=None):
    replies = []
    for text in messages:
        reply = chat.send_message(session_id, text, caller=caller)
        session_id = reply.session_id
        replies.append(reply)
    return replies


def count(db, model) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_polish_visitor_becomes_a_scored_lead_with_both_consents_recorded(world):
    caller = Caller(client_ip="203.0.113.7", user_agent="Mozilla/5.0 test")
    replies = talk(world.chat, POLISH_HIGH_SCORE, caller=caller)
    assert replies[0].language == "pl" and "Basic 990 zł/m²" in replies[0].reply
    prompt = replies[-1].consent_prompt
    assert prompt and prompt.kind == "processing" and prompt.required and prompt.text_version
    assert replies[-1].lead.complete and replies[-1].lead.lead_id == ""

    stored = world.chat.send_message(replies[-1].session_id, "", True, True, caller)
    assert stored.intent == "lead_stored" and stored.lead.score == 100 and stored.lead.lead_id

    lead_id = stored.lead.lead_id
    [record] = world.consent.recorded
    assert (record.email, record.processing_consent, record.marketing_consent) == \
        ("jan.kowalski@example.com", True, True)
    assert (record.source, record.session_id, record.lead_id) == ("chat-widget", stored.session_id, lead_id)
    assert (record.client_ip, record.user_agent, record.text_version) == \
        ("203.0.113.7", "Mozilla/5.0 test", prompt.text_version)
    assert record.conversation_id and record.request_id == f"lead:{lead_id}:consent"
    assert world.notifier.keys("lead:") == [f"lead:{lead_id}:monday", f"lead:{lead_id}:slack"]
    monday = world.notifier.requests[f"lead:{lead_id}:monday"].monday
    assert monday.column_values["phone"] == "+48600700800" and monday.column_values["score"] == "100"


def test_english_visitor_is_asked_for_consent_first_then_one_question_at_a_time_and_can_skip(world):
    replies = talk(world.chat, ["Hello, how long does a renovation take?", "I'd like a quote"])
    assert all(r.language == "en" for r in replies)
    # Answer first, ask later: the opening question is answered, nothing is asked; intent brings the consent notice.
    assert "?" not in replies[0].reply and replies[0].intent == "duration" and replies[0].consent_prompt is None
    assert replies[1].consent_prompt.kind == "processing" and "What is your name?" not in replies[1].reply
    session = replies[1].session_id
    answers = ["yes", "John Smith", "john.smith@example.org", "Gdansk", "35 sqm", "I'd rather not say", "in 8 months"]
    asked = [world.chat.send_message(session, text) for text in answers]
    for reply in asked[:-1]:
        assert reply.reply.count("?") == 1, reply.reply  # exactly one question a reply
    assert "What is your name?" in asked[0].reply and "email address or phone number" in asked[1].reply
    assert "do not work in Gdańsk" in asked[3].reply  # said plainly, and the questions go on
    assert "budget" in asked[4].reply and "start" in asked[5].reply  # the budget was skipped, not asked again
    assert asked[-1].consent_prompt.kind == "marketing" and not asked[-1].consent_prompt.required

    stored = world.chat.send_message(session, "no")
    assert stored.intent == "lead_stored" and "do not work in Gdańsk" in stored.reply
    assert stored.lead.score == 12 + 6 + 8 + 2 and "budget" in stored.lead.missing
    assert world.consent.recorded[0].marketing_consent is False
    lead_id = stored.lead.lead_id
    assert world.notifier.keys("lead:") == [f"lead:{lead_id}:monday", f"lead:{lead_id}:slack"]
    monday = world.notifier.requests[f"lead:{lead_id}:monday"].monday
    assert (monday.column_values["partial"], monday.column_values["missing"]) == ("yes", "budget")
    assert monday.column_values["city_served"] == "no" and monday.lookup_key == lead_id
    alert = world.notifier.requests[f"lead:{lead_id}:slack"].slack  # an unserved city is flagged to sales
    assert "city not served: Gdańsk" in alert.text and alert.fields["email"] == "john.smith@example.org"


def test_visitor_can_correct_a_value_before_consenting(world):
    replies = talk(world.chat, POLISH_HIGH_SCORE)
    session = replies[-1].session_id
    corrected = world.chat.send_message(session, "Przepraszam, mój telefon to 601 111 222")
    assert "telefon" in corrected.reply
    world.chat.send_message(session, "tak")
    stored = world.chat.send_message(session, "nie")
    with world.db.session() as s:
        assert s.get(Lead, stored.lead.lead_id).phone == "+48601111222"


def test_invalid_email_is_explained_and_asked_again(world):
    first = world.chat.send_message("", "Nazywam się Anna Nowak")
    assert first.consent_prompt.kind == "processing"
    world.chat.send_message(first.session_id, "tak")
    reply = world.chat.send_message(first.session_id, "anna@nowak")
    assert "To nie wygląda na poprawny adres e-mail" in reply.reply and "e-mail lub numer telefonu" in reply.reply
    assert "email" in reply.lead.missing


def test_declining_processing_consent_stores_no_lead_and_drops_the_details(world):
    replies = talk(world.chat, POLISH_HIGH_SCORE)
    declined = world.chat.send_message(replies[-1].session_id, "nie")
    assert declined.intent == "consent_declined" and declined.lead.captured == []
    assert "usunąłem" in declined.reply and "zapisu tej rozmowy" in declined.reply
    assert count(world.db, Lead) == 0 and world.consent.recorded == [] and world.notifier.keys() == []
    with world.db.session() as s:
        conversation = s.scalars(select(Conversation)).one()
        assert conversation.slots == {} and conversation.contact_email is None


def test_withdrawing_processing_at_the_marketing_question_also_removes_the_typed_details(world):
    replies = talk(world.chat, [*POLISH_HIGH_SCORE, "tak"])
    assert replies[-1].consent_prompt.kind == "marketing"
    declined = world.chat.send_message(replies[-1].session_id, "", processing_consent=False, marketing_consent=False)
    assert declined.intent == "consent_declined" and declined.lead.captured == []
    messages = world.chat.transcript(replies[0].session_id, replies[0].session_secret).messages
    visitor = [m.text for m in messages if m.role == "user"]
    assert visitor == [world.app.kb.say("consent.redacted", "pl")] * 5 + ["[consent processing=no]"]
    assert not any("kowalski" in m.text.lower() or "600 700 800" in m.text for m in messages)
    assert count(world.db, Lead) == 0 and world.consent.recorded == []


@pytest.mark.parametrize(
    "session_id, message, consent, problem",
    [
        ("", "", None, "empty"),
        ("", "   \n ", None, "empty"),
        ("", "x" * 2001, None, "too long"),
        ("", "hej\x00there", None, "control characters"),
        ("", "hej\x1b[31m", None, "control characters"),
        ("not-a-session", "hej", None, "malformed"),
        ("'; DROP TABLE conversation; --", "hej", None, "malformed"),
        ("8f14e45f-ceea-467f-a0e6-0d1b2b8e9a11", "hej", None, "unknown"),
        ("", "hej", True, "no consent question"),
    ],
)
def test_bad_input_is_refused_with_a_reason_and_nothing_is_stored(world, session_id, message, consent, problem):
    with pytest.raises(ValidationError, match=problem):
        world.chat.send_message(session_id, message, processing_consent=consent)
    assert count(world.db, Conversation) == 0 and count(world.db, Message) == 0


def test_a_message_of_exactly_the_limit_is_accepted(world):
    assert world.chat.send_message("", "a" * 2000).session_id


def test_bad_input_in_an_existing_conversation_leaves_it_unchanged(world):
    first = world.chat.send_message("", "Dzień dobry")
    with pytest.raises(ValidationError):
        world.chat.send_message(first.session_id, "tak", processing_consent=True)
    assert len(world.chat.transcript(first.session_id, first.session_secret).messages) == 2


def test_transcript_of_unknown_session_is_not_found(world):
    with pytest.raises(NotFoundError):
        world.chat.transcript("8f14e45f-ceea-467f-a0e6-0d1b2b8e9a11", "some-secret")


def test_only_the_secret_of_the_first_reply_reads_the_transcript_and_only_its_hash_is_stored(world):
    first, *later = talk(world.chat, ["Dzień dobry", "Ile kosztuje remont?"])
    other = world.chat.send_message("", "Hello")
    assert len(first.session_secret) >= 32 and other.session_secret != first.session_secret
    assert [reply.session_secret for reply in later] == [""]  # handed out once

    assert len(world.chat.transcript(first.session_id, first.session_secret).messages) == 4
    with pytest.raises(NotFoundError) as unknown:
        world.chat.transcript("8f14e45f-ceea-467f-a0e6-0d1b2b8e9a11", first.session_secret)
    for secret in ("", "wrong", first.session_secret[:-1], other.session_secret, first.session_id):
        with pytest.raises(NotFoundError) as refused:
            world.chat.transcript(first.session_id, secret)
        assert str(refused.value) == str(unknown.value)  # nothing tells a stranger the session exists

    with world.db.session() as s:
        stored = s.scalars(select(Conversation).where(Conversation.session_id == first.session_id)).one()
        assert stored.session_secret_hash == hashlib.sha256(first.session_secret.encode()).hexdigest()
        stored.session_secret_hash = None  # a conversation from before secrets existed
    for secret in ("", first.session_secret):
        with pytest.raises(NotFoundError):
            world.chat.transcript(first.session_id, secret)


def send_concurrently(chat, count: int) -> tuple[Reply, list[str]]:
    """`count` messages to one new session from as many threads at once; (the first reply, texts sent)."""
    first = chat.send_message("", "Dzień dobry")
    session = first.session_id
    texts = [f"pytanie numer {i}" for i in range(count)]
    threads = [threading.Thread(target=chat.send_message, args=(session, t)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return first, texts


def test_concurrent_messages_of_one_session_are_handled_one_after_the_other(world):
    first, texts = send_concurrently(world.chat, 12)
    messages = world.chat.transcript(first.session_id, first.session_secret).messages
    assert len(messages) == 2 + 2 * len(texts)
    assert [m.role for m in messages] == ["user", "bot"] * (1 + len(texts))
    assert sorted(m.text for m in messages[2::2]) == sorted(texts)


def test_lead_is_kept_when_the_notifier_is_down_and_handed_over_by_the_retry(world):
    world.peers.stop()
    replies = talk(world.chat, POLISH_HIGH_SCORE)
    stored = world.chat.send_message(replies[-1].session_id, "", True, False)
    assert stored.intent == "lead_stored"
    assert world.app.leads.pending_count() == 1

    world.peers.start()
    # The periodic job retries until the notifier is reachable again (the channel reconnects with backoff).
    poll(lambda: world.app.leads.retry_pending().delivered, timeout=15, interval=0.2)
    assert world.app.leads.pending_count() == 0
    lead_id = stored.lead.lead_id
    assert world.notifier.calls == {f"lead:{lead_id}:monday": 1, f"lead:{lead_id}:slack": 1}
    assert len(world.consent.recorded) == 1
    assert world.app.leads.retry_pending().delivered == 0  # nothing left: no second item


def test_booking_after_the_lead_goes_to_sales_at_once_and_stops_the_reminders(world):
    replies = talk(world.chat, POLISH_HIGH_SCORE)
    stored = world.chat.send_message(replies[-1].session_id, "", True, True)
    booked = world.chat.send_message(replies[-1].session_id, "Chcę umówić konsultację na przyszły wtorek")
    assert booked.intent == "lead_updated" and "konsultację" in booked.reply
    with world.db.session() as s:
        assert s.scalars(select(Conversation.converted)).one() is True
        lead = s.get(Lead, stored.lead.lead_id)
        assert (lead.request_kind, len(lead.request_day or "")) == ("consultation", 10)
    lead_id = stored.lead.lead_id
    [request_key] = world.notifier.keys(f"lead:{lead_id}:request:")
    alert = world.notifier.requests[request_key].slack
    assert alert.title.startswith("Consultation request: " + lead.request_day)
    [update_key] = world.notifier.keys(f"lead:{lead_id}:monday:")
    assert world.notifier.requests[update_key].monday.column_values["request"].startswith("consult")
