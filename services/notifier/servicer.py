"""gRPC servicers of the notifier: proto in, domain call, proto out. Nothing else lives here."""
from __future__ import annotations

import json

import grpc

from novahouse.common.v1 import diagnostics_pb2
from novahouse.notifier.v1 import notifier_pb2 as pb
from novahouse.notifier.v1 import notifier_pb2_grpc
from services.notifier.breakers import BreakerStatus
from services.notifier.deliveries import DeliveryService
from services.notifier.destinations import CREATE, DELETE, UPDATE, Payload
from services.notifier.erasure_store import Erasure
from services.notifier.erasures import ErasureService
from services.notifier.storage import INTERNAL_ALERT, MARKETING, SERVICE, Delivery
from services.runtime.diagnostics import Diagnostics
from services.runtime.timestamps import to_timestamp

DESTINATION_NAMES = {pb.SLACK: "slack", pb.MONDAY: "monday", pb.EMAIL: "email"}
DESTINATION_ENUMS = {name: value for value, name in DESTINATION_NAMES.items()}
STATUS_NAMES = {
    pb.PENDING: "pending", pb.DELIVERED: "delivered", pb.FAILED: "failed", pb.DEAD: "dead", pb.CANCELLED: "cancelled"
}
STATUS_ENUMS = {name: value for value, name in STATUS_NAMES.items()}
PURPOSE_NAMES = {
    pb.PURPOSE_MARKETING: MARKETING, pb.PURPOSE_SERVICE: SERVICE, pb.PURPOSE_INTERNAL_ALERT: INTERNAL_ALERT
}
PURPOSE_ENUMS = {name: value for value, name in PURPOSE_NAMES.items()}
MONDAY_OPERATIONS = {pb.MONDAY_CREATE: CREATE, pb.MONDAY_UPDATE: UPDATE, pb.MONDAY_DELETE: DELETE}


def _payload(request: pb.NotifyRequest) -> tuple[str, Payload]:
    kind = request.WhichOneof("payload")
    if kind == "slack":
        alert = request.slack
        return "slack", {"title": alert.title, "text": alert.text, "fields": dict(alert.fields)}
    if kind == "monday":
        item = request.monday
        monday: Payload = {
            "item_name": item.item_name, "column_values": dict(item.column_values), "group_id": item.group_id
        }
        if item.operation not in (pb.MONDAY_OPERATION_UNSPECIFIED, pb.MONDAY_CREATE):
            monday["operation"] = MONDAY_OPERATIONS.get(item.operation, "unknown")
        if item.item_id:
            monday["item_id"] = item.item_id
        if item.lookup_key:
            monday["lookup_key"] = item.lookup_key
        elif "operation" not in monday:
            # A create without a key of its own is found again by its delivery's: one item across a crash.
            monday["lookup_key"] = request.idempotency_key
        return "monday", monday
    if kind == "email":
        email = request.email
        payload: Payload = {"to": email.to, "subject": email.subject, "body": email.body}
        if email.headers:
            payload["headers"] = dict(email.headers)
        return "email", payload
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
        request_id=d.request_id,
        purpose=PURPOSE_ENUMS.get(d.purpose, pb.PURPOSE_UNSPECIFIED),
    )


def breaker_message(b: BreakerStatus) -> pb.Breaker:
    return pb.Breaker(
        name=b.name, state=b.state, fail_counter=b.fail_counter, fail_max=b.fail_max, reset_timeout_s=b.reset_timeout_s
    )


def erasure_message(erasure: Erasure) -> pb.ErasureActions:
    actions = [
        pb.ErasureAction(
            delivery_id=a.delivery_id,
            destination=DESTINATION_ENUMS.get(a.destination, pb.DESTINATION_UNSPECIFIED),
            external_id=a.external_id,
            action=a.action,
            status=a.status,
            follow_up_delivery_id=a.follow_up_delivery_id,
            updated_at=to_timestamp(a.updated_at),
        )
        for a in erasure.actions
    ]
    return pb.ErasureActions(
        erasure_id=erasure.erasure_id, deliveries_redacted=erasure.deliveries_redacted, actions=actions,
        erased_at=to_timestamp(erasure.erased_at),
    )


