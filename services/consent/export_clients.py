"""The gRPC calls an access request makes: ChatInternal.ExportSubject (CHAT_ADDR) and
NotifierInternal.ExportDeliveries (NOTIFIER_ADDR), each with a deadline. A peer that does not answer raises
UnavailableError, so no export goes out with a part missing."""
from __future__ import annotations

import json
from typing import Any

import grpc

from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from novahouse.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from services.consent.person_export import ChatHoldings
from services.runtime.errors import UnavailableError, ValidationError


def _unavailable(peer: str, exc: grpc.RpcError) -> UnavailableError:
    return UnavailableError(f"{peer} did not answer ({exc.code().name}); no export was produced, retry shortly")


def holdings(found: chat_pb2.SubjectExport) -> ChatHoldings:
    """Chat's answer to ExportSubject as the consent service uses it (access requests and erasures alike)."""
    return ChatHoldings(
        document=json.loads(found.document_json or "{}"),
        lead_ids=list(found.lead_ids),
        session_ids=list(found.session_ids),
        conversation_ids=list(found.conversation_ids),
        phones=list(found.phones),
        emails=list(found.emails),
    )


class ChatExport:
    """Callable chat_export(email, phone) -> ChatHoldings: exactly one of the two; chat validates and normalises
    them (a malformed one raises ValidationError)."""

    def __init__(self, channel: grpc.Channel, timeout_s: float):
        self._stub = chat_pb2_grpc.ChatInternalStub(channel)  # type: ignore[no-untyped-call]  # generated without annotations
        self._timeout_s = timeout_s

    def __call__(self, email: str, phone: str = "") -> ChatHoldings:
        try:
            found: chat_pb2.SubjectExport = self._stub.ExportSubject(
                chat_pb2.ExportSubjectRequest(email=email, phone=phone), timeout=self._timeout_s
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise ValidationError(exc.details() or "invalid request") from None
            raise _unavailable("chat", exc) from None
        return holdings(found)


class DeliveriesExport:
    """Callable deliveries_export(email, phones, lead_ids, session_ids, conversation_ids) -> the deliveries."""

    def __init__(self, channel: grpc.Channel, timeout_s: float):
        self._stub = notifier_pb2_grpc.NotifierInternalStub(channel)  # type: ignore[no-untyped-call]  # generated without annotations
        self._timeout_s = timeout_s

    def __call__(
        self, email: str, phones: list[str], lead_ids: list[str], session_ids: list[str], conversation_ids: list[str]
    ) -> list[dict[str, Any]]:
        request = notifier_pb2.ExportDeliveriesRequest(
            email=email, phones=phones, lead_ids=lead_ids, session_ids=session_ids, conversation_ids=conversation_ids
        )
        try:
            found: notifier_pb2.DeliveriesExport = self._stub.ExportDeliveries(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise _unavailable("the notifier", exc) from None
        deliveries: list[dict[str, Any]] = json.loads(found.document_json)
        return deliveries
