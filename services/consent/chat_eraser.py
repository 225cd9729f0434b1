"""The gRPC call that asks the chat service to erase a person (ChatInternal.EraseSubject at CHAT_ADDR)."""
from __future__ import annotations

import grpc

from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from services.consent.erasure import ErasureFailed
from services.runtime.errors import UnavailableError, ValidationError


class ChatEraser:
    """Callable erase_in_chat(email, request_id): returns once chat confirms, raises ErasureFailed otherwise."""

    def __init__(self, channel: grpc.Channel, timeout_s: float = 10.0):
        self._stub = chat_pb2_grpc.ChatInternalStub(channel)  # type: ignore[no-untyped-call]  # generated without annotations
        self._timeout_s = timeout_s

    def __call__(self, email: str, request_id: str) -> None:
        try:
            self._stub.EraseSubject(
                chat_pb2.EraseSubjectRequest(email=email, request_id=request_id), timeout=self._timeout_s
            )
        except grpc.RpcError as exc:
            raise ErasureFailed(f"chat EraseSubject: {exc.code().name}") from None


class ChatPhoneEraser:
    """Callable erase_phone_in_chat(phone, request_id) -> (conversations, messages erased, leads anonymised).
    Chat validates the phone (ValidationError when malformed); UnavailableError when chat does not answer."""

    def __init__(self, channel: grpc.Channel, timeout_s: float = 10.0):
        self._stub = chat_pb2_grpc.ChatInternalStub(channel)  # type: ignore[no-untyped-call]  # generated without annotations
        self._timeout_s = timeout_s

    def __call__(self, phone: str, request_id: str) -> tuple[int, int, int]:
        try:
            done: chat_pb2.EraseSubjectResponse = self._stub.EraseSubject(
                chat_pb2.EraseSubjectRequest(phone=phone, request_id=request_id), timeout=self._timeout_s
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise ValidationError(exc.details() or "invalid request") from None
            raise UnavailableError(f"chat did not answer ({exc.code().name}); nothing was erased, retry") from None
        return done.conversations, done.messages_erased, done.leads_anonymised
