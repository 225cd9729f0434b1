"""The chat server process: gRPC contract, caller metadata, Redis outage, health, and the manage commands."""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import grpc
import pytest

from deploy.local.processes import ManagedProcess, free_port, grpc_serving, python_module
from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from novahouse.common.v1 import diagnostics_pb2
from novahouse.health.v1 import health_pb2, health_pb2_grpc
from tests.chat.scripts import POLISH_HIGH_SCORE
from testsupport.peers import PeerServer
from testsupport.redis_server import PrivateRedis
from testsupport.waiting import wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chat-server")
    redis_server = PrivateRedis(tmp).start()
    peers = PeerServer().start()
    port = free_port()
    env = {
        **os.environ,
        "GRPC_PORT": str(port),
        "CHAT_ADDR": f"127.0.0.1:{port}",  # for `manage purge-cache`
        "DATA_DIR": str(tmp),
        "REDIS_URL": redis_server.url,
        "REDIS_RETRY_SECONDS": "0",
        "CONSENT_ADDR": peers.address,
        "NOTIFIER_ADDR": peers.address,
        "RATELIMIT_ADDR": f"127.0.0.1:{free_port()}",  # nothing listens: reported unhealthy, never an error
        "LEAD_RETRY_SECONDS": "3600",  # leave pending leads to `manage run-followups` in these tests
        "HEALTH_CHECK_INTERVAL_S": "0.2",
    }
    chat = ManagedProcess("chat", python_module("services.chat.server"), env, tmp).start()
    chat.wait_until(lambda: grpc_serving(f"127.0.0.1:{port}"), 60, "SERVING")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield SimpleNamespace(
        channel=channel, address=f"127.0.0.1:{port}", env=env, peers=peers, redis=redis_server,
        chat=chat_pb2_grpc.ChatStub(channel), admin=chat_pb2_grpc.ChatAdminStub(channel),
    )
    channel.close()
    chat.stop()
    peers.stop()
    redis_server.kill()


def manage(server, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.chat.manage", *args], env={**server.env, "LOG_LEVEL": "WARNING"},
        capture_output=True, text=True, timeout=120,
    )


def converse(server, messages, metadata=(), session=""):
    for text in messages:
        request = chat_pb2.SendMessageRequest(session_id=session, message=text)
        reply = server.chat.SendMessage(request, metadata=metadata)
        session = reply.session_id
    return reply


def checks(server) -> dict[str, bool]:
    report = server.admin.Diagnose(diagnostics_pb2.DiagnoseRequest())
    return {check.name: check.ok for check in report.checks}


def test_lead_over_grpc_records_the_callers_address_and_user_agent(server):
    metadata = (("x-novahouse-client-ip", "198.51.100.23"),)
    with grpc.insecure_channel(server.address, options=[("grpc.primary_user_agent", "WidgetTest/1.0")]) as channel:
        widget = SimpleNamespace(chat=chat_pb2_grpc.ChatStub(channel))
        first = converse(widget, POLISH_HIGH_SCORE[:1], metadata)
        last = converse(widget, POLISH_HIGH_SCORE[1:], metadata, session=first.session_id)
        stored = widget.chat.SendMessage(
            chat_pb2.SendMessageRequest(session_id=last.session_id, processing_consent=True, marketing_consent=True),
            metadata=metadata,
        )
    assert last.consent_prompt.kind == "processing" and stored.lead.score == 100
    record = wait_for(lambda: server.peers.consent.recorded, what="the lead's consent statement")[-1]
    assert record.client_ip == "198.51.100.23" and record.user_agent.startswith("WidgetTest/1.0")
    request = chat_pb2.GetConversationRequest(session_id=last.session_id)
    conversation = server.chat.GetConversation(request, metadata=(("x-session-secret", first.session_secret),))
    assert len(conversation.messages) == 10 and conversation.lead.lead_id == stored.lead.lead_id
    for wrong in ([], [("x-session-secret", "not-the-secret")]):
        with pytest.raises(grpc.RpcError) as refused:
            server.chat.GetConversation(request, metadata=wrong)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND


def test_bad_input_is_invalid_argument(server):
    for request in (
        chat_pb2.SendMessageRequest(message=""),
        chat_pb2.SendMessageRequest(message="x" * 2001),
        chat_pb2.SendMessageRequest(session_id="abc", message="hej"),
    ):
        with pytest.raises(grpc.RpcError) as failure:
            server.chat.SendMessage(request)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and failure.value.details()


def test_chat_keeps_answering_while_redis_is_down_and_uses_it_again_when_back(server):
    assert checks(server)["redis"]
    server.redis.kill()
    assert converse(server, ["Dzień dobry", "Ile kosztuje remont?"]).intent == "packages"
    assert not checks(server)["redis"]
    server.redis.start()
    assert converse(server, ["Hello", "How long does it take?"]).intent == "duration"
    assert checks(server)["redis"]


def test_deep_health_reports_unreachable_services_as_degraded(server):
    health = health_pb2_grpc.PlatformHealthStub(server.channel)
    assert health.Live(health_pb2.LiveRequest()).status == "ok"
    deep = health.Deep(health_pb2.DeepRequest())
    reports = {report.service: report for report in deep.services}
    assert deep.status == "degraded"
    assert set(reports) == {"chat", "consent", "notifier", "ratelimit"}
    assert not reports["ratelimit"].healthy and reports["ratelimit"].checks[0].detail == "UNAVAILABLE"
    assert {c.name for c in reports["chat"].checks} >= {"database", "redis", "cache", "followup-scheduler"}


