"""The sales inbox's RPCs against a real chat server (with the real consent and notifier services, Slack and
Monday.com at local receivers), on SQLite and on PostgreSQL: what agents see and do, what the visitor sees of it,
what reaches the Monday.com board, the agent audit and its erasure with the person, and bad input changing nothing.
Calls carry the x-staff-* metadata Envoy's JWT filter sets (the gateway's own tests check Envoy sets it)."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import threading
import uuid
from types import SimpleNamespace

import grpc
import pytest
from sqlalchemy import func, select, update

from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from services.chat.storage import AgentAction, Conversation, LeadOutbox
from services.runtime.clock import utcnow
from services.runtime.db import Database, sqlalchemy_url
from tests.chat.scripts import POLISH_HIGH_SCORE, as_person
from testsupport import backing
from testsupport.receivers import HttpReceiver, MondayBoard
from testsupport.stack import running_stack, sales_env
from testsupport.waiting import wait_for

ANNA = ("anna", "Anna Kowalska")
JAN = ("jan", "Jan Nowak")


def staff(agent: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    """The metadata Envoy sets on an Inbox call from a signed-in agent."""
    username, name = agent
    return (("x-staff-agent", username), ("x-staff-token-id", uuid.uuid4().hex), ("x-staff-name", name))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def platform(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"inbox-{request.param}")
    with contextlib.ExitStack() as stack:
        slack = stack.enter_context(HttpReceiver())
        monday = stack.enter_context(HttpReceiver(respond=MondayBoard))
        service_env: dict[str, dict[str, str]] = {"chat": {}}
        if request.param == "postgres":
            roles = stack.enter_context(backing.service_roles("inbox"))
            service_env = {svc: r.env(backing.TEST_DATABASE_URL) for svc, r in roles.items()}
            db = Database("chat", url=sqlalchemy_url(backing.TEST_DATABASE_URL), schema=roles["chat"].schema)
        else:
            db = Database("chat", url=f"sqlite:///{tmp / 'chat.db'}")
        service_env["chat"]["MONDAY_COLUMNS"] = "status=status_1"  # the board has a column for the lead's status
        gw = stack.enter_context(running_stack(tmp, env=sales_env(slack, monday), service_env=service_env,
                                               gateway=False))
        stack.callback(db.dispose)
        channel = grpc.insecure_channel(gw.stack.config.addr("chat"))
        stack.callback(channel.close)
        yield SimpleNamespace(
            db=db, board=monday.responder, chat=chat_pb2_grpc.ChatStub(channel),
            inbox=chat_pb2_grpc.InboxStub(channel), internal=chat_pb2_grpc.ChatInternalStub(channel),
            admin=chat_pb2_grpc.ChatAdminStub(channel),
        )


class Visitor:
    def __init__(self, platform):
        self.platform = platform
        self.session = ""
        self.secret = ""

    def say(self, message: str = "", **consent: bool) -> chat_pb2.SendMessageResponse:
        request = chat_pb2.SendMessageRequest(session_id=self.session, message=message, **consent)
        reply = self.platform.chat.SendMessage(request, timeout=30)
        self.session = self.session or reply.session_id
        self.secret = self.secret or reply.session_secret
        return reply

    def transcript(self) -> chat_pb2.Conversation:
        request = chat_pb2.GetConversationRequest(session_id=self.session)
        return self.platform.chat.GetConversation(request, metadata=(("x-session-secret", self.secret),), timeout=30)


def lead_of(platform, email: str) -> tuple[Visitor, str]:
    """A visitor who leaves a complete lead (score 100) under this email and a phone of their own."""
    visitor = Visitor(platform)
    phone = f"60{random.randint(1, 9)} {random.randint(100, 999)} {random.randint(100, 999)}"
    for line in as_person(POLISH_HIGH_SCORE, email, phone):
        visitor.say(line)
    stored = visitor.say(processing_consent=True, marketing_consent=True)
    assert stored.intent == "lead_stored", stored.reply
    return visitor, stored.lead.lead_id


def unique_email() -> str:
    return f"inbox.{uuid.uuid4().hex[:10]}@example.com"


def set_conversation(platform, session_id: str, **values) -> None:
    with platform.db.session() as s:
        s.execute(update(Conversation).where(Conversation.session_id == session_id).values(**values))


def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as failure:
        call()
    return failure.value.code(), failure.value.details() or ""


def test_waiting_conversations_oldest_first_with_their_waiting_time_and_live_ones_with_their_agent(platform):
    inbox = platform.inbox
    ewa, long_one, live = Visitor(platform), Visitor(platform), Visitor(platform)
    ewa.say("Jestem Ewa Nowak, ile kosztuje remont?")
    long_text = "Chciałabym zapytać o remont łazienki i kuchni w starym bloku z wielkiej płyty " * 4
    long_one.say(long_text)
    live.say("Dzień dobry")
    now = utcnow()
    set_conversation(platform, long_one.session, handoff="waiting", handoff_reason="button",
                     handoff_at=now - dt.timedelta(seconds=60))
    set_conversation(platform, ewa.session, handoff="waiting", handoff_reason="asked",
                     handoff_at=now - dt.timedelta(seconds=600))
    inbox.TakeOver(chat_pb2.InboxConversationRequest(conversation_id=live.session), metadata=staff(ANNA))

    listed = inbox.ListConversations(chat_pb2.ListConversationsRequest(), metadata=staff(JAN))
    mine = {ewa.session, long_one.session}
    waiting = [s for s in listed.waiting if s.conversation_id in mine]
    assert [s.conversation_id for s in waiting] == [ewa.session, long_one.session]
    first, second = waiting
    assert 600 <= first.waiting_seconds < 3600 and 60 <= second.waiting_seconds < 600
    assert (first.visitor, first.reason, first.handoff) == ("Ewa Nowak", "asked", "waiting")
    assert first.last_message == "Jestem Ewa Nowak, ile kosztuje remont?"
    assert second.last_message.endswith("…") and len(second.last_message) <= 140
    assert second.last_message.startswith("Chciałabym zapytać o remont łazienki")
    [taken] = [s for s in listed.live if s.conversation_id == live.session]
    assert (taken.agent, taken.handoff, taken.last_message) == ("anna", "agent", "Dzień dobry")
    only_waiting = inbox.ListConversations(chat_pb2.ListConversationsRequest(view="waiting"), metadata=staff(JAN))
    assert not only_waiting.live and {s.conversation_id for s in only_waiting.waiting} >= mine


def test_an_agent_takes_over_replies_and_hands_back_and_the_visitor_sees_it(platform):
    inbox, visitor = platform.inbox, Visitor(platform)
    visitor.say("Dzień dobry, ile kosztuje remont mieszkania?")
    conversation = chat_pb2.InboxConversationRequest(conversation_id=visitor.session)

    taken = inbox.TakeOver(conversation, metadata=staff(ANNA))
    assert (taken.summary.handoff, taken.summary.agent) == ("agent", "anna")
    silent = visitor.say("Halo, jest tam ktoś?")
    assert (silent.reply, silent.handoff) == ("", "agent")  # the bot leaves it to the agent
    sent = inbox.Reply(chat_pb2.AgentReplyRequest(conversation_id=visitor.session, text="Dzień dobry, tu Anna."),
                       metadata=staff(ANNA))
    assert (sent.role, sent.author, sent.text) == ("agent", "Anna Kowalska", "Dzień dobry, tu Anna.") and sent.seq
    seen = visitor.transcript()
    assert seen.handoff == "agent"
    assert [(m.role, m.author, m.text, m.seq) for m in seen.messages[-2:]] == [
        ("user", "", "Halo, jest tam ktoś?", sent.seq - 1),
        ("agent", "Anna Kowalska", "Dzień dobry, tu Anna.", sent.seq),
    ]
    with platform.db.session() as s:
        conv = s.scalars(select(Conversation).where(Conversation.session_id == visitor.session)).one()
        assert conv.taken_at is not None and conv.first_agent_reply_at is not None

    # Another agent can neither reply in it nor take it over; the refusal names who holds it and changes nothing.
    reply_by_jan = chat_pb2.AgentReplyRequest(conversation_id=visitor.session, text="Tu Jan")
    code, details = code_of(lambda: inbox.Reply(reply_by_jan, metadata=staff(JAN)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "anna" in details
    code, details = code_of(lambda: inbox.TakeOver(conversation, metadata=staff(JAN)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "anna" in details
    assert len(inbox.GetTranscript(conversation, metadata=staff(JAN)).messages) == len(seen.messages)

    back = inbox.HandBack(conversation, metadata=staff(ANNA))
    assert (back.summary.handoff, back.summary.agent) == ("", "")
    answered = visitor.say("Ile trwa remont?")
    assert answered.reply and answered.handoff == ""
    assert visitor.transcript().handoff == ""
    code, _ = code_of(lambda: inbox.Reply(
        chat_pb2.AgentReplyRequest(conversation_id=visitor.session, text="Jeszcze jedno"), metadata=staff(ANNA)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION  # handed back: take it over again first


def test_two_agents_taking_over_at_once_exactly_one_gets_the_conversation(platform):
    for _ in range(4):
        visitor = Visitor(platform)
        visitor.say("Chcę zapytać o wycenę")
        set_conversation(platform, visitor.session, handoff="waiting", handoff_reason="asked", handoff_at=utcnow())
        request = chat_pb2.InboxConversationRequest(conversation_id=visitor.session)
        start = threading.Barrier(2)
        outcomes: dict[str, object] = {}

        def take(agent, request=request, start=start, outcomes=outcomes):
            start.wait()
            try:
                outcomes[agent[0]] = platform.inbox.TakeOver(request, metadata=staff(agent), timeout=30)
            except grpc.RpcError as exc:
                outcomes[agent[0]] = exc

        threads = [threading.Thread(target=take, args=(agent,)) for agent in (ANNA, JAN)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [name for name, outcome in outcomes.items() if isinstance(outcome, chat_pb2.InboxConversation)]
        [loser] = [outcome for outcome in outcomes.values() if isinstance(outcome, grpc.RpcError)]
        assert len(winners) == 1 and loser.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert winners[0] in (loser.details() or "")
        held = platform.inbox.GetTranscript(request, metadata=staff(ANNA)).summary
        assert (held.handoff, held.agent) == ("agent", winners[0])
        with platform.db.session() as s:
            takes = s.scalar(select(func.count()).select_from(AgentAction).where(
                AgentAction.session_id == visitor.session, AgentAction.action == "take_over"))
        assert takes == 1


def item_of(platform, lead_id: str) -> tuple[str, dict]:
    """The board's one item for the lead."""
    board = platform.board

    def found():
        items = [(i, item) for i, item in list(board.items.items()) if item["column_values"].get("lead_id") == lead_id]
        return items if items else None

    items = wait_for(found, what="the lead's Monday.com item")
    assert len(items) == 1, items
    return items[0]


