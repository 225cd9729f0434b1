"""The consent service as the notifier sees it: one question, asked before every attempt of a marketing message."""
from __future__ import annotations

import grpc

from novahouse.consent.v1 import consent_pb2, consent_pb2_grpc


class ConsentUnavailable(RuntimeError):
    """Consent did not answer: a marketing message waits (it is neither sent nor cancelled)."""


class ConsentClient:
    def __init__(self, channel: grpc.Channel, timeout_s: float):
        self._internal = consent_pb2_grpc.ConsentInternalStub(channel)  # type: ignore[no-untyped-call]  # generated without annotations
        self.timeout_s = timeout_s

    def marketing_allowed(self, email: str) -> bool:
        """Whether this person's marketing consent is on now; raises ConsentUnavailable when consent cannot say."""
        request = consent_pb2.GetMarketingConsentRequest(email=email)
        try:
            answer: consent_pb2.MarketingConsent = self._internal.GetMarketingConsent(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            raise ConsentUnavailable(f"consent: {code.name if code else 'UNKNOWN'}") from None
        return answer.allowed
