"""Input rules for consent requests: checked before anything is stored, each failure says what is wrong."""
from __future__ import annotations

import ipaddress
import re

from services.runtime.errors import ValidationError

MAX_EMAIL = 254
MAX_REASON = 1000
MAX_SHORT = 64      # text_version, source
MAX_ID = 128        # session, conversation, lead and request ids
MAX_USER_AGENT = 512

_LOCAL = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_EXCEPT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def normalise_email(raw: str) -> str:
    """Trimmed and lower-cased, then checked: the one form every lookup and hash uses."""
    email = (raw or "").strip().lower()
    if not email:
        raise ValidationError("email is required")
    if _CONTROL.search(email):
        raise ValidationError("email contains control characters")
    if len(email) > MAX_EMAIL:
        raise ValidationError(f"email is longer than {MAX_EMAIL} characters")
    local, at, domain = email.rpartition("@")
    if not at or not local or len(local) > 64 or not _LOCAL.match(local) or not _DOMAIN.match(domain):
        raise ValidationError("email is not a valid address")
    return email


def reason(raw: str) -> str:
    """Optional free text; line breaks and tabs are allowed, other control characters are not."""
    text = (raw or "").strip()
    if len(text) > MAX_REASON:
        raise ValidationError(f"reason is longer than {MAX_REASON} characters")
    if _CONTROL_EXCEPT_LINES.search(text):
        raise ValidationError("reason contains control characters")
    return text


def identifier(field: str, raw: str, limit: int = MAX_ID, required: bool = False) -> str:
    text = (raw or "").strip()
    if required and not text:
        raise ValidationError(f"{field} is required")
    if len(text) > limit:
        raise ValidationError(f"{field} is longer than {limit} characters")
    if _CONTROL.search(text):
        raise ValidationError(f"{field} contains control characters")
    return text


def client_ip(raw: str) -> str:
    text = (raw or "").strip()
    if not text:
        return ""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValidationError("client_ip is not an IP address") from None


def user_agent(raw: str) -> str:
    """Browsers send long agents; keep the first MAX_USER_AGENT characters rather than refuse a consent."""
    text = _CONTROL.sub("", raw or "").strip()
    return text[:MAX_USER_AGENT]