def test_lead_waiting_for_a_stopped_notifier_is_handed_over_by_run_followups(server):
    server.peers.stop()
    last = converse(server, POLISH_HIGH_SCORE)
    stored = server.chat.SendMessage(
        chat_pb2.SendMessageRequest(session_id=last.session_id, processing_consent=True, marketing_consent=False)
    )
    assert stored.lead.lead_id and not checks(server)["leads:pending"]
    server.peers.start()
    result = manage(server, "run-followups")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "leads handed over: 1, still pending: 0" in result.stdout
    assert server.peers.notifier.calls[f"lead:{stored.lead.lead_id}:monday"] == 1


def test_manage_purge_commands_print_their_counts(server):
    purge = manage(server, "purge-cache")
    assert purge.returncode == 0 and "expired cache entries removed:" in purge.stdout
    retention = manage(server, "purge-retention", "--days", "1", "--lead-days", "1")
    assert retention.returncode == 0 and "conversations deleted: 0" in retention.stdout
    assert "leads deleted: 0" in retention.stdout


def test_mark_customer_over_grpc_answers_the_mark_not_found_and_invalid_argument(server):
    last = converse(server, POLISH_HIGH_SCORE)
    stored = server.chat.SendMessage(
        chat_pb2.SendMessageRequest(session_id=last.session_id, processing_consent=True, marketing_consent=False)
    )
    lead_id = stored.lead.lead_id
    marked = server.admin.MarkCustomer(chat_pb2.MarkCustomerRequest(lead_id=lead_id, customer=True))
    assert (marked.lead_id, marked.customer) == (lead_id, True)
    cleared = server.admin.MarkCustomer(chat_pb2.MarkCustomerRequest(lead_id=lead_id, customer=False))
    assert (cleared.lead_id, cleared.customer) == (lead_id, False)
    for bad_id, code in (("f" * 32, grpc.StatusCode.NOT_FOUND), ("not-a-lead", grpc.StatusCode.INVALID_ARGUMENT),
                         ("", grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.RpcError) as refused:
            server.admin.MarkCustomer(chat_pb2.MarkCustomerRequest(lead_id=bad_id, customer=True))
        assert refused.value.code() == code and refused.value.details()


def test_purge_cache_without_a_server_fails_and_says_why(server):
    result = subprocess.run(
        [sys.executable, "-m", "services.chat.manage", "purge-cache", "--timeout", "1"],
        env={**server.env, "CHAT_ADDR": f"127.0.0.1:{free_port()}"}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1 and "did not answer" in result.stderr


def test_purge_cache_reaches_every_chat_replica_and_names_one_that_does_not_answer(tmp_path):
    """In a cluster CHAT_ADDR names a headless Service, which resolves to every pod; here two replicas on
    127.0.0.1 and 127.0.0.2, listed as gRPC's ipv4: target, stand in for its two addresses."""
    peers = PeerServer().start()
    port = free_port()
    replicas = {}
    try:
        for ip in ("127.0.0.1", "127.0.0.2"):
            data = tmp_path / ip
            data.mkdir()
            env = {**os.environ, "GRPC_HOST": ip, "GRPC_PORT": str(port), "DATA_DIR": str(data),
                   "CONSENT_ADDR": peers.address, "NOTIFIER_ADDR": peers.address, "CACHE_TTL_SECONDS": "1"}
            env.pop("REDIS_URL", None)  # the in-process store, which only the replica itself can purge
            env.pop("DATABASE_URL", None)
            replicas[ip] = ManagedProcess(f"chat-{ip}", python_module("services.chat.server"), env, data).start()
        for ip, replica in replicas.items():
            replica.wait_until(functools.partial(grpc_serving, f"{ip}:{port}"), 60, "SERVING")
            with grpc.insecure_channel(f"{ip}:{port}") as channel:
                chat_pb2_grpc.ChatStub(channel).SendMessage(chat_pb2.SendMessageRequest(message="Dzień dobry"))
        time.sleep(1.5)  # let both replicas' one-second cache entries expire

        def purge(timeout: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "services.chat.manage", "purge-cache", "--timeout", timeout],
                env={**os.environ, "CHAT_ADDR": f"ipv4:127.0.0.1:{port},127.0.0.2:{port}",
                     "DATA_DIR": str(tmp_path / "127.0.0.1")},
                capture_output=True, text=True, timeout=60,
            )

        run = purge("5")
        assert run.returncode == 0, run.stderr
        assert f"127.0.0.1:{port}: 1 removed" in run.stdout and f"127.0.0.2:{port}: 1 removed" in run.stdout
        assert "expired cache entries removed: 2 (chat servers purged: 2 of 2)" in run.stdout

        replicas["127.0.0.2"].stop()
        run = purge("2")
        assert run.returncode == 1
        assert f"the chat server at 127.0.0.2:{port} did not answer" in run.stderr
        assert "expired cache entries removed: 0 (chat servers purged: 1 of 2)" in run.stdout
    finally:
        for replica in replicas.values():
            replica.stop()
        peers.stop()


def test_purge_cache_asks_each_address_a_name_resolves_to():
    from services.chat.manage import replica_addresses

    assert "127.0.0.1:50051" in replica_addresses("localhost:50051")
    assert replica_addresses("ipv4:10.0.0.1:50051,10.0.0.2:50051") == ["10.0.0.1:50051", "10.0.0.2:50051"]
