"""Erasure reaches every record about the person, however they typed their phone and wherever it links, and leaves
nothing of them in chat's tables or cache: a dump of every row of the schema holds none of their email, phone
formats or (unique) name, while someone else's lead stays."""
from __future__ import annotations

import random
import re
import string
import threading
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from services.chat import export, privacy
from services.chat.cache import intent_key
from services.chat.knowledge import normalise
from services.chat.storage import ErasureRequest, Lead
from services.chat.subject import mentions_phone
from services.runtime.errors import ValidationError
from tests.chat.conftest import build_world
from tests.chat.scripts import POLISH_HIGH_SCORE
from tests.chat.test_conversation import talk
from testsupport import backing
from testsupport.peers import PeerServer


def unique_person() -> SimpleNamespace:
    letters = "".join(random.choices(string.ascii_lowercase, k=10))
    phone = "6" + "".join(random.choices(string.digits, k=8))
    second = "5" + "".join(random.choices(string.digits, k=8))
    return SimpleNamespace(
        surname=f"Kra{letters}", name=f"Zenobia Kra{letters}", email=f"z.{letters}@example.com", phone=phone,
        second=second,
        typed=[f"+48 {phone[:3]} {phone[3:6]} {phone[6:]}", f"0048{phone}", f"{second[:3]}-{second[3:6]}-{second[6:]}",
               f"(+48) {second}"],
    )


def the_persons_conversations(chat, person) -> dict[str, str]:
    """A lead, a chat found only by the phone typed another way (where a second phone is captured), a chat found
    only by that second phone (linkage), and one found by the full name: {what: session id}."""
    lead_chat = talk(chat, [f"{person.name}, {person.email}, {person.typed[0]}, Warszawa, 85 m2",
                            "Budżet 250 tys. zł", "Chcemy zacząć od zaraz"])
    stored = chat.send_message(lead_chat[-1].session_id, "", True, True)
    assert stored.lead.lead_id
    by_phone = talk(chat, ["Dzień dobry", f"mój numer to {person.typed[1]}", f"albo służbowy {person.typed[2]}"])
    by_second_phone = talk(chat, ["Cześć", f"proszę dzwonić {person.typed[3]}"])
    by_name = talk(chat, ["Dzień dobry", f"Nazywam się {person.name}"])
    return {"lead": stored.session_id, "phone": by_phone[-1].session_id,
            "linked phone": by_second_phone[-1].session_id, "name": by_name[-1].session_id}


def someone_else(chat) -> str:
    replies = talk(chat, POLISH_HIGH_SCORE)
    return chat.send_message(replies[-1].session_id, "", True, False).lead.lead_id


def schema_dump(schema: str) -> list[str]:
    """Every row of every table of the schema, as text."""
    rows = []
    with backing.postgres_connect() as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            (schema,),
        ).fetchall()
        for (table,) in tables:
            rows += [f"{table}: {text}" for (text,) in
                     conn.execute(f'SELECT row_to_json(t)::text FROM "{schema}"."{table}" t').fetchall()]
    return rows


def holding(rows: list[str], person) -> list[str]:
    """The rows holding the email, the name or surname (any case), or either phone in any of the typed formats or
    with its separators dropped."""
    needles = [person.email, person.name, person.surname, *person.typed]
    return [
        row for row in rows
        if any(n.lower() in row.lower() for n in needles)
        or any(digits in re.sub(r"[\s\-.()/]", "", row) for digits in (person.phone, person.second))
    ]


@pytest.fixture
def pg_world_with_redis(pg_schema, pg_url, redis_url, redis_prefix):
    with PeerServer() as peers:
        world = build_world(pg_url.replace("postgresql://", "postgresql+psycopg://"), peers, schema=pg_schema,
                            redis_url=redis_url, redis_key_prefix=redis_prefix)
        yield world
        world.db.dispose()


