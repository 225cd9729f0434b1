"""Real notifier processes for the tests and the benchmark, and talking to them over gRPC."""
from __future__ import annotations

import json
import os
from pathlib import Path

import grpc

from deploy.local.processes import ManagedProcess, free_port, grpc_serving, python_module
from novahouse.notifier.v1 import notifier_pb2 as pb
from novahouse.notifier.v1 import notifier_pb2_grpc
from testsupport.waiting import wait_for

# Retry delays shrunk the way Svix's tests do; pacing off unless a test switches it on.
FAST = {
    "SLACK_MIN_INTERVAL_S": "0",
    "DLQ_RETRY_DELAY_SECONDS": "0.2",
    "DLQ_MAX_DELAY_SECONDS": "1",
    "DLQ_POLL_INTERVAL_S": "0.2",
    "CB_RESET_TIMEOUT": "2",
    "NOTIFIER_HTTP_TIMEOUT_S": "2",
    "DELIVERY_LEASE_S": "5",
    "HEALTH_CHECK_INTERVAL_S": "0.5",
    "MONDAY_API_KEY": "test-key",
    "MONDAY_BOARD_ID": "4242",
    "LOG_LEVEL": "WARNING",
}
_INHERITED_CONFIG = ("SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN", "SLACK_CHANNEL", "SLACK_API_URL", "MONDAY_API_URL",
                     "SMTP_URL", "ESCALATION_EMAIL", "DATABASE_URL", "REDIS_URL")


class NotifierProcess:
    """One `python -m services.notifier.server` child on a free port, with stubs for both of its gRPC services."""

    def __init__(self, data_dir: Path, env: dict[str, str], name: str = "notifier"):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if k not in _INHERITED_CONFIG}
        full_env.update({"DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", **FAST, **env})
        full_env["GRPC_PORT"] = str(self.port)
        self.process = ManagedProcess(name, python_module("services.notifier.server"), full_env,
                                      Path(data_dir) / "logs")
        self.channel = grpc.insecure_channel(self.addr)
        self.internal = notifier_pb2_grpc.NotifierInternalStub(self.channel)
        self.admin = notifier_pb2_grpc.NotifierAdminStub(self.channel)

    def start(self, timeout: float = 60.0) -> NotifierProcess:
        self.process.start()
        self.process.wait_until(lambda: grpc_serving(self.addr), timeout, "SERVING")
        return self

    def stop(self) -> None:
        self.process.stop()
        self.channel.close()

    def slack(self, key: str, title: str, text: str = "", **fields) -> pb.NotifyResponse:
        alert = pb.SlackAlert(title=title, text=text, fields=fields)
        return self.internal.Notify(pb.NotifyRequest(idempotency_key=key, slack=alert), timeout=10)

    def monday(self, key: str, name: str, columns: dict[str, str] | None = None, *,
               operation: pb.MondayOperation = pb.MONDAY_OPERATION_UNSPECIFIED, item_id: str = "",
               lookup_key: str = "") -> pb.NotifyResponse:
        item = pb.MondayItem(item_name=name, column_values=columns or {}, operation=operation, item_id=item_id,
                             lookup_key=lookup_key)
        return self.internal.Notify(pb.NotifyRequest(idempotency_key=key, monday=item), timeout=10)

    def erase(self, erasure_id: str, **who) -> pb.ErasureActions:
        request = pb.ErasePersonRequest(erasure_id=erasure_id, **who)
        return self.internal.ErasePerson(request, timeout=30)

    def erasure_actions(self, erasure_id: str) -> pb.ErasureActions:
        request = pb.GetErasureActionsRequest(erasure_id=erasure_id)
        return self.internal.GetErasureActions(request, timeout=10)

    def email(self, key: str, to: str, subject: str, body: str) -> pb.NotifyResponse:
        email = pb.Email(to=to, subject=subject, body=body)
        # A service message: no consent service runs beside the notifier in these tests (marketing has its own).
        request = pb.NotifyRequest(idempotency_key=key, email=email, purpose=pb.PURPOSE_SERVICE)
        return self.internal.Notify(request, timeout=10)

    def delivery(self, key: str) -> pb.Delivery:
        return self.internal.GetDelivery(pb.GetDeliveryRequest(idempotency_key=key), timeout=10)

    def wait_status(self, key: str, status: int, timeout: float = 30.0) -> pb.Delivery:
        return wait_for(
            lambda: (d := self.delivery(key)).status == status and d,
            timeout,
            f"{key} to reach {pb.DeliveryStatus.Name(status)}",
        )

    def stats(self) -> pb.GetDlqStatsResponse:
        return self.admin.GetDlqStats(pb.GetDlqStatsRequest(), timeout=10)

    def breaker(self, name: str) -> pb.Breaker:
        breakers = self.admin.GetBreakers(pb.GetBreakersRequest(), timeout=10).breakers
        return next(b for b in breakers if b.name == name)


def slack_titles(receiver) -> list[str]:
    """The header text of every alert the fake Slack accepted."""
    return [r.json()["blocks"][0]["text"]["text"] for r in list(receiver.requests)]


def monday_variables(receiver) -> list[dict]:
    return [r.json()["variables"] for r in list(receiver.requests)]


def payload(delivery: pb.Delivery) -> dict:
    return json.loads(delivery.payload_json)
