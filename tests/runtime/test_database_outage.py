"""A lost database is a 503 with Retry-After (UNAVAILABLE over gRPC), never a 500, and the services recover by
themselves when it returns: chat and consent on a PostgreSQL of the test's own, which it stops and starts again
under light load through the real Envoy."""
from __future__ import annotations

import uuid

import grpc
import pytest

from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from novahouse.consent.v1 import consent_pb2, consent_pb2_grpc
from testsupport.private_postgres import PrivatePostgres
from testsupport.stack import UNLIMITED, running_stack
from testsupport.waiting import wait_for

ROUNDS = 10  # light load: one chat message and one unsubscribe per round, REST and gRPC


def rest_calls(gw) -> list:
    email = f"outage-{uuid.uuid4().hex[:10]}@example.com"
    return [gw.rest("POST", "/api/chatbot/chat", json={"message": "Dzień dobry"}),
            gw.rest("POST", "/api/unsubscribe", json={"email": email, "reason": "test"})]


def grpc_codes(gw) -> list[grpc.StatusCode]:
    channel = gw.channel()
    calls = [
        lambda: chat_pb2_grpc.ChatStub(channel).SendMessage(chat_pb2.SendMessageRequest(message="Hello"), timeout=15),
        lambda: consent_pb2_grpc.ConsentStub(channel).Unsubscribe(
            consent_pb2.UnsubscribeRequest(email=f"outage-{uuid.uuid4().hex[:10]}@example.com"), timeout=15),
    ]
    codes = []
    for call in calls:
        try:
            call()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
    return codes


def all_served(gw) -> bool:
    return all(r.status_code == 200 for r in rest_calls(gw))


@pytest.fixture
def platform(tmp_path):
    with PrivatePostgres() as pg, running_stack(
            tmp_path, env={"DATABASE_URL": pg.url, "HEALTH_CHECK_INTERVAL_S": "0.5", **UNLIMITED}) as gw:
        yield pg, gw


def test_a_lost_database_is_a_503_with_retry_after_and_the_services_recover_by_themselves(platform):
    pg, gw = platform
    before = [r.status_code for _ in range(3) for r in rest_calls(gw)]

    pg.stop()
    during = [r for _ in range(ROUNDS) for r in rest_calls(gw)]
    during_grpc = [code for _ in range(3) for code in grpc_codes(gw)]

    pg.start()
    wait_for(lambda: all_served(gw), 60, "chat and consent to serve again once PostgreSQL is back")
    after = [r.status_code for _ in range(ROUNDS) for r in rest_calls(gw)]
    after_grpc = [code for _ in range(3) for code in grpc_codes(gw)]
    logs = {svc: gw.stack.processes[svc].log_path.read_text() for svc in ("chat", "consent")}

    print(f"\nbefore {before}; during: {[r.status_code for r in during]}; after {after}")
    assert before == [200] * 6
    assert [r.status_code for r in during] == [503] * 2 * ROUNDS
    assert all(r.headers.get("retry-after", "").isdigit() for r in during), [dict(r.headers) for r in during[:2]]
    assert all(r.json()["code"] == grpc.StatusCode.UNAVAILABLE.value[0] and r.json()["message"] for r in during)
    assert during_grpc == [grpc.StatusCode.UNAVAILABLE] * 6
    assert after == [200] * 2 * ROUNDS and after_grpc == [grpc.StatusCode.OK] * 6
    for svc, log in logs.items():  # an outage is a warning line, not a traceback per request
        assert "Traceback" not in log and "unhandled error" not in log, svc
