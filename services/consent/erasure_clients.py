"""The gRPC calls an erasure makes (erasure_steps): chat's ExportSubject and EraseSubject at CHAT_ADDR, the
notifier's ErasePerson and GetErasureActions at NOTIFIER_ADDR, each with a deadline.

A malformed phone or address is the caller's mistake (ValidationError); any other failure raises ErasureFailed
naming the call and its status code, which is all that is stored or logged about it.
"""
from __future__ import annotations

from datetime import UTC

import grpc

from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from novahouse.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from services.consent.erasure_steps import ChatCounts, ErasureFailed, NotifierErasure, PersonToErase, ProcessorAction
from services.consent.export_clients import holdings
from services.consent.person_export import ChatHoldings
from services.runtime.errors import ValidationError

_SYSTEMS = {notifier_pb2.SLACK: "slack", notifier_pb2.MONDAY: "monday", notifier_pb2.EMAIL: "email"}


def _failed(call: str, exc: grpc.RpcError) -> Exception:
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return ValidationError(exc.details() or "invalid request")
    return ErasureFailed(f"{call}: {exc.code().name}")


class ChatEraser:
    """lookup(email, phone) -> what chat holds and links (one of the two given); __call__(email, phone,
    request_id) -> the counts of chat's erasure, once per request id."""

    def __init__(self, channel: grpc.Channel, timeout_s: float = 10.0):
        self._stub = chat_pb2_grpc.ChatInternalStub(channel)  # type: ignore[no-untyped-call]  # generated without annotations
        self._timeout_s = timeout_s

    def lookup(self, email: str, phone: str = "") -> ChatHoldings:
        try:
            found: chat_pb2.SubjectExport = self._stub.ExportSubject(
                chat_pb2.ExportSubjectRequest(email=email, phone=phone), timeout=self._timeout_s
            )
        except grpc.RpcError as exc:
            raise _failed("chat ExportSubject", exc) from None
        return holdings(found)

    def __call__(self, email: str, phone: str, request_id: str) -> ChatCounts:
        request = chat_pb2.EraseSubjectRequest(email=email, phone=phone, request_id=request_id)
        try:
            done: chat_pb2.EraseSubjectResponse = self._stub.EraseSubject(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise _failed("chat EraseSubject", exc) from None
        return ChatCounts(done.conversations, done.messages_erased, done.leads_anonymised)


def _erasure(answer: notifier_pb2.ErasureActions) -> NotifierErasure:
    return NotifierErasure(
        deliveries_redacted=answer.deliveries_redacted,
        actions=[
            ProcessorAction(
                system=_SYSTEMS.get(action.destination, "unknown"), action=action.action, status=action.status,
                delivery_id=action.delivery_id, external_id=action.external_id,
                follow_up_delivery_id=action.follow_up_delivery_id,
                updated_at=action.updated_at.ToDatetime(tzinfo=UTC) if action.HasField("updated_at") else None,
            )
            for action in answer.actions
        ],
    )


class NotifierEraser:
    """erase(person) -> the notifier's erasure (redactions and the processors' actions); actions(erasure id) ->
    the same with each action's current status."""

    def __init__(self, channel: grpc.Channel, timeout_s: float = 10.0):
        self._stub = notifier_pb2_grpc.NotifierInternalStub(channel)  # type: ignore[no-untyped-call]  # generated without annotations
        self._timeout_s = timeout_s

    def erase(self, person: PersonToErase) -> NotifierErasure:
        request = notifier_pb2.ErasePersonRequest(
            erasure_id=person.erasure_id, email=person.email, phones=person.phones, lead_ids=person.lead_ids,
            session_ids=person.session_ids, conversation_ids=person.conversation_ids, names=person.names,
        )
        try:
            answer: notifier_pb2.ErasureActions = self._stub.ErasePerson(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise _failed("notifier ErasePerson", exc) from None
        return _erasure(answer)

    def actions(self, erasure_id: str) -> NotifierErasure:
        request = notifier_pb2.GetErasureActionsRequest(erasure_id=erasure_id)
        try:
            answer: notifier_pb2.ErasureActions = self._stub.GetErasureActions(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise _failed("notifier GetErasureActions", exc) from None
        return _erasure(answer)
