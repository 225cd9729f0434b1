"""Consent service: unsubscribe, revoke and status (public), opt-ins from chat (internal), ledger export and
verification (admin). Ready when its own database answers and is migrated.

Environment (besides the common runtime variables): CONSENT_HMAC_KEY, CONSENT_KEY_ENCRYPTION_KEY (32 bytes,
base64), CONSENT_REQUIRE_SECRETS (default false), CHAT_ADDR, CONSENT_ERASE_TIMEOUT_S (10),
CONSENT_ERASURE_RETRY_S (2, doubled per failed attempt), CONSENT_ERASURE_RETRY_MAX_S (300),
CONSENT_ERASURE_POLL_S (5), CONSENT_ERASURE_ALERT_S (3600), CONSENT_APPEND_BATCH (200).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from novahouse.consent.v1 import consent_pb2_grpc
from services.consent.chat_eraser import ChatEraser
from services.consent.consent import ConsentService
from services.consent.crypto import Secrets, SubjectCrypto, load_secrets
from services.consent.erasure import EraseInChat, ErasureWorker
from services.consent.ledger import utc_now
from services.consent.servicer import ConsentAdminServicer, ConsentInternalServicer, ConsentServicer
from services.consent.storage import ledger_head
from services.consent.writer import LedgerWriter
from services.runtime import logs
from services.runtime.clients import service_channel
from services.runtime.config import env_bool, env_float, env_int
from services.runtime.db import Database
from services.runtime.diagnostics import Diagnostics
from services.runtime.migrate import upgrade_to_head
from services.runtime.server import GrpcService

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEFAULT_PORT = 50052


def database_ready(db: Database) -> None:
    """Reachable and migrated: the ledger head exists."""
    with db.engine.connect() as conn:
        conn.execute(select(ledger_head.c.seq).where(ledger_head.c.id == 1)).one()


@dataclass
class ConsentApp:
    grpc: GrpcService
    consent: ConsentService
    worker: ErasureWorker
    writer: LedgerWriter
    diagnostics: Diagnostics


def build(db: Database, secrets: Secrets, erase_in_chat: EraseInChat) -> ConsentApp:
    """Wire the domain objects and the three gRPC services; nothing runs until grpc.start()."""
    crypto = SubjectCrypto(secrets)
    writer = LedgerWriter(db, max_batch=env_int("CONSENT_APPEND_BATCH", 200, minimum=1))
    worker = ErasureWorker(
        db, crypto, writer, erase_in_chat,
        retry_base_s=env_float("CONSENT_ERASURE_RETRY_S", 2.0, minimum=0.01),
        retry_max_s=env_float("CONSENT_ERASURE_RETRY_MAX_S", 300.0, minimum=0.01),
        poll_s=env_float("CONSENT_ERASURE_POLL_S", 5.0, minimum=0.01),
    )
    consent = ConsentService(db, crypto, writer, on_erasure_requested=worker.wake)

    diagnostics = Diagnostics("consent")
    diagnostics.add_dependency("database", lambda: database_ready(db))
    diagnostics.add("ledger", lambda: (True, f"{consent.ledger_length()} entries"))
    alert_after_s = env_float("CONSENT_ERASURE_ALERT_S", 3600.0, minimum=1)

    def pending_erasures() -> tuple[bool, str]:
        summary = worker.summary()
        if summary.pending == 0:
            return True, "0 pending"
        age_s = (utc_now() - summary.oldest_created_at).total_seconds()
        detail = f"{summary.pending} pending, oldest {age_s:.0f}s, most attempts {summary.most_attempts}"
        return age_s < alert_after_s, detail

    diagnostics.add("erasures:pending", pending_erasures)

    service = GrpcService("consent", DEFAULT_PORT, readiness={"database": lambda: database_ready(db)})
    service.add(consent_pb2_grpc.add_ConsentServicer_to_server, ConsentServicer(consent), "novahouse.consent.v1.Consent")
    service.add(
        consent_pb2_grpc.add_ConsentInternalServicer_to_server,
        ConsentInternalServicer(consent),
        "novahouse.consent.v1.ConsentInternal",
    )
    service.add(
        consent_pb2_grpc.add_ConsentAdminServicer_to_server,
        ConsentAdminServicer(consent, diagnostics),
        "novahouse.consent.v1.ConsentAdmin",
    )
    service.on_ready(worker.start)
    service.on_stop(worker.stop)
    service.on_stop(writer.stop)
    return ConsentApp(service, consent, worker, writer, diagnostics)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    logs.configure("consent")
    db = Database("consent")
    if env_bool("MIGRATE_ON_START", True):
        upgrade_to_head(db, MIGRATIONS)
    eraser = ChatEraser(service_channel("chat"), timeout_s=env_float("CONSENT_ERASE_TIMEOUT_S", 10.0, minimum=0.1))
    app = build(db, load_secrets(), eraser)
    app.grpc.on_stop(db.dispose)
    app.grpc.run()


if __name__ == "__main__":
    main()
