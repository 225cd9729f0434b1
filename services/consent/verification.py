"""Verified requests: what only the person may do (erase their data, see their consent status, export everything
held about them) needs proof that they read the mailbox. No gRPC types and no SQL here.

The public request never acts: it emails a link carrying a signed, single-use, expiring token (action_tokens) to
the address it names, and answers the same for every address, known or not, doing the same work either way (it
never looks the address up). The link opens a confirmation page; opening it changes and reveals nothing (mail
scanners open links on their own). Only that page's POST uses the token and carries out the request.

Verification emails are throttled per address: past CONSENT_VERIFICATION_EMAILS_PER_HOUR within an hour the
request answers as usual and sends nothing (logged with the address's keyed hash, never the address).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import quote

from services.consent import validation
from services.consent.action_tokens import ActionClaim, ActionTokens, ExpiredToken, InvalidToken
from services.consent.consent import ConsentService, Status
from services.consent.storage import ActionRecords, outage_as_unavailable
from services.runtime.clock import utcnow
from services.runtime.errors import UnavailableError, ValidationError
from services.runtime.request_context import Caller

log = logging.getLogger(__name__)

ERASE, STATUS, EXPORT = "erase", "status", "export"
CONFIRM_PATH = "/api/confirm"
THROTTLE_WINDOW = timedelta(hours=1)
ASKED_MESSAGE = (
    "If this address can receive email, a link to confirm the request is on its way to it; it works once, for "
    "{minutes} minutes. Nothing happens until the link's page is confirmed."
)

_EMAILS = {
    ERASE: (
        "Confirm the erasure of your data at NovaHouse",
        "Someone, hopefully you, asked NovaHouse to erase every personal detail it holds about this address and to "
        "withdraw all consent given with it.",
        "erase your data",
    ),
    STATUS: (
        "Your consent status at NovaHouse",
        "Someone, hopefully you, asked to see which consents NovaHouse holds for this address.",
        "see your consent status",
    ),
    EXPORT: (
        "Your data at NovaHouse",
        "Someone, hopefully you, asked for a copy of everything NovaHouse holds about this address.",
        "download your data",
    ),
}


class ServiceMail(Protocol):
    """Where verification emails go: mailer.Mailer (the notifier) in the service."""

    def service_email(self, key: str, to: str, subject: str, body: str) -> None: ...


@dataclass(frozen=True)
class Asked:
    """The answer to a request without a token: the same for every address."""

    email: str
    message: str


@dataclass(frozen=True)
class Done:
    """What a confirmed request did: the erasure started (the status after the revoke), the status shown, or the
    export document."""

    action: str
    status: Status
    document: dict[str, Any] | None = None


class VerifiedRequests:
    def __init__(
        self,
        consent: ConsentService,
        tokens: ActionTokens,
        records: ActionRecords,
        mailer: ServiceMail,
        export: Callable[[str], dict[str, Any]],
        public_base_url: str,
        emails_per_hour: int,
    ):
        self.consent = consent
        self.tokens = tokens
        self.records = records
        self.mailer = mailer
        self.export = export
        self.public_base_url = public_base_url.rstrip("/")
        self.emails_per_hour = emails_per_hour

    def ask(self, email: str, action: str, reason: str = "") -> Asked:
        """Email a confirmation link for `action` to `email` (unless throttled); never looks the address up."""
        email = validation.normalise_email(email)
        reason = validation.reason(reason)
        now = utcnow()
        address_hash = self.tokens.address_hash(email)
        claim = self.tokens.issue(email, action, now, reason)
        with outage_as_unavailable():
            sent = self.records.emails_since(address_hash, now - THROTTLE_WINDOW)
        if sent >= self.emails_per_hour:
            log.warning(
                "verification email not sent: %d already sent to this address within the hour", sent,
                extra={"address_hash": address_hash[:16], "action": action},
            )
        else:
            subject, body = self._email(claim)
            self.mailer.service_email(f"consent-verify:{claim.token_id}", email, subject, body)
            with outage_as_unavailable():
                self.records.record_email(address_hash, now, forget_before=now - THROTTLE_WINDOW)
        return Asked(email, ASKED_MESSAGE.format(minutes=self._minutes()))

    def check(self, token: str) -> ActionClaim:
        """The claim of a token that may still be used: signed here, unaltered, unexpired and unused; else
        ValidationError (400) saying which."""
        claim = self._open(token)
        with outage_as_unavailable():
            used = self.records.is_used(claim.token_id)
        if used:
            raise ValidationError("this link was already used; ask again for a new one")
        return claim

    def confirm(self, token: str, origin: Caller) -> Done:
        """Use the token and carry out its request; a refused token changes nothing."""
        claim = self._open(token)
        with outage_as_unavailable():
            first_use = self.records.use(claim.token_id, claim.action, claim.expires_at, utcnow())
        if not first_use:
            raise ValidationError("this link was already used; ask again for a new one")
        try:
            if claim.action == STATUS:
                return Done(STATUS, self.consent.status(claim.email))
            if claim.action == EXPORT:
                return Done(EXPORT, Status(claim.email), self.export(claim.email))
            status = self.consent.revoke(
                claim.email, claim.reason or "confirmed from the emailed link", f"verified-{claim.token_id}", origin
            )
        except UnavailableError:
            with outage_as_unavailable():
                self.records.release(claim.token_id)  # nothing was done: the same link may be tried again
            raise
        return Done(ERASE, status)

    def _open(self, token: str) -> ActionClaim:
        try:
            claim = self.tokens.open(token, utcnow())
        except ExpiredToken:
            raise ValidationError("this link has expired; ask again for a new one") from None
        except InvalidToken:
            raise ValidationError("this link is not valid; ask again for a new one") from None
        if claim.action not in _EMAILS:
            raise ValidationError("this link is not valid; ask again for a new one")
        return claim

    def _email(self, claim: ActionClaim) -> tuple[str, str]:
        subject, why, what = _EMAILS[claim.action]
        link = f"{self.public_base_url}{CONFIRM_PATH}?token={quote(self.tokens.seal(claim), safe='')}"
        body = (
            f"{why}\n\nTo {what}, open this link within {self._minutes()} minutes and press the button on the page "
            f"(the link works once):\n\n{link}\n\nIf you did not ask, ignore this email: nothing will change.\n"
        )
        return subject, body

    def _minutes(self) -> int:
        return int(self.tokens.ttl.total_seconds() // 60)
