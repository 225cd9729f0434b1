"""One visitor's request can be followed through every service: the id Envoy assigns is in the response, and in
the log lines that chat, consent and the notifier write on its behalf, including the delivery made later."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chat.scripts import ENGLISH_LOW_SCORE
from testsupport.receivers import HttpReceiver, monday_graphql
from testsupport.stack import running_stack
from testsupport.waiting import wait_for


def log_lines(log_dir: Path, service: str) -> list[dict[str, object]]:
    lines = []
    for raw in (log_dir / f"{service}.log").read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue  # a line that is not ours (a library writing to stderr)
    return lines


def with_request_id(log_dir: Path, service: str, request_id: str) -> list[dict[str, object]]:
    return [line for line in log_lines(log_dir, service) if line.get("request_id") == request_id]


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with HttpReceiver(respond=monday_graphql) as monday:
        env = {"MONDAY_API_URL": f"{monday.url}/v2", "MONDAY_API_KEY": "test-key", "MONDAY_BOARD_ID": "4242"}
        with running_stack(tmp_path_factory.mktemp("request-ids"), env=env) as gw:
            yield gw, monday


def test_a_message_that_completes_a_lead_is_logged_under_one_request_id_in_chat_consent_and_notifier(platform):
    gw, monday = platform
    session = ""
    for text in [*ENGLISH_LOW_SCORE, "yes"]:
        response = gw.rest("POST", "/api/chatbot/chat", json={"session_id": session, "message": text},
                           headers={"x-request-id": "client-chosen-id-0001"})
        assert response.status_code == 200, response.text
        session = response.json()["session_id"]
    # The message that gives marketing consent completes the lead: chat stores it, records consent, hands it over.
    response = gw.rest("POST", "/api/chatbot/chat", json={"session_id": session, "message": "yes"})
    assert response.json()["intent"] == "lead_stored", response.text
    request_id = response.headers["x-request-id"]
    assert request_id and request_id != "client-chosen-id-0001"  # the edge assigns it; a client's is not trusted

    log_dir = gw.stack.log_dir
    # The item goes out later, from a notifier worker thread, under the id of the request that queued it.
    wait_for(lambda: any(line.get("msg") == "delivered" and line.get("destination") == "monday"
                         for line in with_request_id(log_dir, "notifier", request_id)),
             what="the Monday.com delivery logged under the request's id")
    assert monday.requests
    chat = with_request_id(log_dir, "chat", request_id)
    consent = with_request_id(log_dir, "consent", request_id)
    notifier = with_request_id(log_dir, "notifier", request_id)
    assert any(line.get("method") == "/novahouse.chat.v1.Chat/SendMessage" for line in chat), chat
    assert any(line.get("method") == "/novahouse.consent.v1.ConsentInternal/RecordConsent" for line in consent), consent
    assert any(line.get("method") == "/novahouse.notifier.v1.NotifierInternal/Notify" for line in notifier), notifier
    # No other request's lines were given this id, and the client-chosen id reached no service.
    for service in ("chat", "consent", "notifier"):
        assert not with_request_id(log_dir, service, "client-chosen-id-0001")
