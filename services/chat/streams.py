"""The server-streaming RPCs: a visitor's Chat.WatchConversation and an agent's Inbox.WatchInbox.

A stream sends what is past its cursor, then waits for events (events.py) and reads what they name from the
database; every STREAM_HEARTBEAT_S it re-reads the database anyway (an event lost to a Redis outage is made up
there) and sends a heartbeat, which keeps every proxy's idle timer from cutting it. It ends (OK) after STREAM_MAX_S,
when its client goes away, or when the server drains (drain(), called before the gRPC server's grace starts), and
the client reconnects with the last seq it saw.

A grpcio sync server holds one pool thread per open stream, so at most STREAM_MAX_CONCURRENT streams are open per
process (one more: RESOURCE_EXHAUSTED, which clients retry like any reconnect) and the chat server's pool is that
plus settings.UNARY_WORKERS threads, so streams can never take the threads that answer SendMessage.

A visitor's stream carries the agents' messages (role "agent", author, seq) and the handoff state: the visitor's own
messages and the bot's replies come back in SendMessage's response, which has no seq to deduplicate them by.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator

import grpc
from google.rpc import code_pb2

from novahouse.chat.v1 import chat_pb2
from services.chat import storage
from services.chat.conversation import ChatService
from services.chat.events import HANDOFF, INBOX, LEAD, MESSAGE, EventBus, Subscription
from services.chat.handoff import HandoffDesk
from services.chat.settings import Settings
from services.runtime.clock import utcnow
from services.runtime.db import Database
from services.runtime.errors import ValidationError, abort
from services.runtime.timestamps import to_timestamp

# What a visitor's stream sends of the conversation's messages.
VISITOR_ROLES = ("agent",)
# How far back an inbox stream's re-read looks past its last one: a commit stamped just before a re-read may become
# visible just after it.
_REREAD_OVERLAP = dt.timedelta(seconds=2)

# The inbox's summary of a conversation by session id, built by the Inbox servicer; None when there is none to show.
Summary = Callable[[str], chat_pb2.InboxConversationSummary | None]


def chat_message(message: storage.Message) -> chat_pb2.ChatMessage:
    return chat_pb2.ChatMessage(
        role=message.role, text=message.text, created_at=to_timestamp(message.created_at),
        author=message.author or "", seq=message.id,
    )


class Streams:
    def __init__(
        self,
        db: Database,
        chat: ChatService,
        bus: EventBus,
        desk: HandoffDesk,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.db = db
        self.chat = chat
        self.bus = bus
        self.desk = desk
        self.heartbeat_s = settings.stream_heartbeat_s
        self.max_s = settings.stream_max_s
        self.clock = clock
        self._slots = threading.BoundedSemaphore(settings.stream_max_concurrent)
        self._open: set[Subscription] = set()
        self._lock = threading.Lock()
        self._draining = False

    def drain(self) -> None:
        """End every open stream now, and any opened from now on at once (the server stops)."""
        with self._lock:
            self._draining = True
            open_now = list(self._open)
        for subscription in open_now:
            subscription.close()

    @property
    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    @contextlib.contextmanager
    def _opened(self, context: grpc.ServicerContext) -> Iterator[Subscription]:
        if not self._slots.acquire(blocking=False):
            abort(context, code_pb2.RESOURCE_EXHAUSTED, "too many open streams on this server; reconnect shortly")
        subscription = self.bus.subscribe()
        try:
            with self._lock:
                self._open.add(subscription)
                draining = self._draining
            if draining:
                subscription.close()
            context.add_callback(subscription.close)  # the client went away: its thread is free at once
            yield subscription
        finally:
            with self._lock:
                self._open.discard(subscription)
            self.bus.unsubscribe(subscription)
            self._slots.release()

    # --- Chat.WatchConversation ------------------------------------------------------------------------------------

    def watch_conversation(
        self, session_id: str, after_seq: int, secret: str, context: grpc.ServicerContext
    ) -> Iterator[chat_pb2.ConversationEvent]:
        """The handoff state first, the agents' messages after `after_seq` (0: from now on), then what happens."""
        if after_seq < 0:
            raise ValidationError("after_seq must be 0 or more: the seq of the last message the client saw")
        conversation_id = self.chat.authorised(session_id, secret)
        with self._opened(context) as subscription:
            cursor = after_seq
            if not cursor:
                with self.db.session() as s:
                    cursor = storage.last_seq(s, conversation_id)
            sent_state: str | None = None
            started = self.clock()
            deadline, beat = started + self.max_s, started + self.heartbeat_s
            reread = True
            while True:
                if reread:
                    with self.db.session() as s:
                        watched = storage.watched_conversation(s, conversation_id, cursor, VISITOR_ROLES)
                        messages = [chat_message(m) for m in watched.messages] if watched else []
                    if watched is None:
                        return  # erased or purged: nothing more will happen in it
                    if watched.handoff != sent_state:
                        sent_state = watched.handoff
                        yield chat_pb2.ConversationEvent(handoff=sent_state)
                    for message in messages:
                        cursor = message.seq
                        yield chat_pb2.ConversationEvent(message=message)
                now = self.clock()
                if now >= deadline or subscription.closed:
                    return
                if now >= beat:
                    beat = now + self.heartbeat_s
                    yield chat_pb2.ConversationEvent(heartbeat=to_timestamp(utcnow()))
                    reread = True
                    continue
                event = subscription.get(min(beat, deadline) - now)
                if event is Subscription.CLOSED:
                    return
                reread = event is not None and event.kind in (MESSAGE, HANDOFF) and event.session_id == session_id

    # --- Inbox.WatchInbox ------------------------------------------------------------------------------------------

    def watch_inbox(self, agent: str, context: grpc.ServicerContext, summary: Summary) -> Iterator[chat_pb2.InboxEvent]:
        """For the Inbox servicer: `agent` is the verified staff subject (the servicer refuses a call without one),
        `summary(session_id)` its view of a conversation. A heartbeat first (the client knows it is connected), then
        every conversation and lead that changes; the agent counts as present while this runs (handoff.py)."""
        if not agent:
            abort(context, code_pb2.UNAUTHENTICATED, "no staff agent on this call")
        with self._opened(context) as subscription:
            self.desk.seen(agent)
            since = utcnow()
            yield chat_pb2.InboxEvent(heartbeat=to_timestamp(since))
            started = self.clock()
            deadline, beat = started + self.max_s, started + self.heartbeat_s
            sent_sessions: set[str] = set()  # since the last re-read: it does not send them again
            sent_leads: set[str] = set()
            while True:
                now = self.clock()
                if now >= deadline or subscription.closed:
                    return
                if now >= beat:
                    beat = now + self.heartbeat_s
                    self.desk.seen(agent)
                    reread_at = utcnow()
                    with self.db.session() as s:
                        sessions = storage.inbox_changes_since(s, since - _REREAD_OVERLAP)
                        leads = storage.leads_changed_since(s, since - _REREAD_OVERLAP)
                    since = reread_at
                    for session_id in sessions:
                        if session_id not in sent_sessions and (found := summary(session_id)) is not None:
                            yield chat_pb2.InboxEvent(conversation=found)
                    for lead_id in leads:
                        if lead_id not in sent_leads:
                            yield chat_pb2.InboxEvent(lead_id=lead_id)
                    sent_sessions.clear()
                    sent_leads.clear()
                    yield chat_pb2.InboxEvent(heartbeat=to_timestamp(reread_at))
                    continue
                event = subscription.get(min(beat, deadline) - now)
                if event is Subscription.CLOSED:
                    return
                if event is None:
                    continue
                if event.kind == LEAD and event.lead_id:
                    sent_leads.add(event.lead_id)
                    yield chat_pb2.InboxEvent(lead_id=event.lead_id)
                elif event.kind in (MESSAGE, HANDOFF, INBOX) and event.session_id and (
                    found := summary(event.session_id)
                ) is not None:
                    sent_sessions.add(event.session_id)
                    yield chat_pb2.InboxEvent(conversation=found)
