"""The real Envoy in front of the real services: transcoding, gRPC pass-through, exposure and per-IP limits."""
from __future__ import annotations

import json
import socket

import grpc
import pytest
import requests

from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from novahouse.common.v1 import diagnostics_pb2
from testsupport.stack import extra_gateway, post_from, running_stack

CHAT = "/api/chatbot/chat"


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("gateway")) as gateway:
        yield gateway


def chat_from(ip: str, port: int, headers=None):
    return post_from(ip, port, CHAT, {"message": "Dzień dobry"}, headers)


def test_rest_chat_returns_a_json_reply(gw):
    response = gw.rest("POST", CHAT, json={"message": "Dzień dobry"})
    assert response.status_code == 200
    body = response.json()
    assert body["reply"] and body["session_id"]
    follow_up = gw.rest("POST", CHAT, json={"session_id": body["session_id"], "message": "Ile kosztuje remont?"})
    assert follow_up.status_code == 200 and follow_up.json()["session_id"] == body["session_id"]


def test_grpc_send_message_through_the_public_port(gw):
    reply = chat_pb2_grpc.ChatStub(gw.channel()).SendMessage(chat_pb2.SendMessageRequest(message="Hello"), timeout=10)
    assert reply.reply and reply.session_id


def test_bad_input_is_a_400_with_a_json_body(gw):
    response = gw.rest("POST", CHAT, json={"message": "   "})
    assert response.status_code == 400
    assert response.json()["message"]


