"""The visitor's event stream (Chat.WatchConversation) and the inbox's (Inbox.WatchInbox) against real chat servers
sharing PostgreSQL and Redis: an agent's message stored through one replica reaches the stream held by another, a
reconnect after the last seq misses nothing, heartbeats keep coming, streams end on their own and when the server
drains, and bad requests are refused."""
from __future__ import annotations

import signal

import grpc
import pytest

from novahouse.chat.v1 import chat_pb2
from tests.chat.live import ALWAYS_OPEN, chat_replicas, shared_backing
from testsupport.peers import PeerServer


def agent_messages(reader) -> list[chat_pb2.ChatMessage]:
    return [m for m in reader.of("message") if m.role == "agent"]


def waiting_visitor(replica, inbox_replica):
    """A visitor waiting for the agent, whose inbox is open on `inbox_replica`; returns the reply and the inbox."""
    inbox = inbox_replica.watch_inbox()
    inbox.wait_for(lambda events: events, "the inbox stream to open")
    asked = replica.say("Chcę rozmawiać z konsultantem")
    assert asked.handoff == "waiting"
    return asked, inbox


# One chat server per role, all on one PostgreSQL schema and (but the deaf one) one Redis prefix.
VISITORS, AGENTS, DEAF, LIMITED, SHORT, DRAINED = range(6)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("streams")
    with PeerServer() as peers, shared_backing("streams") as (schema, prefix):
        env = {"HANDOFF_HOURS": ALWAYS_OPEN, "CONSENT_ADDR": peers.address, "NOTIFIER_ADDR": peers.address}
        own = {
            # Nothing between these two waits for a heartbeat's re-read: only the events carry the changes.
            VISITORS: {"STREAM_HEARTBEAT_S": "30"},
            AGENTS: {"STREAM_HEARTBEAT_S": "30"},
            # Hears no other replica's events; an agent counts as present for 10 s (two heartbeats) after each.
            DEAF: {"REDIS_KEY_PREFIX": prefix + "elsewhere:", "STREAM_HEARTBEAT_S": "5"},
            LIMITED: {"STREAM_MAX_CONCURRENT": "2"},
            SHORT: {"STREAM_HEARTBEAT_S": "0.2", "STREAM_MAX_S": "1.5"},
            DRAINED: {"STREAM_MAX_S": "600", "SHUTDOWN_GRACE_S": "60"},
        }
        with chat_replicas(tmp, len(own), env, schema, prefix, lambda i: own[i]) as replicas:
            yield replicas


def test_an_agents_message_stored_through_another_replica_reaches_the_visitor_and_a_reconnect_misses_nothing(
        cluster):
    visitors, agents = cluster[VISITORS], cluster[AGENTS]
    asked, inbox = waiting_visitor(visitors, agents)
    session, secret = asked.session_id, asked.session_secret
    stream = visitors.watch(session, secret)
    stream.wait_for(lambda events: events, "the stream's first event")
    assert stream.of("handoff") == ["waiting"]

    agents.take_over(session)
    stream.wait_for(lambda _: stream.of("handoff")[-1:] == ["agent"], "the agent joining")
    sent = agents.reply(session, "Dzień dobry, tu Anna. Jak mogę pomóc?")
    [received] = stream.wait_for(lambda _: agent_messages(stream), "the agent's message")
    assert (received.text, received.author, received.seq) == (sent.text, "Anna Nowak", sent.seq)
    assert not [m for m in stream.of("message") if m.role != "agent"]  # the widget has its own and the bot's
    stream.cancel()

    later = [agents.reply(session, text) for text in ("Czy to mieszkanie w Warszawie?", "Ile ma metrów?")]
    resumed = visitors.watch(session, secret, after_seq=received.seq)
    got = resumed.wait_for(lambda _: len(agent_messages(resumed)) >= 2 and agent_messages(resumed),
                           "the messages sent while disconnected")
    assert [(m.seq, m.text) for m in got] == [(m.seq, m.text) for m in later]
    agents.hand_back(session)
    resumed.wait_for(lambda _: resumed.of("handoff")[-1:] == [""], "the bot answering again")
    resumed.cancel()
    inbox.cancel()


