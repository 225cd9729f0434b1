"""Chat server processes sharing one PostgreSQL schema and one Redis key prefix (replicas, as in a cluster), and
readers of their event streams, for the tests of the live handoff and the streams."""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc

from deploy.local.processes import ManagedProcess, free_port, grpc_serving, python_module
from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from testsupport import backing
from testsupport.waiting import wait_for

ALWAYS_OPEN = "mon-sun 00:00-24:00"
AGENT = (("x-staff-agent", "anna"), ("x-staff-name", "Anna Nowak"), ("x-staff-token-id", "test-token-anna"))
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def closed_now() -> str:
    """Opening hours on a weekday that is neither today nor tomorrow in Warsaw: closed for the whole test."""
    today = dt.datetime.now(ZoneInfo("Europe/Warsaw")).weekday()
    return f"{_DAYS[(today + 3) % 7]} 00:00-24:00"


@dataclass
class Replica:
    process: ManagedProcess
    address: str
    metrics_port: int
    channel: grpc.Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(self.address)
        self.chat = chat_pb2_grpc.ChatStub(self.channel)
        self.inbox = chat_pb2_grpc.InboxStub(self.channel)

    def say(self, text: str, session: str = "", **fields) -> chat_pb2.SendMessageResponse:
        return self.chat.SendMessage(chat_pb2.SendMessageRequest(session_id=session, message=text, **fields),
                                     timeout=30)

    def transcript(self, session: str, secret: str) -> chat_pb2.Conversation:
        request = chat_pb2.GetConversationRequest(session_id=session)
        return self.chat.GetConversation(request, metadata=(("x-session-secret", secret),), timeout=30)

    def watch(self, session: str, secret: str, after_seq: int = 0) -> StreamReader:
        request = chat_pb2.WatchConversationRequest(session_id=session, after_seq=after_seq)
        return StreamReader(self.chat.WatchConversation(request, metadata=(("x-session-secret", secret),),
                                                        timeout=120))

    def watch_inbox(self) -> StreamReader:
        return StreamReader(self.inbox.WatchInbox(chat_pb2.WatchInboxRequest(), metadata=AGENT, timeout=120))

    def take_over(self, session: str) -> chat_pb2.InboxConversation:
        return self.inbox.TakeOver(chat_pb2.InboxConversationRequest(conversation_id=session), metadata=AGENT,
                                   timeout=30)

    def reply(self, session: str, text: str) -> chat_pb2.ChatMessage:
        return self.inbox.Reply(chat_pb2.AgentReplyRequest(conversation_id=session, text=text), metadata=AGENT,
                                timeout=30)

    def hand_back(self, session: str) -> chat_pb2.InboxConversation:
        return self.inbox.HandBack(chat_pb2.InboxConversationRequest(conversation_id=session), metadata=AGENT,
                                   timeout=30)

    def stop(self, grace: float = 30.0) -> None:
        self.channel.close()
        self.process.stop(grace)


@contextlib.contextmanager
def shared_backing(name: str) -> Iterator[tuple[str, str]]:
    """A PostgreSQL schema and a Redis key prefix for a module's replicas, both removed afterwards."""
    backing.postgres_connect().close()
    backing.redis_client()
    schema, prefix = backing.unique_name(name), backing.unique_name(f"novahouse-test-{name}") + ":"
    try:
        yield schema, prefix
    finally:
        backing.drop_schema(schema)
        backing.delete_prefix(prefix)


def forget_agents(schema: str) -> None:
    """No agent was ever in the inbox (presence rows of earlier tests removed)."""
    with backing.postgres_connect() as conn:
        conn.execute(f'DELETE FROM "{schema}".agent_presence')


@contextlib.contextmanager
def chat_replicas(tmp: Path, count: int, env: dict[str, str], schema: str, redis_prefix: str,
                  per_replica: Callable[[int], dict[str, str]] = lambda _i: {}) -> Iterator[list[Replica]]:
    """`count` chat servers on the schema and the Redis prefix (the caller removes them afterwards): the first
    migrates the schema, then the others start together and find it at head."""
    base = {
        **os.environ,
        "DATABASE_URL": backing.TEST_DATABASE_URL,
        "DB_SCHEMA": schema,
        "REDIS_URL": backing.TEST_REDIS_URL,
        "REDIS_KEY_PREFIX": redis_prefix,
        "SCHEDULER_ENABLED": "false",
        "HEALTH_CHECK_INTERVAL_S": "0.2",
        "PUBLIC_BASE_URL": "https://novahouse.example",
        "STREAM_HEARTBEAT_S": "0.5",
        "DATA_DIR": str(tmp),
        "LOG_LEVEL": "INFO",
        **env,
    }
    replicas: list[Replica] = []

    def start(index: int) -> Replica:
        port, metrics_port = free_port(), free_port()
        replica_env = {**base, "GRPC_PORT": str(port), "METRICS_PORT": str(metrics_port), **per_replica(index)}
        process = ManagedProcess(f"chat-{index}", python_module("services.chat.server"), replica_env, tmp / "logs")
        replicas.append(Replica(process.start(), f"127.0.0.1:{port}", metrics_port))
        return replicas[-1]

    def serving(replica: Replica) -> None:
        replica.process.wait_until(lambda: grpc_serving(replica.address), 180, "SERVING")

    try:
        serving(start(0))
        for replica in [start(index) for index in range(1, count)]:
            serving(replica)
        yield replicas
    finally:
        for replica in replicas:
            replica.stop(grace=5)


class StreamReader:
    """Reads a server stream on a thread of its own; the test waits for the events it expects (never for a time)."""

    def __init__(self, call: Any):  # a server stream's call: a grpc.Call that iterates its responses
        self.call = call
        self.events: list = []
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self.call:
                with self._lock:
                    self.events.append(event)
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.ended.set()

    def snapshot(self) -> list:
        with self._lock:
            return list(self.events)

    def wait_for(self, found: Callable[[list], object], what: str, timeout: float = 30.0):
        """found(events so far)'s first truthy value."""
        return wait_for(lambda: found(self.snapshot()), timeout, what)

    def of(self, kind: str) -> list:
        return [getattr(e, kind) for e in self.snapshot() if e.WhichOneof("event") == kind]

    def wait_end(self, timeout: float = 60.0) -> grpc.StatusCode:
        wait_for(self.ended.is_set, timeout, "the stream to end")
        return self.error.code() if self.error is not None else self.call.code()

    def cancel(self) -> None:
        self.call.cancel()
        self.ended.wait(10)
