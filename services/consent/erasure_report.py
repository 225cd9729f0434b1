"""What an erasure did in every system and when (ConsentAdmin.GetErasureReport, the operator's proof of Art. 17/19).

The steps consent carried out are stored (erasure_steps: chat's records found and erased, the notifier's deliveries
redacted, the ledger's erasure-completed and the key destroyed). What the processors did is asked of the notifier
live, so a Monday.com or Slack delete still being retried shows as pending and then done: one step per delivery
that carried the person's data out (delete-item, delete-message, remove-manually with the message reference,
already-sent for an email).

A person is found by their email after their key is destroyed through a keyed hash of the address under the
report's own label (erasure.lookup_hash); an erasure by phone by the request id ErasePhoneOnly returned. The report
is "completed" once the ledger step is done and no processor action is pending or failed.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.consent import validation
from services.consent.crypto import SubjectCrypto
from services.consent.erasure import lookup_hash
from services.consent.erasure_steps import (
    COMPLETED,
    DONE,
    LEDGER,
    NOTIFIER,
    ErasureFailed,
    NotifierErase,
    ProcessorAction,
)
from services.consent.storage import ErasureRecords, PendingErasures
from services.runtime.errors import NotFoundError, UnavailableError, ValidationError

PENDING, COMPLETE = "pending", "completed"
UNFINISHED = ("pending", "failed")


@dataclass(frozen=True)
class ReportStep:
    system: str
    action: str
    outcome: str
    detail: str
    at: datetime | None


@dataclass(frozen=True)
class Report:
    request_id: str
    status: str
    requested_at: datetime
    completed_at: datetime | None
    steps: list[ReportStep]


def _processor_step(action: ProcessorAction) -> ReportStep:
    detail = f"delivery {action.delivery_id}"
    if action.external_id:
        detail += f", {'item' if action.system == 'monday' else 'message'} {action.external_id}"
    if action.follow_up_delivery_id:
        detail += f", retried as delivery {action.follow_up_delivery_id}"
    return ReportStep(action.system, action.action, action.status, detail, action.updated_at)


class ErasureReports:
    def __init__(self, records: ErasureRecords, pending: PendingErasures, crypto: SubjectCrypto,
                 notifier: NotifierErase):
        self.records = records
        self.pending = pending
        self.crypto = crypto
        self.notifier = notifier

    def report(self, email: str = "", request_id: str = "") -> Report:
        """The report of the person's latest erasure (by email) or of one erasure (by request id)."""
        if bool(email.strip()) == bool(request_id.strip()):
            raise ValidationError("give exactly one of email or request_id")
        if request_id.strip():
            record = self.records.by_request(validation.identifier("request_id", request_id, required=True))
        else:
            normalised = validation.normalise_email(email)
            record = self.records.latest_by_lookup(lookup_hash(self.crypto, normalised))
            if record is None:  # revoked and confirmed, but the erasure has not yet been recorded as started
                queued = self.pending.open_for_subject(self.crypto.subject_hash(normalised))
                if queued is not None:
                    return Report(queued[0], PENDING, queued[1], None, [])
        if record is None:
            raise NotFoundError("no erasure on record for this email or request id")

        stored = self.records.steps(record.request_id)
        steps = [ReportStep(s.system, s.action, s.outcome, s.detail, s.at) for s in stored]
        for reference in sorted({s.reference for s in stored if s.system == NOTIFIER and s.reference}):
            try:
                actions = self.notifier.actions(reference).actions
            except ErasureFailed as exc:
                raise UnavailableError(f"{exc}: the processors' part of the report is unknown, retry") from None
            steps += [_processor_step(a) for a in actions]
        finished = any(s.system == LEDGER and s.action == COMPLETED and s.outcome == DONE for s in steps)
        finished = finished and record.completed_at is not None
        finished = finished and not any(s.outcome in UNFINISHED for s in steps)
        completed_at = max((s.at for s in steps if s.at is not None), default=None) if finished else None
        return Report(record.request_id, COMPLETE if finished else PENDING, record.requested_at, completed_at, steps)
