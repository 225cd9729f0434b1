"""What chat gives the consent service for an access request: the person's conversations found by the email and by
the phones and full names captured with it, and nobody else's."""
from __future__ import annotations

import pytest

from services.chat import export
from services.runtime.errors import ValidationError
from tests.chat.scripts import POLISH_HIGH_SCORE
from tests.chat.test_conversation import talk


def sessions(found: export.SubjectExport) -> dict[str, list[str]]:
    return {c["session_id"]: c["found_by"] for c in found.document["conversations"]}


@pytest.mark.parametrize("database", ["world", "pg_world"])
def test_conversations_are_found_by_the_phone_in_any_format_and_by_the_full_name(request, database):
    world = request.getfixturevalue(database)
    lead = talk(world.chat, POLISH_HIGH_SCORE)[-1]
    world.chat.send_message(lead.session_id, "", True, True)
    by_phone = talk(world.chat, ["Dzień dobry", "mój numer to (600) 700-800"])[-1].session_id
    by_name = talk(world.chat, ["Dzień dobry", "Nazywam się Jan Kowalski"])[-1].session_id
    unrelated = talk(world.chat, ["Dzień dobry, ile kosztuje remont?"])[-1].session_id

    found = export.export_subject(world.db, " JAN.KOWALSKI@example.com ")

    assert sessions(found) == {lead.session_id: ["email", "name", "phone"], by_phone: ["phone"], by_name: ["name"]}
    assert unrelated not in found.session_ids and found.phones == ["+48600700800"]
    [stored] = found.document["leads"]
    assert stored["name"] == "Jan Kowalski" and stored["score"] == 100 and stored["lead_id"] == found.lead_ids[0]


def test_a_conversation_that_captured_another_email_is_someone_elses(world):
    talk(world.chat, POLISH_HIGH_SCORE)
    household = talk(world.chat, ["Anna Kowalska, anna@example.com, 600 700 800"])[-1].session_id
    found = export.export_subject(world.db, "jan.kowalski@example.com")
    assert household not in found.session_ids and len(found.session_ids) == 1


def test_a_one_word_name_is_not_searched_for(world):
    talk(world.chat, ["Jestem Jan", "jan@example.com"])
    namesake = talk(world.chat, ["Jestem Jan, szukam ekipy"])[-1].session_id
    assert namesake not in export.export_subject(world.db, "jan@example.com").session_ids


def test_an_unknown_address_has_nothing_and_a_malformed_one_is_refused(world):
    empty: dict[str, list[str]] = {"conversations": [], "leads": [], "names": [], "agent_actions": []}
    assert export.export_subject(world.db, "nobody@example.com").document == empty
    with pytest.raises(ValidationError):
        export.export_subject(world.db, "not-an-email")