def test_unknown_route_is_a_404_with_a_json_body(gw):
    response = requests.get(gw.public_url + "/api/no-such-thing", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_health_routes(gw):
    live = gw.rest("GET", "/api/health")
    assert live.status_code == 200 and live.json()["status"] == "ok"
    # The deep report is the operators': on the admin listener only (issue 16).
    public_deep = gw.rest("GET", "/api/health/deep")
    assert public_deep.status_code == 404 and "services" not in public_deep.json()
    deep = gw.rest("GET", "/api/health/deep", admin=True)
    assert deep.status_code == 200
    services = {s["service"]: s for s in deep.json()["services"]}
    assert {"chat", "consent", "notifier"} <= set(services)
    assert all(s["healthy"] for s in services.values()), services


def test_admin_and_internal_rpcs_are_not_on_the_public_listener(gw):
    assert requests.get(gw.public_url + "/api/dlq/stats", timeout=10).status_code == 404
    assert requests.post(gw.public_url + "/api/admin/cache/purge", json={}, timeout=10).status_code == 404
    public = gw.channel()
    with pytest.raises(grpc.RpcError) as err:
        chat_pb2_grpc.ChatAdminStub(public).PurgeCache(chat_pb2.PurgeCacheRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as err:
        chat_pb2_grpc.ChatInternalStub(public).EraseSubject(chat_pb2.EraseSubjectRequest(email="a@b.pl"), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # ...while the admin listener serves them, and listens on loopback only.
    report = chat_pb2_grpc.ChatAdminStub(gw.channel(admin=True)).Diagnose(diagnostics_pb2.DiagnoseRequest(), timeout=10)
    assert report.service == "chat"
    listeners = requests.get(f"http://127.0.0.1:{gw.stack.config.envoy_admin_port}/listeners", timeout=5).text
    assert f"admin::127.0.0.1:{gw.stack.config.admin_port}" in listeners


def test_thirty_chat_messages_a_minute_per_address(gw):
    port = gw.stack.config.public_port
    results = [chat_from("127.0.0.20", port) for _ in range(35)]
    assert [status for status, _, _ in results].count(200) == 30
    refused = [r for r in results if r[0] == 429]
    assert len(refused) == 5
    status, headers, body = refused[-1]
    assert int(headers["retry-after"]) >= 1
    assert headers["ratelimit-remaining"] == "0" and headers["ratelimit-limit"].startswith("30")
    assert json.loads(body) == {"error": "rate_limited", "retry_after_s": int(headers["retry-after"])}
    # Another visitor is unaffected...
    assert chat_from("127.0.0.2", port)[0] == 200
    # ...and a forged X-Forwarded-For buys no fresh budget.
    assert chat_from("127.0.0.20", port, {"X-Forwarded-For": "203.0.113.77"})[0] == 429
    assert chat_from("127.0.0.20", port, {"X-Forwarded-For": "127.0.0.99", "X-Real-IP": "127.0.0.99"})[0] == 429


def test_grpc_over_the_limit_is_resource_exhausted(gw, tmp_path):
    with extra_gateway(gw, tmp_path, env={"CHAT_RATE_LIMIT": "3 per minute"}) as other:
        stub = chat_pb2_grpc.ChatStub(other.channel())
        codes = []
        for _ in range(5):
            try:
                stub.SendMessage(chat_pb2.SendMessageRequest(message="Hello"), timeout=10)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
    assert codes == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2


def test_local_shield_refuses_a_burst_before_the_global_limiter(gw, tmp_path):
    with extra_gateway(gw, tmp_path, env={"SHIELD_BURST": "5", "SHIELD_PER_SECOND": "1",
                                          "CHAT_RATE_LIMIT": "1000 per minute"}) as other:
        port = other.stack.config.public_port
        statuses = [chat_from("127.0.0.22", port)[0] for _ in range(12)]
        status, headers, body = chat_from("127.0.0.22", port)
        admin = f"http://127.0.0.1:{other.stack.config.envoy_admin_port}"
        stats = requests.get(f"{admin}/stats?filter=ip_shield", timeout=5).text
        assert chat_from("127.0.0.23", port)[0] == 200
    assert statuses.count(429) >= 6
    assert status == 429 and json.loads(body) == {"error": "rate_limited", "retry_after_s": 1}
    assert "ip_shield.http_local_rate_limit.rate_limited" in stats


@pytest.mark.redis
def test_two_gateways_and_two_limiters_on_one_redis_share_one_budget(gw, tmp_path, redis_url, redis_prefix):
    shared = {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": redis_prefix}
    with extra_gateway(gw, tmp_path / "a", env=shared) as first, \
            extra_gateway(gw, tmp_path / "b", env=shared) as second:
        ports = [first.stack.config.public_port, second.stack.config.public_port]
        statuses = [chat_from("127.0.0.40", ports[i % 2])[0] for i in range(40)]
    assert statuses.count(200) == 30 and statuses.count(429) == 10


def test_limiter_down_fails_open_when_configured(gw, tmp_path):
    with extra_gateway(gw, tmp_path, env={"RATELIMIT_FAIL_CLOSED": "false"}) as other:
        other.stack.processes["ratelimit"].kill()
        port = other.stack.config.public_port
        assert [chat_from("127.0.0.50", port)[0] for _ in range(3)] == [200, 200, 200]


def test_limiter_down_fails_closed_by_default(gw, tmp_path):
    with extra_gateway(gw, tmp_path) as other:
        other.stack.processes["ratelimit"].kill()
        status, _, body = chat_from("127.0.0.51", other.stack.config.public_port)
        with pytest.raises(grpc.RpcError) as err:
            chat_pb2_grpc.ChatStub(other.channel()).SendMessage(chat_pb2.SendMessageRequest(message="Hi"), timeout=10)
    assert status == 503 and json.loads(body)["error"] == "unavailable"
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("fail_closed, expected", [("false", 200), ("true", 503)])
def test_hung_limiter_never_stalls_a_request(gw, tmp_path, fail_closed, expected):
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(16)  # accepts connections, never answers
    try:
        with extra_gateway(gw, tmp_path, env={"RATELIMIT_FAIL_CLOSED": fail_closed},
                           ratelimit_port=black_hole.getsockname()[1]) as other:
            assert chat_from("127.0.0.52", other.stack.config.public_port)[0] == expected
    finally:
        black_hole.close()


def test_metrics_listener_serves_envoy_stats_and_nothing_else_of_the_admin_interface(gw, tmp_path):
    from deploy.local.processes import free_port

    metrics_port = free_port()
    with extra_gateway(gw, tmp_path, env={"ENVOY_METRICS_PORT": str(metrics_port)}) as other:
        assert chat_from("127.0.0.53", other.stack.config.public_port)[0] == 200
        metrics = f"http://127.0.0.1:{metrics_port}"
        scrape = requests.get(f"{metrics}/metrics", timeout=10)
        assert scrape.status_code == 200
        # the limiter's wait, in the per-millisecond buckets an operator needs to tell 2 ms from 4 ms
        assert 'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="ratelimit",le="2"}' in scrape.text
        assert requests.post(f"{metrics}/quitquitquit", timeout=10).status_code == 404
        assert requests.get(f"{metrics}/clusters", timeout=10).status_code == 404
        assert requests.post(f"{metrics}/metrics", timeout=10).status_code == 404
        assert chat_from("127.0.0.53", other.stack.config.public_port)[0] == 200  # Envoy still up
