"""Erasing a person who gave only a phone (GDPR Art. 17), on an operator's request after the identity check that
docs/privacy/verified-requests.md describes. Consent keys people by email, so nothing of its own is touched: chat
erases the conversations and leads that captured the phone, exactly as it erases by email. The operator and the
reference of the identity check are required and logged with the counts and the request id, never the phone. The
same request id again erases once and returns the first counts.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Protocol

from services.runtime.errors import ValidationError
from services.runtime.request_context import new_request_id

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class PhoneEraser(Protocol):
    def __call__(self, phone: str, request_id: str) -> tuple[int, int, int]: ...


@dataclass(frozen=True)
class PhoneErasure:
    request_id: str
    conversations: int
    messages_erased: int
    leads_anonymised: int


def _required(value: str, what: str) -> str:
    value = (value or "").strip()
    if not value or len(value) > 200:
        raise ValidationError(f"{what} is required (at most 200 characters)")
    return value


class PhoneOnlyErasure:
    def __init__(self, erase_in_chat: PhoneEraser):
        self.erase_in_chat = erase_in_chat

    def erase(self, phone: str, operator: str, identity_check_reference: str, request_id: str) -> PhoneErasure:
        operator = _required(operator, "operator")
        reference = _required(identity_check_reference, "identity_check_reference")
        request_id = (request_id or "").strip() or f"phone-only:{new_request_id()}"
        if not _REQUEST_ID.match(request_id):
            raise ValidationError("request_id: at most 64 letters, digits, '.', '_', ':' or '-'")
        conversations, messages, leads = self.erase_in_chat(phone, request_id)
        log.info(
            "phone-only erasure done: %d conversations, %d messages erased, %d leads anonymised",
            conversations, messages, leads,
            extra={"operator": operator, "identity_check_reference": reference, "erasure_request_id": request_id},
        )
        return PhoneErasure(request_id, conversations, messages, leads)
