"""Real gRPC servers that stand in for the consent and notifier services in the chat tests and benchmark.

They count what chat hands over without deduplicating it, so a duplicate sent by chat shows up as a duplicate
(the real notifier would hide it behind its idempotency keys). The end-to-end tests use the real services.
"""
from __future__ import annotations

import collections
import threading
from concurrent import futures

import grpc

from novahouse.consent.v1 import consent_pb2, consent_pb2_grpc
from novahouse.notifier.v1 import notifier_pb2, notifier_pb2_grpc


class RecordingNotifier(notifier_pb2_grpc.NotifierInternalServicer):
    """NotifierInternal that records every Notify call by idempotency key, and every ErasePerson."""

    def __init__(self):
        self.calls: collections.Counter[str] = collections.Counter()
        self.requests: dict[str, notifier_pb2.NotifyRequest] = {}
        self.erasures: list[notifier_pb2.ErasePersonRequest] = []
        self._lock = threading.Lock()

    def Notify(self, request, context):
        with self._lock:
            self.calls[request.idempotency_key] += 1
            self.requests[request.idempotency_key] = request
        return notifier_pb2.NotifyResponse(delivery_id=request.idempotency_key, status=notifier_pb2.PENDING)

    def ErasePerson(self, request, context):
        """An erasure that found no deliveries (the real notifier's is tested with the whole platform)."""
        with self._lock:
            self.erasures.append(request)
        return notifier_pb2.ErasureActions(erasure_id=request.erasure_id)

    def GetErasureActions(self, request, context):
        return notifier_pb2.ErasureActions(erasure_id=request.erasure_id)

    def keys(self, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(k for k in self.calls if k.startswith(prefix))


class ConsentBook(consent_pb2_grpc.ConsentServicer, consent_pb2_grpc.ConsentInternalServicer):
    """Consent and ConsentInternal over an in-memory book of who agreed to what."""

    def __init__(self):
        self.recorded: list[consent_pb2.RecordConsentRequest] = []
        self.status: dict[str, tuple[bool, bool]] = {}
        self._lock = threading.Lock()

    def RecordConsent(self, request, context):
        with self._lock:
            self.recorded.append(request)
            self.status[request.email] = (request.processing_consent, request.marketing_consent)
        return self.GetStatus(consent_pb2.GetStatusRequest(email=request.email), context)

    def Unsubscribe(self, request, context):
        with self._lock:
            processing, _ = self.status.get(request.email, (False, False))
            self.status[request.email] = (processing, False)
        return self.GetStatus(consent_pb2.GetStatusRequest(email=request.email), context)

    def GetStatus(self, request, context):
        with self._lock:
            processing, marketing = self.status.get(request.email, (False, False))
        return consent_pb2.ConsentStatus(email=request.email, processing_consent=processing,
                                         marketing_consent=marketing)

    def GetMarketingConsent(self, request, context):
        with self._lock:
            return consent_pb2.MarketingConsent(allowed=self.status.get(request.email, (False, False))[1])

    def IssueUnsubscribeLink(self, request, context):
        token = f"stand-in-{abs(hash(request.email)):x}"  # not a signed token: the real one is consent's
        return consent_pb2.UnsubscribeLink(url=f"http://127.0.0.1:8080/api/unsubscribe/one-click?token={token}")

    def allow_marketing(self, emails) -> None:
        with self._lock:
            for email in emails:
                self.status[email] = (True, True)


class PeerServer:
    """One gRPC server on a free port hosting the stand-ins; stop() and start() again on the same port."""

    def __init__(self, notifier: RecordingNotifier | None = None, consent: ConsentBook | None = None, port: int = 0):
        self.notifier = notifier or RecordingNotifier()
        self.consent = consent or ConsentBook()
        self.port = port
        self._server: grpc.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> PeerServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        notifier_pb2_grpc.add_NotifierInternalServicer_to_server(self.notifier, server)
        consent_pb2_grpc.add_ConsentServicer_to_server(self.consent, server)
        consent_pb2_grpc.add_ConsentInternalServicer_to_server(self.consent, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None

    def __enter__(self) -> PeerServer:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()
