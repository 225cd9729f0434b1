"""gRPC servicers of the notifier: proto in, domain call, proto out. Nothing else lives here."""
from __future__ import annotations

from novahouse.notifier.v1 import notifier_pb2 as pb
from novahouse.notifier.v1 import notifier_pb2_grpc
from services.notifier.outbox import Notifier
from services.notifier.storage import Delivery
from services.runtime.diagnostics import Diagnostics
from services.runtime.timestamps import to_timestamp

DESTINATION_NAMES = {pb.SLACK: "slack", pb.MONDAY: "monday", pb.EMAIL: "email"}
DESTINATION_ENUMS = {name: value for value, name in DESTINATION_NAMES.items()}
STATUS_NAMES = {pb.PENDING: "pending", pb.DELIVERED: "delivered", pb.FAILED: "failed", pb.DEAD: "dead"}
STATUS_ENUMS = {name: value for value, name in STATUS_NAMES.items()}


def _payload(request: pb.NotifyRequest) -> tuple[str, dict]:
    kind = request.WhichOneof("payload")
    if kind == "slack":
        alert = request.slack
        return "slack", {"title": alert.title, "text": alert.text, "fields": dict(alert.fields)}
    if kind == "monday":
        item = request.monday
        return "monday", {"item_name": item.item_name, "column_values": dict(item.column_values), "group_id": item.group_id}
    if kind == "email":
        email = request.email
        return "email", {"to": email.to, "subject": email.subject, "body": email.body}
    return "", {}


def delivery_message(d: Delivery) -> pb.Delivery:
    return pb.Delivery(
        delivery_id=d.id,
        idempotency_key=d.idempotency_key,
        destination=DESTINATION_ENUMS.get(d.destination, pb.DESTINATION_UNSPECIFIED),
        status=STATUS_ENUMS[d.status],
        attempts=d.attempts,
        last_error=d.last_error,
        external_id=d.external_id,
        created_at=to_timestamp(d.created_at),
        next_attempt_at=to_timestamp(d.next_attempt_at),
        delivered_at=to_timestamp(d.delivered_at),
        payload_json=d.payload,
    )


class NotifierInternalServicer(notifier_pb2_grpc.NotifierInternalServicer):
    def __init__(self, notifier: Notifier):
        self.notifier = notifier

    def Notify(self, request, context):
        destination, payload = _payload(request)
        delivery, duplicate = self.notifier.notify(request.idempotency_key, destination, payload)
        return pb.NotifyResponse(
            delivery_id=delivery.id,
            status=STATUS_ENUMS[delivery.status],
            duplicate=duplicate,
            external_id=delivery.external_id,
        )

    def GetDelivery(self, request, context):
        return delivery_message(self.notifier.get_delivery(request.idempotency_key))


class NotifierAdminServicer(notifier_pb2_grpc.NotifierAdminServicer):
    def __init__(self, notifier: Notifier, diagnostics: Diagnostics):
        self.notifier = notifier
        self.diagnostics = diagnostics

    def GetDlqStats(self, request, context):
        stats = self.notifier.dlq_stats()
        counts = [
            pb.DlqCount(destination=DESTINATION_ENUMS.get(d, 0), status=STATUS_ENUMS[s], count=n)
            for d, s, n in stats["counts"]
        ]
        return pb.GetDlqStatsResponse(
            counts=counts, pending=stats["pending"], failed=stats["failed"], dead=stats["dead"]
        )

    def ListDeadLetters(self, request, context):
        entries = self.notifier.list_dead_letters(
            DESTINATION_NAMES.get(request.destination), STATUS_NAMES.get(request.status), request.limit
        )
        return pb.ListDeadLettersResponse(entries=[delivery_message(e) for e in entries])

    def ReplayDeadLetters(self, request, context):
        return pb.ReplayDeadLettersResponse(
            replayed=self.notifier.replay(list(request.delivery_ids), request.all_failed)
        )

    def PurgeDeadLetters(self, request, context):
        return pb.PurgeDeadLettersResponse(deleted=self.notifier.purge_delivered(request.older_than_days))

    def GetBreakers(self, request, context):
        return pb.GetBreakersResponse(breakers=[pb.Breaker(**b) for b in self.notifier.breaker_states()])

    def ResetBreaker(self, request, context):
        return pb.Breaker(**self.notifier.reset_breaker(request.name))

    def Diagnose(self, request, context):
        return self.diagnostics.report()
