"""The chat domain wired to a real database and to real gRPC stand-ins for the consent and notifier services."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from services.chat.app import ChatApp, build
from services.chat.conversation import Reply
from services.chat.settings import Settings
from testsupport.peers import PeerServer


class SettledChat:
    """The chat service, each message's reply followed by the wait for the lead hand-over it started (which runs on
    a thread of its own), so a test reads what consent and the notifier heard about that message."""

    def __init__(self, app: ChatApp):
        self._app = app

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app.chat, name)

    def send_message(self, *args: Any, **kwargs: Any) -> Reply:
        reply = self._app.chat.send_message(*args, **kwargs)
        assert self._app.leads.wait_idle(10), "the lead hand-over did not finish within 10 s"
        return reply


def build_world(database_url: str, peers: PeerServer, schema: str = "chat", **settings) -> SimpleNamespace:
    settings = {"peer_timeout_s": 1.0, **settings}
    app = build(Settings(database_url, db_schema=schema, consent_addr=peers.address, notifier_addr=peers.address,
                         **settings))
    app.migrate()
    return SimpleNamespace(app=app, chat=SettledChat(app), db=app.db, peers=peers, notifier=peers.notifier,
                           consent=peers.consent)


@pytest.fixture
def world(tmp_path):
    """Chat on a fresh SQLite file, talking to stand-in consent and notifier servers."""
    with PeerServer() as peers:
        world = build_world(f"sqlite:///{tmp_path / 'chat.db'}", peers)
        yield world
        world.db.dispose()


@pytest.fixture
def pg_world(pg_schema, pg_url):
    """The same on a private PostgreSQL schema."""
    with PeerServer() as peers:
        world = build_world(pg_url.replace("postgresql://", "postgresql+psycopg://"), peers, schema=pg_schema)
        yield world
        world.db.dispose()
