"""Erasing a person who gave only a phone (GDPR Art. 17), on an operator's request after the identity check that
docs/privacy/verified-requests.md describes. Consent keys people by email, so nothing of its own is touched; the
steps are those of an erasure after a revoke (erasure_steps): chat's records found by the phone in any format, the
notifier's deliveries about them redacted and the processors' copies deleted, chat's records erased; the report
(GetErasureReport by this request id) keeps what each did. The operator and the reference of the identity check
are required and logged with the counts and the request id, never the phone. The same request id again carries
out only what is left and returns chat's first counts.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from services.consent.erasure_journal import ErasureJournal, JournalEntry
from services.consent.erasure_steps import COMPLETED, DONE, LEDGER, Erasure, ErasureFailed, ErasureSteps
from services.consent.storage import ErasureRecords, StoredStep
from services.runtime.clock import utcnow
from services.runtime.errors import UnavailableError, ValidationError
from services.runtime.request_context import new_request_id

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


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
    def __init__(self, records: ErasureRecords, steps: ErasureSteps, journal: ErasureJournal):
        self.records = records
        self.steps = steps
        self.journal = journal

    def erase(self, phone: str, operator: str, identity_check_reference: str, request_id: str) -> PhoneErasure:
        operator = _required(operator, "operator")
        reference = _required(identity_check_reference, "identity_check_reference")
        request_id = (request_id or "").strip() or f"phone-only:{new_request_id()}"
        if not _REQUEST_ID.match(request_id):
            raise ValidationError("request_id: at most 64 letters, digits, '.', '_', ':' or '-'")
        if not (phone or "").strip():
            raise ValidationError("phone is required")
        audit = {"operator": operator, "identity_check_reference": reference, "erasure_request_id": request_id}
        try:
            counts = self.steps.run(Erasure(request_id, "phone", None, utcnow(), phone=phone))
        except ErasureFailed as exc:
            log.warning("phone-only erasure not finished; retry with the same request id",
                        extra={**audit, "error": str(exc)})
            raise UnavailableError(f"{exc}; retry with request_id {request_id}: what is done is not redone") from None
        now = utcnow()
        self.journal.record(JournalEntry(request_id, "phone", None, now))
        detail = "nothing on record: the ledger keys people by email"
        with self.records.db.engine.begin() as conn:
            self.records.record_step(request_id, StoredStep(LEDGER, COMPLETED, DONE, detail, "", now), conn)
            ErasureRecords.close(conn, request_id, now)
        log.info(
            "phone-only erasure done: %d conversations, %d messages erased, %d leads deleted",
            counts.conversations, counts.messages_erased, counts.leads_deleted, extra=audit,
        )
        return PhoneErasure(request_id, counts.conversations, counts.messages_erased, counts.leads_deleted)