class NotifierInternalServicer(notifier_pb2_grpc.NotifierInternalServicer):
    def __init__(self, deliveries: DeliveryService, erasures: ErasureService):
        self.deliveries = deliveries
        self.erasures = erasures

    def Notify(self, request: pb.NotifyRequest, context: grpc.ServicerContext) -> pb.NotifyResponse:
        destination, payload = _payload(request)
        purpose = PURPOSE_NAMES.get(request.purpose, "")
        delivery, duplicate = self.deliveries.notify(request.idempotency_key, destination, payload, purpose)
        return pb.NotifyResponse(
            delivery_id=delivery.id,
            status=STATUS_ENUMS[delivery.status],
            duplicate=duplicate,
            external_id=delivery.external_id,
        )

    def GetDelivery(self, request: pb.GetDeliveryRequest, context: grpc.ServicerContext) -> pb.Delivery:
        return delivery_message(self.deliveries.get_delivery(request.idempotency_key))

    def ExportDeliveries(
        self, request: pb.ExportDeliveriesRequest, context: grpc.ServicerContext
    ) -> pb.DeliveriesExport:
        found = self.deliveries.export_deliveries(
            request.email, list(request.phones), list(request.lead_ids), list(request.session_ids),
            list(request.conversation_ids),
        )
        return pb.DeliveriesExport(document_json=json.dumps(found, ensure_ascii=False))

    def ErasePerson(self, request: pb.ErasePersonRequest, context: grpc.ServicerContext) -> pb.ErasureActions:
        return erasure_message(self.erasures.erase_person(
            request.erasure_id, request.email, list(request.phones), list(request.lead_ids),
            list(request.session_ids), list(request.conversation_ids), list(request.names),
        ))

    def GetErasureActions(
        self, request: pb.GetErasureActionsRequest, context: grpc.ServicerContext
    ) -> pb.ErasureActions:
        return erasure_message(self.erasures.actions(request.erasure_id))


class NotifierAdminServicer(notifier_pb2_grpc.NotifierAdminServicer):
    def __init__(self, deliveries: DeliveryService, diagnostics: Diagnostics):
        self.deliveries = deliveries
        self.diagnostics = diagnostics

    def GetDlqStats(self, request: pb.GetDlqStatsRequest, context: grpc.ServicerContext) -> pb.GetDlqStatsResponse:
        stats = self.deliveries.dlq_stats()
        counts = [
            pb.DlqCount(
                destination=DESTINATION_ENUMS.get(d, pb.DESTINATION_UNSPECIFIED), status=STATUS_ENUMS[s], count=n
            )
            for d, s, n in stats.counts
        ]
        return pb.GetDlqStatsResponse(
            counts=counts, pending=stats.pending, failed=stats.failed, dead=stats.dead, cancelled=stats.cancelled
        )

    def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: grpc.ServicerContext
    ) -> pb.ListDeadLettersResponse:
        entries = self.deliveries.list_dead_letters(
            DESTINATION_NAMES.get(request.destination), STATUS_NAMES.get(request.status), request.limit
        )
        return pb.ListDeadLettersResponse(entries=[delivery_message(e) for e in entries])

    def ReplayDeadLetters(
        self, request: pb.ReplayDeadLettersRequest, context: grpc.ServicerContext
    ) -> pb.ReplayDeadLettersResponse:
        return pb.ReplayDeadLettersResponse(
            replayed=self.deliveries.replay(list(request.delivery_ids), request.all_failed)
        )

    def PurgeDeadLetters(
        self, request: pb.PurgeDeadLettersRequest, context: grpc.ServicerContext
    ) -> pb.PurgeDeadLettersResponse:
        deleted = self.deliveries.purge_ended(request.older_than_days)
        return pb.PurgeDeadLettersResponse(deleted=sum(deleted.values()))

    def GetBreakers(self, request: pb.GetBreakersRequest, context: grpc.ServicerContext) -> pb.GetBreakersResponse:
        return pb.GetBreakersResponse(breakers=[breaker_message(b) for b in self.deliveries.breaker_states()])

    def ResetBreaker(self, request: pb.ResetBreakerRequest, context: grpc.ServicerContext) -> pb.Breaker:
        return breaker_message(self.deliveries.reset_breaker(request.name))

    def Diagnose(
        self, request: diagnostics_pb2.DiagnoseRequest, context: grpc.ServicerContext
    ) -> diagnostics_pb2.DiagnosticsReport:
        return self.diagnostics.report()
