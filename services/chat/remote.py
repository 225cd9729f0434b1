"""The consent and notifier services as the chat domain sees them: plain Python calls over gRPC.

Every call has a short deadline; any failure becomes PeerUnavailable, which the callers treat as "try again later"
(the lead stays un-notified, the follow-up stays unclaimed), never as a failed visitor request.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from novahouse.consent.v1 import consent_pb2, consent_pb2_grpc
from novahouse.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from services.runtime.errors import UnavailableError

Response = TypeVar("Response", bound=Message)


_MONDAY_OPERATIONS = {"create": notifier_pb2.MONDAY_CREATE, "update": notifier_pb2.MONDAY_UPDATE}


class PeerUnavailable(UnavailableError):
    """The other service did not accept the call; nothing was handed over. Callers retry later; one that lets it
    through answers UNAVAILABLE (503) with a retry-after, never INTERNAL."""


def _call(peer: str, method: Callable[..., Response], request: Message, timeout: float) -> Response:
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        raise PeerUnavailable(f"{peer}: {code.name if code else 'UNKNOWN'}") from None


class ConsentClient:
    def __init__(self, channel: grpc.Channel, timeout_s: float):
        self._internal = consent_pb2_grpc.ConsentInternalStub(channel)  # type: ignore[no-untyped-call]  # generated without annotations
        self.timeout_s = timeout_s

    def record_consent(
        self,
        *,
        email: str,
        processing: bool,
        marketing: bool,
        text_version: str,
        consent_text: str,
        language: str,
        session_id: str,
        conversation_id: str,
        lead_id: str,
        client_ip: str,
        user_agent: str,
        request_id: str,
        stated_at: dt.datetime,
    ) -> None:
        """`stated_at`: when the visitor gave these answers; consent lets the latest statement win by this time."""
        request = consent_pb2.RecordConsentRequest(
            email=email,
            processing_consent=processing,
            marketing_consent=marketing,
            text_version=text_version,
            consent_text=consent_text,
            language=language,
            source="chat-widget",
            session_id=session_id,
            conversation_id=conversation_id,
            lead_id=lead_id,
            client_ip=client_ip,
            user_agent=user_agent,
            request_id=request_id,
        )
        request.stated_at.FromDatetime(stated_at)
        _call("consent", self._internal.RecordConsent, request, self.timeout_s)

    def marketing_allowed(self, email: str) -> bool:
        answer: consent_pb2.MarketingConsent = _call(
            "consent", self._internal.GetMarketingConsent, consent_pb2.GetMarketingConsentRequest(email=email),
            self.timeout_s,
        )
        return answer.allowed

    def unsubscribe_link(self, email: str) -> str:
        """The one-click unsubscribe URL for a marketing email to this person (signed by consent)."""
        link: consent_pb2.UnsubscribeLink = _call(
            "consent", self._internal.IssueUnsubscribeLink, consent_pb2.IssueUnsubscribeLinkRequest(email=email),
            self.timeout_s,
        )
        return link.url


class NotifierClient:
    def __init__(self, channel: grpc.Channel, timeout_s: float):
        self._stub = notifier_pb2_grpc.NotifierInternalStub(channel)  # type: ignore[no-untyped-call]  # generated without annotations
        self.timeout_s = timeout_s

    def _notify(self, request: notifier_pb2.NotifyRequest) -> None:
        _call("notifier", self._stub.Notify, request, self.timeout_s)

    def monday_item(
        self, key: str, item_name: str, columns: dict[str, str], *, operation: str = "create", lookup_key: str = ""
    ) -> None:
        """Create the item (adopting the one that holds `lookup_key`, so a retried create makes one item) or update
        the item that holds `lookup_key`."""
        item = notifier_pb2.MondayItem(
            item_name=item_name, column_values=columns, lookup_key=lookup_key,
            operation=_MONDAY_OPERATIONS[operation],
        )
        self._notify(
            notifier_pb2.NotifyRequest(
                idempotency_key=key, monday=item, purpose=notifier_pb2.PURPOSE_INTERNAL_ALERT
            )
        )

    def slack_alert(self, key: str, title: str, text: str, fields: dict[str, str]) -> None:
        alert = notifier_pb2.SlackAlert(title=title, text=text, fields=fields)
        self._notify(
            notifier_pb2.NotifyRequest(idempotency_key=key, slack=alert, purpose=notifier_pb2.PURPOSE_INTERNAL_ALERT)
        )

    def marketing_email(self, key: str, to: str, subject: str, body: str, unsubscribe_url: str) -> None:
        """A marketing email: the notifier asks consent before every attempt, and the headers let mail clients
        offer one-click unsubscribe (RFC 8058)."""
        headers = {"List-Unsubscribe": f"<{unsubscribe_url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
        email = notifier_pb2.Email(to=to, subject=subject, body=body, headers=headers)
        self._notify(
            notifier_pb2.NotifyRequest(idempotency_key=key, email=email, purpose=notifier_pb2.PURPOSE_MARKETING)
        )
