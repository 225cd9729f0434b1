"""Consent for the tests and the benchmark: a database at head per backend, the domain object alone, a real
ChatInternal gRPC server that fails on command, and an in-process consent server."""
from __future__ import annotations

import base64
import contextlib
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from urllib.parse import unquote

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deploy.local.processes import grpc_serving
from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from novahouse.consent.v1 import consent_pb2, consent_pb2_grpc
from services.consent.app import MIGRATIONS, ConsentApp, build
from services.consent.chain import ChainKeys
from services.consent.checkpoints import DirectoryStore, LedgerIntegrity
from services.consent.consent import ConsentService
from services.consent.crypto import Secrets, SubjectCrypto, new_secret_text
from services.consent.ledger_keys import LedgerKeys, new_key_values
from services.consent.server import grpc_service
from services.consent.settings import Settings
from services.consent.writer import LedgerWriter
from services.runtime.db import Database
from services.runtime.migrate import upgrade_to_head
from testsupport import backing
from testsupport.peers import PeerServer, RecordingNotifier
from testsupport.waiting import wait_for

BACKENDS = ("sqlite", "postgres")


def fresh_secrets() -> Secrets:
    return Secrets(base64.b64decode(new_secret_text()), base64.b64decode(new_secret_text()))


@contextlib.contextmanager
def migrated_database(backend: str, directory: Path | None = None) -> Iterator[Database]:
    """A consent database at head on SQLite (file in directory) or on a private PostgreSQL schema."""
    if backend == "sqlite":
        if directory is None:
            raise ValueError("a SQLite consent database needs a directory for its file")
        db = Database("consent", url=f"sqlite:///{directory / 'consent.db'}")
        schema = None
    else:
        backing.postgres_connect().close()
        schema = backing.unique_name("consent_t")
        url = backing.TEST_DATABASE_URL.replace("postgresql://", "postgresql+psycopg://", 1)
        db = Database("consent", url=url, schema=schema)
    try:
        upgrade_to_head(db, MIGRATIONS)
        yield db
    finally:
        db.dispose()
        if schema:
            backing.drop_schema(schema)


def fresh_ledger_keys() -> LedgerKeys:
    return LedgerKeys.of(ChainKeys("t1", {"t1": os.urandom(32)}), Ed25519PrivateKey.generate())


def consent_service(
    db: Database, secrets: Secrets | None = None, keys: LedgerKeys | None = None, checkpoint_dir: Path | None = None
) -> ConsentService:
    """The domain object alone (no gRPC), with its own writer, like one replica; checkpoints in checkpoint_dir (a
    new temporary directory when not given)."""
    keys = keys or fresh_ledger_keys()
    store = DirectoryStore(checkpoint_dir or Path(tempfile.mkdtemp(prefix="consent-checkpoints-")))
    return ConsentService(
        db, SubjectCrypto(secrets or fresh_secrets()), LedgerWriter(db, keys.chain),
        integrity=LedgerIntegrity(db, keys, store, interval_s=300),
    )


class FakeChat(chat_pb2_grpc.ChatInternalServicer):
    """A real gRPC ChatInternal server whose EraseSubject answers UNAVAILABLE for the next `fail_next` calls."""

    def __init__(self):
        self.fail_next = 0
        self.attempts: list[tuple[str, str]] = []
        self.erased: list[tuple[str, str]] = []
        self.looked_up: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        chat_pb2_grpc.add_ChatInternalServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    def EraseSubject(self, request, context):
        with self._lock:
            self.attempts.append((request.email, request.request_id))
            if self.fail_next > 0:
                self.fail_next -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "chat database is restarting")
            self.erased.append((request.email, request.request_id))
        return chat_pb2.EraseSubjectResponse(conversations=1, messages_erased=2, leads_anonymised=1)

    def ExportSubject(self, request, context):
        """Nothing linked: the erasure's first step (finding what to erase) always answers."""
        with self._lock:
            self.looked_up.append((request.email, request.phone))
        return chat_pb2.SubjectExport(document_json='{"conversations": [], "leads": []}')

    def __enter__(self) -> FakeChat:
        self.server.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.server.stop(0).wait()


class RunningConsent:
    def __init__(self, app: ConsentApp, db: Database, chat: FakeChat, address: str, mail: RecordingNotifier):
        self.app, self.db, self.chat, self.address, self.mail = app, db, chat, address, mail

    def channel(self, user_agent: str = "TestBrowser/1.0") -> grpc.Channel:
        return grpc.insecure_channel(self.address, options=[("grpc.primary_user_agent", user_agent)])

    def confirm_latest(self, email: str, metadata: tuple[tuple[str, str], ...] = ()) -> str:
        """The person opens the latest link emailed to them and presses the button: the page shown after."""
        with self.channel() as channel:
            return confirm_latest(channel, self.mail, email, metadata)


def emailed_tokens(mail: RecordingNotifier, email: str) -> list[str]:
    """The tokens of the confirmation links consent emailed to this address through `mail`, oldest first."""
    bodies = [r.email.body for r in list(mail.requests.values()) if r.email.to == email]
    return [unquote(token) for body in bodies for token in re.findall(r"/api/confirm\?token=([\w.%-]+)", body)]


def confirm_latest(
    channel: grpc.Channel, mail: RecordingNotifier, email: str, metadata: tuple[tuple[str, str], ...] = ()
) -> str:
    """Confirm (the page's POST, over gRPC) the latest link emailed to this address; the page shown after."""
    token = wait_for(lambda: emailed_tokens(mail, email), what=f"a confirmation link to {email}")[-1]
    page = consent_pb2_grpc.ConsentStub(channel).Confirm(
        consent_pb2.ConfirmRequest(token=token), metadata=metadata, timeout=10
    )
    return str(page.data.decode())


@contextlib.contextmanager
def running_consent(
    backend: str, directory: Path, notifier: RecordingNotifier | None = None
) -> Iterator[RunningConsent]:
    """The consent gRPC server in this process on a free port, erasing through a FakeChat, fast retries; its
verification emails and erasures go to a RecordingNotifier (RunningConsent.mail; a test may give its own)."""
    env = {
        "GRPC_PORT": "0",
        "CONSENT_ERASURE_RETRY_S": "0.05",
        "CONSENT_ERASURE_POLL_S": "0.2",
        "SHUTDOWN_GRACE_S": "1",
        "HEALTH_CHECK_INTERVAL_S": "0.5",
    }
    with (pytest.MonkeyPatch.context() as patch, migrated_database(backend, directory) as db, FakeChat() as chat,
          PeerServer(notifier) as mail):
        env.update({"DATABASE_URL": db.url, "DB_SCHEMA": db.schema or "", "CHAT_ADDR": chat.address,
                    "NOTIFIER_ADDR": mail.address,
                    "CONSENT_ERASE_TIMEOUT_S": "2", "CONSENT_HMAC_KEY": new_secret_text(),
                    "CONSENT_KEY_ENCRYPTION_KEY": new_secret_text(), **new_key_values(),
                    "CONSENT_CHECKPOINT_DIR": str(directory / "ledger-checkpoints"),
                    "CONSENT_ERASURE_JOURNAL_DIR": str(directory / "erasure-journal")})
        for name, value in env.items():
            patch.setenv(name, value)
        app = build(Settings.from_env())
        service = grpc_service(app)
        port = service.start()
        address = f"127.0.0.1:{port}"
        try:
            wait_for(lambda: grpc_serving(address), what="consent SERVING")
            yield RunningConsent(app, app.db, chat, address, mail.notifier)
        finally:
            service.stop()