@pytest.mark.postgres
def test_erasure_by_email_leaves_nothing_of_the_person_in_any_row_or_cached_key(
    pg_world_with_redis, pg_schema, redis_prefix
):
    world, person = pg_world_with_redis, unique_person()
    sessions = the_persons_conversations(world.chat, person)
    other_lead = someone_else(world.chat)
    assert len(holding(schema_dump(pg_schema), person)) > 4

    found = export.export_subject(world.db, person.email)
    assert sorted(found.session_ids) == sorted(sessions.values())
    assert {c["session_id"]: c["found_by"] for c in found.document["conversations"]}[sessions["linked phone"]] == [
        "phone"
    ]
    assert found.document["names"] == [person.name]
    assert found.phones == sorted([f"+48{person.phone}", f"+48{person.second}"])

    redis = backing.redis_client()
    cached = redis_prefix + "chat:" + intent_key(normalise("Cześć"), "pl")
    assert redis.exists(cached)  # a phrase without personal data is cached ...
    for text in (f"mój numer to {person.typed[1]}", f"Nazywam się {person.name}"):  # ... one with it never
        assert not redis.exists(redis_prefix + "chat:" + intent_key(normalise(text), "pl"))

    result = privacy.erase_subject(world.db, person.email.upper(), "erase-unique-1", cache=world.app.cache)

    assert (result.conversations, result.leads_anonymised) == (4, 1) and result.messages_erased == 2 * (4 + 3 + 2 + 2)
    assert holding(schema_dump(pg_schema), person) == []
    assert not redis.exists(cached)  # forgotten: its hash could confirm a guess of what the person typed
    keys = list(redis.scan_iter(match=f"{redis_prefix}*"))
    stored = [*keys, *(redis.mget(keys) if keys else [])]
    assert holding([v.decode() if isinstance(v, bytes) else str(v) for v in stored if v], person) == []
    with world.db.session() as s:
        assert [lead.id for lead in s.scalars(select(Lead))] == [other_lead]
        proof = s.get(ErasureRequest, "erase-unique-1")
        assert (proof.conversations, proof.leads_anonymised) == (4, 1)
    assert export.export_subject(world.db, person.email).session_ids == []


@pytest.mark.postgres
def test_racing_erasures_of_one_request_erase_once_and_agree(pg_world):
    person = unique_person()
    the_persons_conversations(pg_world.chat, person)
    results, errors = [], []
    barrier = threading.Barrier(4)

    def erase() -> None:
        barrier.wait()
        try:
            results.append(privacy.erase_subject(pg_world.db, person.email, "erase-race-1"))
        except Exception as exc:  # noqa: BLE001  # collected: the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=erase) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == 4
    assert all(r == results[0] for r in results) and results[0].conversations == 4
    with pg_world.db.session() as s:
        assert s.scalar(select(func.count()).select_from(ErasureRequest)) == 1


def test_erasure_by_phone_in_another_format_reaches_the_email_captured_with_it(world):
    person = unique_person()
    sessions = the_persons_conversations(world.chat, person)
    by_email = talk(world.chat, ["Dzień dobry", f"mój mail: {person.email}"])[-1].session_id
    other_lead = someone_else(world.chat)

    found = export.export_subject(world.db, "", f"{person.phone[:3]}.{person.phone[3:6]}.{person.phone[6:]}")
    assert sorted(found.session_ids) == sorted([*sessions.values(), by_email])
    assert found.emails == [person.email]

    result = privacy.erase_subject(world.db, "", "erase-by-phone-1", phone=f"0048 {person.phone}")
    assert (result.conversations, result.leads_anonymised) == (5, 1)
    with world.db.session() as s:
        assert [lead.id for lead in s.scalars(select(Lead))] == [other_lead]


def test_a_conversation_found_by_name_that_captured_another_phone_is_someone_elses(world):
    person = unique_person()
    the_persons_conversations(world.chat, person)
    namesake = talk(world.chat, ["Dzień dobry", f"Nazywam się {person.name}", "mój numer 700 800 900"])
    assert namesake[-1].session_id not in export.export_subject(world.db, person.email).session_ids
    assert privacy.erase_subject(world.db, person.email, "erase-namesake-1").conversations == 4
    assert len(world.chat.transcript(namesake[0].session_id, namesake[0].session_secret).messages) == 6


@pytest.mark.parametrize("text, found", [
    ("+48 601 602 699", True), ("601-602-699", True), ("0048601602699", True), ("(+48) 601602699", True),
    ("tel. 601.602.699, dziękuję", True), ("(601) 602 699", True), ("numer+48601602699", True),
    ("1601602699", False), ("6016026990", False), ("601 602 698", False), ("+49 601 602 699", False),
])
def test_a_phone_is_recognised_in_every_format_but_not_inside_another_number(text, found):
    assert mentions_phone(text, "+48601602699") is found


def test_erasure_and_export_refuse_both_or_neither_identifier_and_a_malformed_phone(world):
    for email, phone in [("", ""), ("a@b.pl", "601602699"), ("", "12345"), ("", "+49 601 602 699")]:
        with pytest.raises(ValidationError):
            privacy.erase_subject(world.db, email, "r-1", phone=phone)
        with pytest.raises(ValidationError):
            export.export_subject(world.db, email, phone)
