"""The notifier as the consent service sees it: verification emails, a service message the person asked for."""
from __future__ import annotations

import grpc

from novahouse.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from services.runtime.errors import UnavailableError


class Mailer:
    def __init__(self, channel: grpc.Channel, timeout_s: float):
        self._stub = notifier_pb2_grpc.NotifierInternalStub(channel)  # type: ignore[no-untyped-call]  # generated without annotations
        self.timeout_s = timeout_s

    def service_email(self, key: str, to: str, subject: str, body: str) -> None:
        """Queue an email the person asked for (PURPOSE_SERVICE: sent without asking marketing consent); the
        notifier retries it. UnavailableError when the notifier did not take it."""
        request = notifier_pb2.NotifyRequest(
            idempotency_key=key, email=notifier_pb2.Email(to=to, subject=subject, body=body),
            purpose=notifier_pb2.PURPOSE_SERVICE,
        )
        try:
            self._stub.Notify(request, timeout=self.timeout_s)
        except grpc.RpcError:
            raise UnavailableError("the confirmation email could not be sent; retry shortly") from None
