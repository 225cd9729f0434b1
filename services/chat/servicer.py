"""gRPC servicers of the chat service: proto in, domain call, proto out. No logic lives here."""
from __future__ import annotations

import json
from collections.abc import Iterator

import grpc

from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from novahouse.common.v1 import diagnostics_pb2
from novahouse.health.v1 import health_pb2, health_pb2_grpc
from services.chat import export, privacy
from services.chat.app import ChatApp
from services.chat.conversation import ConsentPrompt, LeadProgress
from services.chat.platform_health import PlatformHealth
from services.runtime import request_context
from services.runtime.timestamps import to_timestamp

# The transcript's secret travels as a header (REST) / metadata (gRPC), never in the URL that access logs keep.
SESSION_SECRET_HEADER = "x-session-secret"


def _session_secret(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == SESSION_SECRET_HEADER and isinstance(value, str):
            return value
    return ""


def _lead(progress: LeadProgress) -> chat_pb2.LeadProgress:
    return chat_pb2.LeadProgress(
        captured=progress.captured,
        missing=progress.missing,
        complete=progress.complete,
        score=progress.score,
        lead_id=progress.lead_id,
    )


def _consent_prompt(prompt: ConsentPrompt | None) -> chat_pb2.ConsentPrompt | None:
    if prompt is None:
        return None
    return chat_pb2.ConsentPrompt(
        kind=prompt.kind, text=prompt.text, text_version=prompt.text_version, required=prompt.required,
        choices=[chat_pb2.ConsentChoice(label=c.label, value=c.value) for c in prompt.choices],
    )


class ChatServicer(chat_pb2_grpc.ChatServicer):
    def __init__(self, app: ChatApp):
        self.app = app

    def SendMessage(
        self, request: chat_pb2.SendMessageRequest, context: grpc.ServicerContext
    ) -> chat_pb2.SendMessageResponse:
        reply = self.app.chat.send_message(
            request.session_id,
            request.message,
            request.processing_consent if request.HasField("processing_consent") else None,
            request.marketing_consent if request.HasField("marketing_consent") else None,
            request_context.caller(context),
            request_person=request.request_person,
        )
        return chat_pb2.SendMessageResponse(
            session_id=reply.session_id,
            reply=reply.reply,
            language=reply.language,
            intent=reply.intent,
            lead=_lead(reply.lead),
            consent_prompt=_consent_prompt(reply.consent_prompt),
            session_secret=reply.session_secret,
            suggestions=[chat_pb2.Suggestion(topic=s.topic, label=s.label) for s in reply.suggestions],
            quick_replies=[chat_pb2.Suggestion(topic=s.topic, label=s.label) for s in reply.quick_replies],
            handoff=reply.handoff,
        )

    def GetConversation(
        self, request: chat_pb2.GetConversationRequest, context: grpc.ServicerContext
    ) -> chat_pb2.Conversation:
        transcript = self.app.chat.transcript(request.session_id, _session_secret(context))
        return chat_pb2.Conversation(
            session_id=transcript.session_id,
            created_at=to_timestamp(transcript.created_at),
            messages=[
                chat_pb2.ChatMessage(
                    role=m.role, text=m.text, created_at=to_timestamp(m.created_at), author=m.author, seq=m.seq
                )
                for m in transcript.messages
            ],
            lead=_lead(transcript.lead),
            consent_prompt=_consent_prompt(transcript.consent_prompt),
            handoff=transcript.handoff,
        )

    def WatchConversation(
        self, request: chat_pb2.WatchConversationRequest, context: grpc.ServicerContext
    ) -> Iterator[chat_pb2.ConversationEvent]:
        return self.app.streams.watch_conversation(
            request.session_id, request.after_seq, _session_secret(context), context
        )


class ChatInternalServicer(chat_pb2_grpc.ChatInternalServicer):
    def __init__(self, app: ChatApp):
        self.app = app

    def EraseSubject(
        self, request: chat_pb2.EraseSubjectRequest, context: grpc.ServicerContext
    ) -> chat_pb2.EraseSubjectResponse:
        result = privacy.erase_subject(
            self.app.db, request.email, request.request_id, request.phone, cache=self.app.cache
        )
        return chat_pb2.EraseSubjectResponse(
            conversations=result.conversations,
            messages_erased=result.messages_erased,
            leads_anonymised=result.leads_anonymised,
        )

    def ExportSubject(
        self, request: chat_pb2.ExportSubjectRequest, context: grpc.ServicerContext
    ) -> chat_pb2.SubjectExport:
        found = export.export_subject(self.app.db, request.email, request.phone)
        return chat_pb2.SubjectExport(
            document_json=json.dumps(found.document, ensure_ascii=False),
            lead_ids=found.lead_ids,
            session_ids=found.session_ids,
            conversation_ids=found.conversation_ids,
            phones=found.phones,
            emails=found.emails,
        )


class ChatAdminServicer(chat_pb2_grpc.ChatAdminServicer):
    def __init__(self, app: ChatApp):
        self.app = app

    def RunFollowups(
        self, request: chat_pb2.RunFollowupsRequest, context: grpc.ServicerContext
    ) -> chat_pb2.RunFollowupsResponse:
        self.app.leads.retry_pending()
        run = self.app.followups.run(limit=max(0, request.limit))
        return chat_pb2.RunFollowupsResponse(
            due=run.due,
            sent=run.sent,
            already_sent=run.already_sent,
            skipped_no_consent=run.skipped_no_consent,
            failed=run.failed,
        )

    def PurgeCache(
        self, request: chat_pb2.PurgeCacheRequest, context: grpc.ServicerContext
    ) -> chat_pb2.PurgeCacheResponse:
        return chat_pb2.PurgeCacheResponse(removed=self.app.cache.purge_expired())

    def PurgeRetention(
        self, request: chat_pb2.PurgeRetentionRequest, context: grpc.ServicerContext
    ) -> chat_pb2.PurgeRetentionResponse:
        settings = self.app.settings
        done = privacy.purge_retention(
            self.app.db,
            days=request.days or settings.retention_days,
            lead_days=request.lead_days or settings.lead_retention_days,
            batch_size=request.batch_size or settings.retention_batch,
        )
        return chat_pb2.PurgeRetentionResponse(deleted=done.conversations_deleted, leads_deleted=done.leads_deleted)

    def MarkCustomer(
        self, request: chat_pb2.MarkCustomerRequest, context: grpc.ServicerContext
    ) -> chat_pb2.MarkCustomerResponse:
        customer = privacy.mark_customer(self.app.db, request.lead_id, request.customer)
        return chat_pb2.MarkCustomerResponse(lead_id=request.lead_id.strip(), customer=customer)

    def Diagnose(
        self, request: diagnostics_pb2.DiagnoseRequest, context: grpc.ServicerContext
    ) -> diagnostics_pb2.DiagnosticsReport:
        return self.app.diagnostics.report()


class PlatformHealthServicer(health_pb2_grpc.PlatformHealthServicer):
    def __init__(self, health: PlatformHealth):
        self.health = health

    def Live(self, request: health_pb2.LiveRequest, context: grpc.ServicerContext) -> health_pb2.LiveResponse:
        return self.health.live()

    def Deep(self, request: health_pb2.DeepRequest, context: grpc.ServicerContext) -> health_pb2.DeepResponse:
        return self.health.deep()