def test_a_stream_that_misses_the_event_still_gets_the_message_at_its_next_heartbeat(cluster):
    """The replica holding the stream listens on another Redis prefix, so no event of the agent's replica reaches
    it: the database re-read after each heartbeat delivers the message anyway."""
    deaf, agents = cluster[DEAF], cluster[AGENTS]
    asked, inbox = waiting_visitor(deaf, deaf)
    stream = deaf.watch(asked.session_id, asked.session_secret)
    stream.wait_for(lambda events: events, "the stream's first event")
    agents.take_over(asked.session_id)
    sent = agents.reply(asked.session_id, "Dzień dobry!")
    [received] = stream.wait_for(lambda _: agent_messages(stream), "the agent's message")
    assert received.seq == sent.seq and stream.of("heartbeat")
    stream.cancel()
    inbox.cancel()


def test_more_streams_than_allowed_are_refused_while_messages_are_still_answered(cluster):
    chat = cluster[LIMITED]
    hello = chat.say("Dzień dobry")
    held = [chat.watch(hello.session_id, hello.session_secret) for _ in range(2)]
    for stream in held:
        stream.wait_for(lambda events: events, "the stream's first event")
    refused = chat.watch(hello.session_id, hello.session_secret)
    assert refused.wait_end() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert chat.say("Ile kosztuje remont?", hello.session_id).intent == "packages"
    held[0].cancel()
    again = chat.watch(hello.session_id, hello.session_secret)
    again.wait_for(lambda events: events, "a stream in the freed place")
    for stream in (held[1], again):
        stream.cancel()


def test_heartbeats_keep_coming_and_the_stream_ends_cleanly_after_its_longest_time(cluster):
    chat = cluster[SHORT]
    hello = chat.say("Dzień dobry")
    stream = chat.watch(hello.session_id, hello.session_secret)
    inbox = chat.watch_inbox()
    assert stream.wait_end() == grpc.StatusCode.OK and inbox.wait_end() == grpc.StatusCode.OK
    assert len(stream.of("heartbeat")) >= 2 and len(inbox.of("heartbeat")) >= 2
    assert stream.of("handoff") == [""]  # where the conversation stands, first


def test_a_stream_needs_the_conversations_secret_and_a_valid_cursor(cluster):
    chat = cluster[VISITORS]
    hello = chat.say("Dzień dobry")
    refusals = {
        "unknown session": (chat.watch("00000000-0000-4000-8000-000000000000", hello.session_secret),
                            grpc.StatusCode.NOT_FOUND),
        "wrong secret": (chat.watch(hello.session_id, "not-the-secret"), grpc.StatusCode.NOT_FOUND),
        "no secret": (chat.watch(hello.session_id, ""), grpc.StatusCode.NOT_FOUND),
        "malformed session": (chat.watch("abc", hello.session_secret), grpc.StatusCode.INVALID_ARGUMENT),
        "negative cursor": (chat.watch(hello.session_id, hello.session_secret, after_seq=-1),
                            grpc.StatusCode.INVALID_ARGUMENT),
    }
    for what, (stream, code) in refusals.items():
        assert stream.wait_end() == code, what
        assert not stream.events and stream.error.details(), what
    without_agent = chat.inbox.WatchInbox(chat_pb2.WatchInboxRequest(), timeout=30)
    with pytest.raises(grpc.RpcError) as refused:
        next(iter(without_agent))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_open_streams_end_cleanly_when_the_server_drains(cluster):
    """SIGTERM: the streams end with OK at once (the clients reconnect to another replica) instead of holding the
    stop for the whole SHUTDOWN_GRACE_S and being cut; the server exits by itself."""
    chat = cluster[DRAINED]
    hello = chat.say("Dzień dobry")
    streams = [chat.watch(hello.session_id, hello.session_secret), chat.watch_inbox()]
    for stream in streams:
        stream.wait_for(lambda events: events, "the stream's first event")
    chat.process.proc.send_signal(signal.SIGTERM)
    assert [stream.wait_end() for stream in streams] == [grpc.StatusCode.OK, grpc.StatusCode.OK]
    assert chat.process.proc.wait(timeout=50) == 0  # within the grace: not killed, and nothing cut
