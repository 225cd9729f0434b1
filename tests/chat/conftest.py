"""The chat domain wired to a real database and to real gRPC stand-ins for the consent and notifier services."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from services.chat.app import build
from services.chat.settings import Settings
from testsupport.peers import PeerServer


def build_world(database_url: str, peers: PeerServer, schema: str = "chat", **settings) -> SimpleNamespace:
    app = build(Settings(database_url, db_schema=schema, consent_addr=peers.address, notifier_addr=peers.address,
                         peer_timeout_s=1.0, **settings))
    app.migrate()
    return SimpleNamespace(app=app, chat=app.chat, db=app.db, peers=peers, notifier=peers.notifier,
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
