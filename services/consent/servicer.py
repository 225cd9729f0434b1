"""Thin gRPC layer: proto in, domain call, proto out. Public, internal and admin services are separate classes."""
from __future__ import annotations

import json
from datetime import UTC

import grpc
from google.api import httpbody_pb2

from novahouse.common.v1 import diagnostics_pb2
from novahouse.consent.v1 import consent_pb2, consent_pb2_grpc
from services.consent import confirmation_page, unsubscribe_page, verification
from services.consent.chain import Verification
from services.consent.consent import ConsentService, ExportedEntry, Status, withdrawal_answer
from services.consent.erasure_report import ErasureReports, Report
from services.consent.person_export import PersonExport
from services.consent.phone_erasure import PhoneOnlyErasure
from services.consent.verification import Asked, VerifiedRequests
from services.runtime import request_context
from services.runtime.diagnostics import Diagnostics
from services.runtime.errors import ValidationError
from services.runtime.timestamps import to_timestamp


def status_proto(status: Status) -> consent_pb2.ConsentStatus:
    return consent_pb2.ConsentStatus(
        email=status.email,
        processing_consent=status.processing_consent,
        marketing_consent=status.marketing_consent,
        last_action=status.last_action,
        last_action_at=to_timestamp(status.last_action_at),
    )


def entry_proto(entry: ExportedEntry) -> consent_pb2.LedgerEntry:
    fields = {**vars(entry), "recorded_at": to_timestamp(entry.recorded_at)}
    return consent_pb2.LedgerEntry(**fields)


def verification_proto(result: Verification) -> consent_pb2.VerifyLedgerResponse:
    return consent_pb2.VerifyLedgerResponse(
        ok=result.ok, entries_checked=result.entries_checked, first_bad_seq=result.first_bad_seq,
        problem=result.problem, checkpoint_seq=result.checkpoint_seq,
        checkpoint_at=to_timestamp(result.checkpoint_at), truncation_window_s=result.truncation_window_s,
        state_mismatches=list(result.state_mismatches),
    )


def erasure_report_proto(report: Report) -> consent_pb2.ErasureReport:
    return consent_pb2.ErasureReport(
        request_id=report.request_id, status=report.status, requested_at=to_timestamp(report.requested_at),
        completed_at=to_timestamp(report.completed_at),
        steps=[
            consent_pb2.ErasureStep(system=s.system, action=s.action, outcome=s.outcome, detail=s.detail,
                                    at=to_timestamp(s.at))
            for s in report.steps
        ],
    )


def asked_proto(asked: Asked) -> consent_pb2.ConsentStatus:
    return consent_pb2.ConsentStatus(email=asked.email, message=asked.message)