def outbox_size(platform, lead_id: str) -> int:
    with platform.db.session() as s:
        return s.scalar(select(func.count()).select_from(LeadOutbox).where(LeadOutbox.lead_id == lead_id)) or 0


def test_a_corrected_phone_reaches_the_same_monday_item_and_a_bad_value_changes_nothing(platform):
    inbox = platform.inbox
    visitor, lead_id = lead_of(platform, unique_email())
    item_id, _ = item_of(platform, lead_id)

    corrected = inbox.CorrectLead(chat_pb2.CorrectLeadRequest(lead_id=lead_id, fields={"phone": "+48 512 345 678"}),
                                  metadata=staff(ANNA))
    assert corrected.phone == "+48512345678" and corrected.score == 100 and corrected.complete
    wait_for(lambda: platform.board.items[item_id]["column_values"]["phone"] == "+48512345678",
             what="the corrected phone on the item")
    assert item_of(platform, lead_id)[0] == item_id  # updated, not a second item

    smaller = inbox.CorrectLead(chat_pb2.CorrectLeadRequest(lead_id=lead_id, fields={"area_m2": "40 m2"}),
                                metadata=staff(ANNA))
    assert (smaller.area_m2, smaller.score) == (40, 88)  # rescored: area 80+ m² (20 points) became 30-49 (8)
    wait_for(lambda: platform.board.items[item_id]["column_values"]["score"] == "88", what="the new score")
    cleared = inbox.CorrectLead(chat_pb2.CorrectLeadRequest(lead_id=lead_id, fields={"budget": ""}),
                                metadata=staff(ANNA))
    assert cleared.budget_amount == 0 and cleared.missing == ["budget"] and not cleared.complete

    queued = outbox_size(platform, lead_id)
    for fields, named in (
        ({"phone": "12"}, "phone"),
        ({"phone": "+48 600 100 200", "area_m2": "5"}, "area_m2"),  # one bad field: the good one is not taken either
        ({"email": "not an email"}, "email"),
        ({"start": "kiedyś tam"}, "start"),
        ({"colour": "red"}, "colour"),
        ({"email": "", "phone": ""}, "email or a phone"),
    ):
        code, details = code_of(lambda fields=fields: inbox.CorrectLead(
            chat_pb2.CorrectLeadRequest(lead_id=lead_id, fields=fields), metadata=staff(ANNA)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and named in details, (fields, details)
    listed = inbox.ListLeads(chat_pb2.ListLeadsRequest(), metadata=staff(ANNA)).leads
    [lead] = [x for x in listed if x.lead_id == lead_id]
    assert (lead.phone, lead.area_m2, lead.score) == ("+48512345678", 40, 63)
    assert outbox_size(platform, lead_id) == queued
    # The visitor writes again: the bot derives the lead from the conversation once more, and the agent's
    # corrections stay (the old phone, area and budget are neither stored again nor sent to Monday.com).
    visitor.say("Ile trwa remont łazienki?")
    [lead] = [x for x in inbox.ListLeads(chat_pb2.ListLeadsRequest(), metadata=staff(ANNA)).leads
              if x.lead_id == lead_id]
    assert (lead.phone, lead.area_m2, lead.budget_amount) == ("+48512345678", 40, 0)
    assert outbox_size(platform, lead_id) == queued
    code, _ = code_of(lambda: inbox.CorrectLead(
        chat_pb2.CorrectLeadRequest(lead_id="0" * 32, fields={"phone": "600 100 200"}), metadata=staff(ANNA)))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = code_of(lambda: inbox.CorrectLead(
        chat_pb2.CorrectLeadRequest(lead_id="nope", fields={"phone": "600 100 200"}), metadata=staff(ANNA)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_today_s_leads_newest_first_and_their_status(platform):
    inbox = platform.inbox
    _, older = lead_of(platform, unique_email())
    _, newer = lead_of(platform, unique_email())
    listed = [lead for lead in inbox.ListLeads(chat_pb2.ListLeadsRequest(), metadata=staff(JAN)).leads
              if lead.lead_id in (older, newer)]
    assert [lead.lead_id for lead in listed] == [newer, older]
    assert all(lead.status == "new" and lead.score == 100 and lead.complete and not lead.missing for lead in listed)
    assert listed[0].name == "Jan Kowalski" and listed[0].conversation_id

    item_id, item = item_of(platform, older)
    assert item["column_values"]["status_1"] == "new"
    won = inbox.SetLeadStatus(chat_pb2.SetLeadStatusRequest(lead_id=older, status="won"), metadata=staff(JAN))
    assert won.status == "won"
    wait_for(lambda: platform.board.items[item_id]["column_values"]["status_1"] == "won", what="the status on Monday")
    code, details = code_of(lambda: inbox.SetLeadStatus(
        chat_pb2.SetLeadStatusRequest(lead_id=older, status="maybe"), metadata=staff(JAN)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "status" in details
    statuses = {lead.lead_id: lead.status for lead in inbox.ListLeads(
        chat_pb2.ListLeadsRequest(), metadata=staff(JAN)).leads}
    assert (statuses[older], statuses[newer]) == ("won", "new")
    two_days_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).date().isoformat()
    earlier = inbox.ListLeads(chat_pb2.ListLeadsRequest(day=two_days_ago), metadata=staff(JAN)).leads
    assert not {lead.lead_id for lead in earlier} & {older, newer}
    for day in ("2026-13-01", "29.11.2026", "tomorrow"):
        code, _ = code_of(lambda day=day: inbox.ListLeads(chat_pb2.ListLeadsRequest(day=day), metadata=staff(JAN)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_every_agent_action_is_audited_without_values_and_erased_with_the_person(platform):
    inbox, email = platform.inbox, unique_email()
    visitor, lead_id = lead_of(platform, email)
    conversation = chat_pb2.InboxConversationRequest(conversation_id=visitor.session)
    inbox.TakeOver(conversation, metadata=staff(ANNA))
    inbox.Reply(chat_pb2.AgentReplyRequest(conversation_id=visitor.session, text="Oddzwonię na 512 345 679"),
                metadata=staff(ANNA))
    inbox.CorrectLead(chat_pb2.CorrectLeadRequest(lead_id=lead_id, fields={"phone": "512 345 679", "city": "Gdynia"}),
                      metadata=staff(ANNA))
    inbox.SetLeadStatus(chat_pb2.SetLeadStatusRequest(lead_id=lead_id, status="contacted"), metadata=staff(JAN))
    inbox.HandBack(conversation, metadata=staff(JAN))

    def audit_rows():
        with platform.db.session() as s:
            about = (AgentAction.session_id == visitor.session) | (AgentAction.lead_id == lead_id)
            return [(a.agent, a.action, a.session_id, a.lead_id, a.detail)
                    for a in s.scalars(select(AgentAction).where(about).order_by(AgentAction.id))]

    assert audit_rows() == [
        ("anna", "take_over", visitor.session, lead_id, ""),
        ("anna", "reply", visitor.session, lead_id, ""),
        ("anna", "correct_lead", None, lead_id, "city,phone"),
        ("jan", "set_status", None, lead_id, "contacted"),
        ("jan", "hand_back", visitor.session, lead_id, ""),
    ]
    exported = platform.internal.ExportSubject(chat_pb2.ExportSubjectRequest(email=email), timeout=30)
    actions = json.loads(exported.document_json)["agent_actions"]
    assert [(a["agent"], a["action"]) for a in actions] == [(row[0], row[1]) for row in audit_rows()]

    erased = platform.internal.EraseSubject(
        chat_pb2.EraseSubjectRequest(email=email, request_id=f"inbox-{uuid.uuid4().hex[:12]}"), timeout=30)
    assert erased.leads_anonymised == 1 and audit_rows() == []


def test_the_audit_of_a_conversation_goes_with_it_when_retention_purges_it(platform):
    visitor = Visitor(platform)
    visitor.say("Dzień dobry")
    conversation = chat_pb2.InboxConversationRequest(conversation_id=visitor.session)
    platform.inbox.TakeOver(conversation, metadata=staff(ANNA))
    platform.inbox.HandBack(conversation, metadata=staff(ANNA))

    def audited() -> int:
        with platform.db.session() as s:
            query = select(func.count()).select_from(AgentAction).where(AgentAction.session_id == visitor.session)
            return s.scalar(query) or 0

    assert audited() == 2
    set_conversation(platform, visitor.session, last_activity_at=utcnow() - dt.timedelta(days=91))
    purged = platform.admin.PurgeRetention(chat_pb2.PurgeRetentionRequest(days=90), timeout=30)
    assert purged.deleted >= 1 and audited() == 0


def test_bad_input_is_refused_and_changes_nothing(platform):
    inbox, visitor = platform.inbox, Visitor(platform)
    visitor.say("Dzień dobry")
    conversation = chat_pb2.InboxConversationRequest(conversation_id=visitor.session)
    inbox.TakeOver(conversation, metadata=staff(ANNA))
    before = inbox.GetTranscript(conversation, metadata=staff(ANNA))
    for text in ("", "   ", "x" * 2001, "zły\x00znak"):
        code, _ = code_of(lambda text=text: inbox.Reply(
            chat_pb2.AgentReplyRequest(conversation_id=visitor.session, text=text), metadata=staff(ANNA)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    for conversation_id, expected in (("not-a-session", grpc.StatusCode.INVALID_ARGUMENT),
                                      ("", grpc.StatusCode.INVALID_ARGUMENT),
                                      (str(uuid.uuid4()), grpc.StatusCode.NOT_FOUND)):
        request = chat_pb2.InboxConversationRequest(conversation_id=conversation_id)
        for call in (inbox.GetTranscript, inbox.TakeOver, inbox.HandBack):
            code, _ = code_of(lambda call=call, request=request: call(request, metadata=staff(ANNA)))
            assert code == expected
    code, _ = code_of(lambda: inbox.ListConversations(chat_pb2.ListConversationsRequest(view="all"),
                                                      metadata=staff(ANNA)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = code_of(lambda: inbox.TakeOver(conversation))  # no verified agent: refused before anything runs
    assert code == grpc.StatusCode.UNAUTHENTICATED
    after = inbox.GetTranscript(conversation, metadata=staff(ANNA))
    assert after.messages == before.messages and (after.summary.handoff, after.summary.agent) == ("agent", "anna")
