"""A person who gave only a phone, served by an operator on the admin listener (after the identity check that
docs/privacy/verified-requests.md describes): the whole platform through Envoy, on PostgreSQL, with real Slack,
Monday.com and SMTP receivers.

A visitor types their name and a phone, never an email. The operator exports by that phone typed another way and
gets the conversation; ErasePhoneOnly then erases it in chat, after which the export by phone is empty and no row
of chat's tables holds the phone in any format. Neither route is on the public listener, and a malformed phone is a
400 that changes nothing.
"""
from __future__ import annotations

import random
import re
import string

import pytest

from testsupport import backing
from testsupport.stack import postgres_platform

EXPORT_PATH = "/api/admin/consent/export"
ERASE_PATH = "/api/admin/consent/erase-phone-only"


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with postgres_platform(tmp_path_factory.mktemp("phone-only"), "phoneonly", {
        "chat": {"SCHEDULER_ENABLED": "false"},
    }) as platform:
        yield platform


def new_phone() -> str:
    return random.choice("56") + "".join(random.choices(string.digits, k=8))  # a Polish mobile: 5x and 6x are all valid


def phone_only_visitor(platform) -> tuple[str, str]:
    """A chat where the visitor gives a name and a phone (spaced, with +48), never an email: (session, digits)."""
    phone = new_phone()
    session = ""
    for text in ["Hello, do you renovate bathrooms?", "My name is Bogumila Przybyszewska",
                 f"call me on +48 {phone[:3]} {phone[3:6]} {phone[6:]}"]:
        response = platform.gw.rest("POST", "/api/chatbot/chat", json={"session_id": session, "message": text})
        assert response.status_code == 200, response.text
        session = response.json()["session_id"]
    return session, phone


def export_by_phone(platform, phone: str):
    return platform.gw.rest("POST", EXPORT_PATH, admin=True, json={"phone": phone})


def erase(platform, phone: str, **fields):
    body = {"phone": phone, "operator": "a.nowak", "identity_check_reference": "TICKET-4711", **fields}
    return platform.gw.rest("POST", ERASE_PATH, admin=True, json=body)


def sessions_of(document: dict) -> list[str]:
    return [c["session_id"] for c in document["chat"]["conversations"]]


def chat_rows_holding(platform, digits: str) -> list[str]:
    """Every row of chat's tables whose text holds these digits, separators between them ignored."""
    schema = platform.schemas["chat"]
    found = []
    with backing.postgres_connect() as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            (schema,),
        ).fetchall()
        for (table,) in tables:
            for (text,) in conn.execute(f'SELECT row_to_json(t)::text FROM "{schema}"."{table}" t').fetchall():
                if digits in re.sub(r"[\s\-.()/]", "", text):
                    found.append(f"{table}: {text}")
    return found


def test_export_by_phone_in_another_format_then_erasure_leaves_the_phone_in_no_row(platform):
    session, phone = phone_only_visitor(platform)
    other_session, other_phone = phone_only_visitor(platform)
    assert chat_rows_holding(platform, phone)

    response = export_by_phone(platform, f"{phone[:3]}-{phone[3:6]}-{phone[6:]}")  # typed another way
    assert response.status_code == 200, response.text
    document = response.json()
    assert sessions_of(document) == [session]
    assert f"+48{phone}" in document["identifiers"]["phones"]
    assert document["emails_found_in_chat"] == []
    assert document["consent"]["searched"] is False
    assert any(phone[:3] in m["text"] for m in document["chat"]["conversations"][0]["messages"])

    erased = erase(platform, f"0048{phone}", request_id="phone-erasure-test-1")
    assert erased.status_code == 200, erased.text
    assert erased.json()["conversations"] == 1 and erased.json()["messages_erased"] >= 3, erased.text
    again = erase(platform, phone, request_id="phone-erasure-test-1")  # the same request: erased once
    assert again.status_code == 200 and again.json() == erased.json(), again.text

    after = export_by_phone(platform, phone)
    assert after.status_code == 200, after.text
    assert sessions_of(after.json()) == [] and after.json()["chat"]["leads"] == []
    assert chat_rows_holding(platform, phone) == []
    assert sessions_of(export_by_phone(platform, other_phone).json()) == [other_session]  # someone else's stays

    logs = "\n".join(p.read_text(errors="replace") for p in platform.gw.stack.log_dir.glob("*.log"))
    audit = [line for line in logs.splitlines() if "phone-only erasure done" in line]
    assert len(audit) == 2 and all("TICKET-4711" in line and "a.nowak" in line for line in audit), audit
    assert all("phone-erasure-test-1" in line for line in audit), audit
    assert phone not in re.sub(r"[\s\-.()/]", "", logs)


def test_a_malformed_phone_is_a_400_json_and_changes_nothing(platform):
    session, phone = phone_only_visitor(platform)
    for path, body in [
        (ERASE_PATH, {"phone": "12345", "operator": "a.nowak", "identity_check_reference": "TICKET-1"}),
        (ERASE_PATH, {"phone": f"+48{phone}", "operator": "", "identity_check_reference": "TICKET-1"}),
        (EXPORT_PATH, {"phone": "call me maybe"}),
        (EXPORT_PATH, {"phone": phone, "email": "someone@example.org"}),
        (EXPORT_PATH, {}),
    ]:
        response = platform.gw.rest("POST", path, admin=True, json=body)
        assert response.status_code == 400, (path, body, response.text)
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()
    assert sessions_of(export_by_phone(platform, phone).json()) == [session]
    assert chat_rows_holding(platform, phone)


def test_neither_route_is_on_the_public_listener(platform):
    session, phone = phone_only_visitor(platform)
    for path, body in [(EXPORT_PATH, {"phone": phone}),
                       (ERASE_PATH, {"phone": phone, "operator": "x", "identity_check_reference": "y"})]:
        assert platform.gw.rest("POST", path, json=body).status_code == 404
    assert sessions_of(export_by_phone(platform, phone).json()) == [session]
