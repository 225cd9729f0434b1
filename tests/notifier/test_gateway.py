"""Every notifier RPC through Envoy: Notify and GetDelivery over gRPC and the admin REST routes, on the admin
listener only; the public listener does not route them."""
from __future__ import annotations

import grpc
import pytest

from novahouse.notifier.v1 import notifier_pb2 as pb
from novahouse.notifier.v1 import notifier_pb2_grpc
from testsupport.notifier import FAST
from testsupport.stack import running_stack
from testsupport.waiting import wait_for


@pytest.fixture(scope="module")
def platform(tmp_path_factory, module_receivers):
    slack, monday, smtp = module_receivers
    env = {
        "SLACK_WEBHOOK_URL": slack.url,
        "MONDAY_API_URL": monday.url,
        "MONDAY_API_KEY": "test-key",
        "MONDAY_BOARD_ID": "4242",
        "SMTP_URL": smtp.url,
    }
    with running_stack(tmp_path_factory.mktemp("notifier-e2e"), env=env, service_env={"notifier": FAST}) as gw:
        yield gw


def delivery(internal, key: str) -> pb.Delivery:
    return internal.GetDelivery(pb.GetDeliveryRequest(idempotency_key=key), timeout=10)


def test_notify_and_the_dlq_admin_routes_work_through_the_admin_listener(platform, module_receivers):
    slack = module_receivers[0]
    internal = notifier_pb2_grpc.NotifierInternalStub(platform.channel(admin=True))
    sent = internal.Notify(pb.NotifyRequest(idempotency_key="gw-1", slack=pb.SlackAlert(title="Via Envoy")), timeout=10)
    assert not sent.duplicate
    wait_for(lambda: delivery(internal, "gw-1").status == pb.DELIVERED, what="gw-1 delivered")

    slack.fail(410, times=1)
    archived = pb.NotifyRequest(idempotency_key="gw-dead", slack=pb.SlackAlert(title="Archived channel"))
    internal.Notify(archived, timeout=10)
    dead = wait_for(lambda: (d := delivery(internal, "gw-dead")).status == pb.DEAD and d, what="gw-dead dead")

    stats = platform.rest("GET", "/api/dlq/stats", admin=True)
    assert stats.status_code == 200, stats.text
    assert int(stats.json()["dead"]) == 1 and int(stats.json()["pending"]) == 0

    listed = platform.rest("GET", "/api/dlq/pending", admin=True, params={"status": "DEAD", "destination": "SLACK"})
    assert listed.status_code == 200, listed.text
    [entry] = listed.json()["entries"]
    assert entry["idempotency_key"] == "gw-dead" and "410" in entry["last_error"] and entry["attempts"] == 1

    replay = platform.rest("POST", "/api/dlq/replay", admin=True, json={"delivery_ids": [dead.delivery_id]})
    assert replay.status_code == 200 and replay.json()["replayed"] == 1
    wait_for(lambda: delivery(internal, "gw-dead").status == pb.DELIVERED, what="gw-dead replayed")

    bad_replay = platform.rest("POST", "/api/dlq/replay", admin=True, json={})
    assert bad_replay.status_code == 400

    cleanup = platform.rest("POST", "/api/dlq/cleanup", admin=True, json={"older_than_days": 30})
    assert cleanup.status_code == 200 and int(cleanup.json()["deleted"]) == 0


def test_breakers_and_diagnostics_through_the_admin_listener(platform):
    breakers = platform.rest("GET", "/api/breakers", admin=True)
    assert breakers.status_code == 200
    assert {b["name"]: b["state"] for b in breakers.json()["breakers"]} == {
        "slack": "closed", "monday": "closed", "email": "closed"
    }

    reset = platform.rest("POST", "/api/breakers/monday/reset", admin=True, json={})
    assert reset.status_code == 200 and reset.json()["state"] == "closed"
    assert platform.rest("POST", "/api/breakers/fax/reset", admin=True, json={}).status_code == 404

    report = platform.rest("GET", "/api/admin/notifier/diagnostics", admin=True)
    assert report.status_code == 200
    checks = {c["name"]: c for c in report.json()["checks"]}
    assert report.json()["healthy"] is True
    assert checks["scheduler"]["detail"] == "running" and "pending" in checks["dlq"]["detail"]


def test_bad_notify_through_envoy_is_invalid_argument(platform):
    internal = notifier_pb2_grpc.NotifierInternalStub(platform.channel(admin=True))
    with pytest.raises(grpc.RpcError) as error:
        internal.Notify(pb.NotifyRequest(idempotency_key="gw-bad", email=pb.Email(to="nobody")), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "email.to" in (error.value.details() or "")


def test_the_public_listener_routes_no_notifier_rpc(platform):
    assert platform.rest("GET", "/api/dlq/stats").status_code == 404
    assert platform.rest("POST", "/api/breakers/slack/reset", json={}).status_code == 404
    public = notifier_pb2_grpc.NotifierInternalStub(platform.channel())
    with pytest.raises(grpc.RpcError) as error:
        public.Notify(pb.NotifyRequest(idempotency_key="gw-public", slack=pb.SlackAlert(title="x")), timeout=10)
    assert error.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND)
