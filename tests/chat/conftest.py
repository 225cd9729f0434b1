"""The chat domain wired to a real database and to real gRPC stand-ins for the consent and notifier services."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import grpc
import pytest

from services.chat.app import ChatApp
from services.chat.settings import ChatSettings
from services.runtime.db import Database
from tests.chat.peers import PeerServer


def build_world(db: Database, peers: PeerServer, **settings) -> SimpleNamespace:
    channel = grpc.insecure_channel(peers.address)
    app = ChatApp.build(dataclasses.replace(ChatSettings(), peer_timeout_s=1.0, **settings), db, channel, channel)
    app.migrate()
    return SimpleNamespace(app=app, chat=app.chat, db=db, peers=peers, notifier=peers.notifier, consent=peers.consent)


@pytest.fixture
def world(tmp_path):
    """Chat on a fresh SQLite file, talking to stand-in consent and notifier servers."""
    with PeerServer() as peers:
        db = Database("chat", url=f"sqlite:///{tmp_path / 'chat.db'}")
        yield build_world(db, peers)
        db.dispose()


@pytest.fixture
def pg_world(pg_schema, pg_url):
    """The same on a private PostgreSQL schema."""
    with PeerServer() as peers:
        db = Database("chat", url=pg_url.replace("postgresql://", "postgresql+psycopg://"), schema=pg_schema)
        yield build_world(db, peers)
        db.dispose()
