"""Tokens for what only the person may ask (erasure, seeing their status): proof of control of the mailbox.

A token is emailed to the address the request named; holding it proves the requester reads that mailbox. It
names the address and the action, has its own id (so it is used once: storage.ActionRecords) and expires.

Format: "<payload>.<mac>", both base64url. The payload is AES-GCM encrypted, so the address never appears in a link
(links end up in browser histories and proxies' logs); the MAC is an HMAC over it. Both keys are derived from
CONSENT_HMAC_KEY with labels of their own: an action token is never an email's keyed hash nor a one-click token,
and a new CONSENT_HMAC_KEY voids every token issued before.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENCRYPTION_LABEL = b"novahouse/verified-action/encryption/v1"
MAC_LABEL = b"novahouse/verified-action/mac/v1"
THROTTLE_LABEL = b"novahouse/verified-action/throttle/v1"
_NONCE_BYTES = 12
_MAX_TOKEN_CHARS = 8192  # the reason (up to 1000 characters) travels inside


class InvalidToken(ValueError):
    """Not a token this service signed, or altered since."""


class ExpiredToken(ValueError):
    """Signed here, but past its expiry."""


@dataclass(frozen=True)
class ActionClaim:
    """What a valid token says: who (the normalised address) may do what, until when; token_id makes it single-use."""

    token_id: str
    email: str
    action: str
    expires_at: datetime
    reason: str = ""  # why the person asked, recorded with the action


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ActionTokens:
    def __init__(self, hmac_key: bytes, ttl: timedelta):
        self._aead = AESGCM(hmac.new(hmac_key, ENCRYPTION_LABEL, hashlib.sha256).digest())
        self._mac_key = hmac.new(hmac_key, MAC_LABEL, hashlib.sha256).digest()
        self._throttle_key = hmac.new(hmac_key, THROTTLE_LABEL, hashlib.sha256).digest()
        self.ttl = ttl

    def issue(self, email: str, action: str, now: datetime, reason: str = "") -> ActionClaim:
        """A new claim for `email` (already normalised) to do `action`, valid for the configured time."""
        return ActionClaim(uuid.uuid4().hex, email, action, now + self.ttl, reason)

    def address_hash(self, email: str) -> str:
        """The keyed hash the throttle counts an address by: not the subjects' hash, so it links to no record."""
        return hmac.new(self._throttle_key, email.encode(), hashlib.sha256).hexdigest()

    def seal(self, claim: ActionClaim) -> str:
        plain = json.dumps(
            {"i": claim.token_id, "e": claim.email, "a": claim.action, "x": int(claim.expires_at.timestamp()),
             "r": claim.reason},
            separators=(",", ":"), ensure_ascii=False,
        ).encode()
        nonce = os.urandom(_NONCE_BYTES)
        payload = _b64(nonce + self._aead.encrypt(nonce, plain, MAC_LABEL))
        return f"{payload}.{self._mac(payload)}"

    def open(self, token: str, now: datetime) -> ActionClaim:
        """The claim a token carries; InvalidToken when it was not signed here or was altered, ExpiredToken after
        its expiry."""
        payload, dot, mac = token.partition(".")
        if not dot or not payload or len(token) > _MAX_TOKEN_CHARS:
            raise InvalidToken("not a token")
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidToken("bad signature")
        try:
            sealed = _unb64(payload)
            plain = self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], MAC_LABEL)
            fields = json.loads(plain)
            claim = ActionClaim(
                str(fields["i"]), str(fields["e"]), str(fields["a"]), datetime.fromtimestamp(int(fields["x"]), UTC),
                str(fields["r"]),
            )
        except (binascii.Error, ValueError, InvalidTag, KeyError, TypeError):
            raise InvalidToken("unreadable payload") from None
        if now >= claim.expires_at:
            raise ExpiredToken("expired")
        return claim

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._mac_key, payload.encode(), hashlib.sha256).digest())
