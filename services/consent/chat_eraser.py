"""The gRPC call that asks the chat service to erase a person (ChatInternal.EraseSubject at CHAT_ADDR)."""
from __future__ import annotations

import grpc

from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from services.consent.erasure import ErasureFailed


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
