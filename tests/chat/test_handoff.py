"""A visitor who asks for a person, or whom the bot fails twice, is told plainly that a consultant will call, and sales
gets a callback request with the phone and the preferred time (the callback path the agent inbox will build on)."""
from __future__ import annotations

from sqlalchemy import select

from services.chat.storage import Conversation
from tests.chat.test_conversation import talk


def test_asking_for_a_person_arranges_a_callback_with_the_phone_and_the_time(world):
    replies = talk(world.chat, ["Chcę rozmawiać z człowiekiem, nie z botem"])
    first = replies[0]
    assert "zorganizuję telefon od konsultanta" in first.reply and first.consent_prompt.kind == "processing"
    assert "Żeby konsultant mógł zadzwonić" in first.reply and "ofertę" not in first.reply
    assert "Jak się nazywasz" not in first.reply
    session = first.session_id
    asked = [world.chat.send_message(session, text) for text in ("tak", "Barbara Lis", "barbara.lis@example.com")]
    assert "Jak się nazywasz?" in asked[0].reply and "e-mail lub numer telefonu" in asked[1].reply
    assert "numerem telefonu" in asked[2].reply  # a callback needs a phone, even with an email given
    when = world.chat.send_message(session, "601 602 699")
    assert "Kiedy najlepiej zadzwonić" in when.reply
    stored = world.chat.send_message(session, "jutro po 17")
    assert stored.intent == "lead_stored" and "17:00" in stored.reply and stored.consent_prompt is None

    lead_id = stored.lead.lead_id
    [key] = world.notifier.keys(f"lead:{lead_id}:request:")
    alert = world.notifier.requests[key].slack
    assert alert.title.startswith("Callback request: ") and "17:00" in alert.title and "by phone" in alert.title
    assert alert.fields["reason"] == "asked for a person" and alert.fields["phone"] == "+48601602699"
    with world.db.session() as s:
        conversation = s.scalars(select(Conversation).where(Conversation.session_id == session)).one()
        assert conversation.handoff_at is not None and conversation.converted


def test_not_understood_twice_in_a_row_offers_a_person(world):
    first, second = talk(world.chat, ["xyzzy plugh", "qwerty asdf zxcv"])
    assert "consultant" not in first.reply and first.consent_prompt is None
    assert "arrange a call from a consultant" in second.reply and second.consent_prompt.kind == "processing"