class ConsentServicer(consent_pb2_grpc.ConsentServicer):
    def __init__(self, consent: ConsentService, verified: VerifiedRequests):
        self.consent = consent
        self.verified = verified

    def Unsubscribe(
        self, request: consent_pb2.UnsubscribeRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ConsentStatus:
        caller = request_context.caller(context)
        status = self.consent.unsubscribe(request.email, request.reason, request.request_id, caller)
        return status_proto(withdrawal_answer(status))

    def RevokeConsent(
        self, request: consent_pb2.RevokeConsentRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ConsentStatus:
        return asked_proto(self.verified.ask(request.email, verification.ERASE, request.reason))

    def GetStatus(
        self, request: consent_pb2.GetStatusRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ConsentStatus:
        return asked_proto(self.verified.ask(request.email, verification.STATUS))

    def RequestExport(
        self, request: consent_pb2.RequestExportRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ConsentStatus:
        return asked_proto(self.verified.ask(request.email, verification.EXPORT))

    def ShowConfirmation(
        self, request: consent_pb2.ShowConfirmationRequest, context: grpc.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        claim = self.verified.check(request.token)
        return httpbody_pb2.HttpBody(
            content_type=confirmation_page.CONTENT_TYPE,
            data=confirmation_page.render_confirmation(request.token, claim.action),
        )

    def Confirm(self, request: consent_pb2.ConfirmRequest, context: grpc.ServicerContext) -> httpbody_pb2.HttpBody:
        content_type, data = confirmation_page.render_done(
            self.verified.confirm(request.token, request_context.caller(context))
        )
        return httpbody_pb2.HttpBody(content_type=content_type, data=data)

    def ShowOneClickUnsubscribe(
        self, request: consent_pb2.ShowOneClickUnsubscribeRequest, context: grpc.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        self.consent.check_unsubscribe_token(request.token)
        return httpbody_pb2.HttpBody(
            content_type=unsubscribe_page.CONTENT_TYPE, data=unsubscribe_page.render(request.token)
        )

    def OneClickUnsubscribe(
        self, request: consent_pb2.OneClickUnsubscribeRequest, context: grpc.ServicerContext
    ) -> consent_pb2.OneClickUnsubscribeResponse:
        caller = request_context.caller(context)
        marketing = self.consent.one_click_unsubscribe(request.token, caller)
        return consent_pb2.OneClickUnsubscribeResponse(
            marketing_consent=marketing, message="You will receive no more marketing emails from NovaHouse."
        )


class ConsentInternalServicer(consent_pb2_grpc.ConsentInternalServicer):
    def __init__(self, consent: ConsentService):
        self.consent = consent

    def RecordConsent(
        self, request: consent_pb2.RecordConsentRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ConsentStatus:
        return status_proto(
            self.consent.record_consent(
                request.email,
                processing_consent=request.processing_consent,
                marketing_consent=request.marketing_consent,
                text_version=request.text_version,
                source=request.source,
                session_id=request.session_id,
                conversation_id=request.conversation_id,
                lead_id=request.lead_id,
                request_id=request.request_id,
                origin=request_context.Caller(request.client_ip, request.user_agent),
                stated_at=request.stated_at.ToDatetime(tzinfo=UTC) if request.HasField("stated_at") else None,
                consent_text=request.consent_text,
                language=request.language,
            )
        )

    def GetMarketingConsent(
        self, request: consent_pb2.GetMarketingConsentRequest, context: grpc.ServicerContext
    ) -> consent_pb2.MarketingConsent:
        return consent_pb2.MarketingConsent(allowed=self.consent.marketing_allowed(request.email))

    def IssueUnsubscribeLink(
        self, request: consent_pb2.IssueUnsubscribeLinkRequest, context: grpc.ServicerContext
    ) -> consent_pb2.UnsubscribeLink:
        return consent_pb2.UnsubscribeLink(url=self.consent.unsubscribe_link(request.email))


class ConsentAdminServicer(consent_pb2_grpc.ConsentAdminServicer):
    def __init__(
        self, consent: ConsentService, diagnostics: Diagnostics, person_export: PersonExport,
        phone_erasure: PhoneOnlyErasure, erasure_reports: ErasureReports,
    ):
        self.consent = consent
        self.diagnostics = diagnostics
        self.person_export = person_export
        self.phone_erasure = phone_erasure
        self.erasure_reports = erasure_reports

    def ExportPerson(
        self, request: consent_pb2.ExportPersonRequest, context: grpc.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        if bool(request.email.strip()) == bool(request.phone.strip()):
            raise ValidationError("give exactly one of email or phone")
        if request.phone.strip():
            document = self.person_export.export_by_phone(request.phone)
        else:
            document = self.person_export.export(request.email)
        return httpbody_pb2.HttpBody(
            content_type="application/json", data=json.dumps(document, ensure_ascii=False, indent=2).encode()
        )

    def ErasePhoneOnly(
        self, request: consent_pb2.ErasePhoneOnlyRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ErasePhoneOnlyResponse:
        done = self.phone_erasure.erase(
            request.phone, request.operator, request.identity_check_reference, request.request_id
        )
        return consent_pb2.ErasePhoneOnlyResponse(
            request_id=done.request_id, conversations=done.conversations,
            messages_erased=done.messages_erased, leads_anonymised=done.leads_anonymised,
        )

    def GetErasureReport(
        self, request: consent_pb2.GetErasureReportRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ErasureReport:
        return erasure_report_proto(self.erasure_reports.report(request.email, request.request_id))

    def ExportSubject(
        self, request: consent_pb2.ExportSubjectRequest, context: grpc.ServicerContext
    ) -> consent_pb2.ExportSubjectResponse:
        email, entries = self.consent.export(request.email)
        return consent_pb2.ExportSubjectResponse(email=email, entries=[entry_proto(e) for e in entries])

    def VerifyLedger(
        self, request: consent_pb2.VerifyLedgerRequest, context: grpc.ServicerContext
    ) -> consent_pb2.VerifyLedgerResponse:
        return verification_proto(self.consent.verify())

    def Diagnose(
        self, request: diagnostics_pb2.DiagnoseRequest, context: grpc.ServicerContext
    ) -> diagnostics_pb2.DiagnosticsReport:
        return self.diagnostics.report()
