"""A visitor who asks for a person, against real chat servers on PostgreSQL and Redis: within opening hours with an
agent in the inbox someone joins (sales is alerted on Slack with the inbox link) and the bot stays silent until the
agent hands back; otherwise a consultant calls back, and sales gets the phone and the preferred time on Slack."""
from __future__ import annotations

import urllib.request
from types import SimpleNamespace

import pytest

from tests.chat.live import ALWAYS_OPEN, chat_replicas, closed_now, forget_agents, shared_backing
from testsupport.notifier import NotifierProcess
from testsupport.peers import PeerServer
from testsupport.receivers import HttpReceiver
from testsupport.waiting import wait_for


def waiting_in_inbox(session: str):
    def found(events):
        return any(e.WhichOneof("event") == "conversation" and e.conversation.conversation_id == session
                   and e.conversation.handoff == "waiting" for e in events)
    return found


def handoffs_counted(replica, outcome: str, reason: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{replica.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    series = f'chat_handoffs_total{{outcome="{outcome}",reason="{reason}"}} '
    return float(next(line for line in text.splitlines() if line.startswith(series)).split()[-1])


OPEN, OPEN_TOO, CLOSED = range(3)  # two replicas within opening hours, one outside them


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Three chat replicas on one schema and Redis prefix; the one outside opening hours sends through a real
    notifier to a Slack receiver, the others to a recording stand-in."""
    tmp = tmp_path_factory.mktemp("handoff")
    with PeerServer() as peers, HttpReceiver() as slack, shared_backing("handoff") as (schema, prefix):
        notifier = NotifierProcess(tmp / "notifier", {"SLACK_WEBHOOK_URL": f"{slack.url}/hooks/test"}).start()
        try:
            # An inbox stream counts its agent present for a minute (two heartbeats), however loaded the machine.
            env = {"HANDOFF_HOURS": ALWAYS_OPEN, "CONSENT_ADDR": peers.address, "NOTIFIER_ADDR": peers.address,
                   "STREAM_HEARTBEAT_S": "30"}
            closed = {"HANDOFF_HOURS": closed_now(), "NOTIFIER_ADDR": notifier.addr}
            with chat_replicas(tmp, 3, env, schema, prefix, lambda i: closed if i == CLOSED else {}) as replicas:
                yield SimpleNamespace(replicas=replicas, peers=peers, slack=slack, schema=schema)
        finally:
            notifier.stop()


def test_within_hours_but_nobody_in_the_inbox_a_callback_is_arranged(cluster):
    forget_agents(cluster.schema)
    chat = cluster.replicas[OPEN]
    asked = chat.say("I want to talk to a human")
    assert asked.handoff == "callback" and "arrange a call from a consultant" in asked.reply
    assert asked.consent_prompt.kind == "processing"
    assert not cluster.peers.notifier.keys(f"handoff:{asked.session_id}")
    assert handoffs_counted(chat, "callback", "asked") == 1


def test_with_an_agent_in_the_inbox_the_visitor_waits_for_them_and_the_bot_is_silent_until_handed_back(cluster):
    first, second = cluster.replicas[OPEN], cluster.replicas[OPEN_TOO]
    peers = cluster.peers
    assert handoffs_counted(second, "waiting", "asked") == 0  # every series is there from the start
    inbox = first.watch_inbox()
    inbox.wait_for(lambda events: events, "the inbox stream to open")

    asked = second.say("Chcę rozmawiać z człowiekiem, nie z botem")
    session, secret = asked.session_id, asked.session_secret
    assert asked.handoff == "waiting" and "dołączy do tej rozmowy" in asked.reply
    assert asked.consent_prompt.kind == ""  # nothing to agree to: nobody is asking for details
    inbox.wait_for(waiting_in_inbox(session), "the waiting visitor in the inbox of the other replica")
    [key] = wait_for(lambda: peers.notifier.keys(f"handoff:{session}:"), 30, "the Slack alert")
    alert = peers.notifier.requests[key].slack
    assert alert.fields["inbox"] == f"https://novahouse.example/inbox/#/c/{session}"
    assert alert.fields["reason"] == "asked for a person" and session in alert.text
    assert handoffs_counted(second, "waiting", "asked") == 1

    while_waiting = first.say("Halo, jest tam ktoś? Mój numer to 601 602 603", session)
    assert while_waiting.reply == "" and while_waiting.handoff == "waiting"
    first.take_over(session)
    while_agent = second.say("Dzień dobry!", session)
    assert while_agent.reply == "" and while_agent.handoff == "agent"
    reply = first.reply(session, "Dzień dobry, tu Anna z NovaHouse. W czym mogę pomóc?")

    transcript = second.transcript(session, secret)
    assert transcript.handoff == "agent"
    texts = [(m.role, m.text) for m in transcript.messages]
    assert texts[-3:] == [("user", "Halo, jest tam ktoś? Mój numer to 601 602 603"), ("user", "Dzień dobry!"),
                          ("agent", "Dzień dobry, tu Anna z NovaHouse. W czym mogę pomóc?")]
    last = transcript.messages[-1]
    assert last.author == "Anna Nowak" and last.seq == reply.seq
    assert [m.seq for m in transcript.messages] == sorted({m.seq for m in transcript.messages})
    assert "601" not in str(alert)  # what the visitor typed to the agent never goes to Slack

    first.hand_back(session)
    answered = second.say("Ile kosztuje remont?", session)
    assert answered.handoff == "" and answered.intent == "packages" and answered.reply
    inbox.cancel()


def test_the_widgets_button_asks_for_a_person_without_words(cluster):
    chat = cluster.replicas[OPEN]
    inbox = chat.watch_inbox()
    inbox.wait_for(lambda events: events, "the inbox stream to open")
    hello = chat.say("Hello, what do you do?")
    pressed = chat.say("", hello.session_id, request_person=True)
    assert pressed.handoff == "waiting" and "someone from our team will join this chat" in pressed.reply
    [key] = wait_for(lambda: cluster.peers.notifier.keys(f"handoff:{hello.session_id}:"), 30, "the Slack alert")
    assert cluster.peers.notifier.requests[key].slack.fields["reason"] == 'pressed "talk to a person"'
    assert handoffs_counted(chat, "waiting", "button") == 1
    stored = chat.transcript(hello.session_id, hello.session_secret).messages
    assert [m.text for m in stored][-2:] == ["Talk to a person", pressed.reply]
    inbox.cancel()


@pytest.mark.parametrize("language", ["pl", "en"])
def test_outside_opening_hours_sales_gets_a_callback_request_with_the_phone_and_the_time(cluster, language):
    script = {
        "pl": ["Chcę rozmawiać z człowiekiem, nie z botem", "tak", "Barbara Lis", "601 602 699", "jutro po 17"],
        "en": ["I want to talk to a human", "yes", "Barbara Lis", "601 602 698", "tomorrow after 5pm"],
    }[language]
    chat, slack = cluster.replicas[CLOSED], cluster.slack
    inbox = chat.watch_inbox()  # an agent is in the inbox, but it is outside the hours
    inbox.wait_for(lambda events: events, "the inbox stream to open")
    first = chat.say(script[0])
    assert first.handoff == "callback" and first.consent_prompt.kind == "processing"
    replies = [first, *(chat.say(text, first.session_id) for text in script[1:])]
    stored = replies[-1]
    assert stored.intent == "lead_stored" and stored.handoff == "callback" and "17:00" in stored.reply
    inbox.wait_for(lambda events: any(e.lead_id == stored.lead.lead_id for e in events), "the new lead in the inbox")
    inbox.cancel()
    phone = "+48" + script[3].replace(" ", "")
    posted = wait_for(lambda: [r.json() for r in slack.requests if phone in str(r.json())], 30,
                      "the callback request on Slack")
    assert "17:00" in str(posted) and "asked for a person" in str(posted)
    assert not [r for r in slack.requests if "waiting for a person" in str(r.json())]
