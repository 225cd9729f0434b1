"""Small events about conversations and leads, for the streams of every chat replica: what changed, never its content
(a stream reads the content from the database, so an event carries no personal data).

API for code that changes a conversation or a lead (the inbox's Reply, TakeOver, HandBack, CorrectLead, ...): call,
AFTER the transaction committed, on the app's bus (`app.events`):

    events.message_added(session_id, seq)     # a message stored in the conversation (seq = message.id)
    events.handoff_changed(session_id, state)  # conversation.handoff is now state ("" when handed back)
    events.inbox_changed(session_id)           # anything else the inbox shows about it (taken, lead linked, ...)
    events.lead_changed(lead_id)               # a lead created, corrected or given a status

Each call is cheap and never raises: the event goes at once to the streams of this process and, with REDIS_URL, to
the other replicas through Redis pub/sub (channel REDIS_KEY_PREFIX + "chat:events"). Pub/sub is at most once: a
publish lost to a Redis outage is made up by the streams, which re-read the database every STREAM_HEARTBEAT_S.
"""
from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import uuid
from dataclasses import asdict, dataclass

import redis

from services.runtime.errors import ThrottledWarning

log = logging.getLogger(__name__)

MESSAGE, HANDOFF, INBOX, LEAD = "message", "handoff", "inbox", "lead"
KINDS = frozenset({MESSAGE, HANDOFF, INBOX, LEAD})
_QUEUE_SIZE = 256  # per stream; a stream this far behind drops events and catches up from the database
_LISTEN_POLL_S = 0.25  # below REDIS_TIMEOUT_S's default, so the listener's reads never time out while idle


@dataclass(frozen=True)
class Event:
    kind: str
    session_id: str = ""
    seq: int = 0
    state: str = ""
    lead_id: str = ""


class Subscription:
    """One stream's queue of events. get() returns an Event, None when `timeout_s` passed, or CLOSED."""

    CLOSED = Event("closed")

    def __init__(self) -> None:
        self._queue: queue.Queue[Event] = queue.Queue(_QUEUE_SIZE)
        self.closed = False

    def put(self, event: Event) -> None:
        with contextlib.suppress(queue.Full):  # the stream re-reads the database at its next heartbeat
            self._queue.put_nowait(event)

    def get(self, timeout_s: float) -> Event | None:
        try:
            return self._queue.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None

    def close(self) -> None:
        """Ends the stream reading it (the server drains, or its client went away)."""
        self.closed = True
        try:
            self._queue.put_nowait(self.CLOSED)
        except queue.Full:
            with self._queue.mutex:  # drop what is queued: the stream only has to see that it ends
                self._queue.queue.clear()
            self._queue.put_nowait(self.CLOSED)


class EventBus:
    def __init__(self, redis_client: redis.Redis | None, key_prefix: str, retry_s: float):
        self.redis = redis_client
        self.channel = key_prefix + "chat:events"
        self.retry_s = retry_s
        self._origin = uuid.uuid4().hex  # this process's own events come back from Redis: they are skipped
        self._subscriptions: set[Subscription] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._listener: threading.Thread | None = None
        self._publish_failed = ThrottledWarning(log, "redis unavailable, event not published to other replicas", 10.0)

    # --- the API -------------------------------------------------------------------------------------------------

    def message_added(self, session_id: str, seq: int) -> None:
        self.publish(Event(MESSAGE, session_id=session_id, seq=seq))

    def handoff_changed(self, session_id: str, state: str) -> None:
        self.publish(Event(HANDOFF, session_id=session_id, state=state))

    def inbox_changed(self, session_id: str) -> None:
        self.publish(Event(INBOX, session_id=session_id))

    def lead_changed(self, lead_id: str) -> None:
        self.publish(Event(LEAD, lead_id=lead_id))

    # --- delivery ------------------------------------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        self._deliver(event)
        if self.redis is None:
            return
        try:
            self.redis.publish(self.channel, json.dumps({"origin": self._origin, **asdict(event)}))
        except redis.RedisError as exc:
            self._publish_failed(error=type(exc).__name__)

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        with self._lock:
            self._subscriptions.add(subscription)
            if self.redis is not None and self._listener is None and not self._stopped.is_set():
                self._listener = threading.Thread(target=self._listen, name="chat-events", daemon=True)
                self._listener.start()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    def close(self) -> None:
        """Stop listening to Redis (at the end of the process; the streams ended before)."""
        self._stopped.set()
        listener = self._listener
        if listener is not None:
            listener.join(timeout=2 * _LISTEN_POLL_S + 1)

    def _deliver(self, event: Event) -> None:
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.put(event)

    def _listen(self) -> None:
        """Other replicas' events, from Redis into this process's streams; reconnects after REDIS_RETRY_SECONDS."""
        assert self.redis is not None
        down = False
        while not self._stopped.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]  # redis-py's stubs lack it
            try:
                pubsub.subscribe(self.channel)
                if down:
                    log.info("listening to other replicas' events again")
                    down = False
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=_LISTEN_POLL_S)
                    if message is not None and message.get("type") == "message":
                        self._received(message["data"])
            except (redis.RedisError, OSError) as exc:
                if not down:
                    log.warning("redis unavailable, other replicas' events wait for the database re-read",
                                extra={"error": type(exc).__name__})
                    down = True
                self._stopped.wait(max(self.retry_s, _LISTEN_POLL_S))
            finally:
                pubsub.close()

    def _received(self, data: bytes | str) -> None:
        try:
            fields = json.loads(data)
            if fields.pop("origin", None) == self._origin:
                return
            event = Event(**fields)
        except (ValueError, TypeError):
            log.warning("malformed event on the events channel ignored")
            return
        if event.kind in KINDS:
            self._deliver(event)
