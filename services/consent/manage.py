"""Operator commands of the consent service (also run as Kubernetes Jobs). Each prints what it did."""
from __future__ import annotations

import argparse
import sys

from services.consent.crypto import SECRET_VARIABLES, new_secret_text


def _database():
    from services.runtime.db import Database

    return Database("consent")


def migrate(_args) -> int:
    from services.consent.server import MIGRATIONS
    from services.runtime.migrate import upgrade_to_head

    db = _database()
    upgrade_to_head(db, MIGRATIONS)
    print(f"consent database migrated to head ({db.engine.dialect.name}{', schema ' + db.schema if db.schema else ''})")
    return 0


def verify_ledger(_args) -> int:
    from services.consent.ledger import verify

    result = verify(_database())
    if result.ok:
        print(f"ledger ok: {result.entries_checked} entries verified")
        return 0
    print(f"ledger BROKEN at entry {result.first_bad_seq}: {result.problem} ({result.entries_checked} verified before)")
    return 2


def run_erasures(_args) -> int:
    """Attempt every due erasure once (the server's retry job does the same periodically)."""
    from services.consent.chat_eraser import ChatEraser
    from services.consent.crypto import SubjectCrypto, load_secrets
    from services.consent.erasure import ErasureWorker
    from services.consent.writer import LedgerWriter
    from services.runtime.clients import service_channel
    from services.runtime.config import env_float

    db = _database()
    writer = LedgerWriter(db)
    eraser = ChatEraser(service_channel("chat"), timeout_s=env_float("CONSENT_ERASE_TIMEOUT_S", 10.0, minimum=0.1))
    worker = ErasureWorker(db, SubjectCrypto(load_secrets()), writer, eraser)
    try:
        run = worker.run_due()
        summary = worker.summary()
    finally:
        writer.stop()
    print(f"erasures completed: {run.completed}, failed: {run.failed}, still pending: {summary.pending}")
    return 0 if run.failed == 0 else 1


def generate_secrets(_args) -> int:
    """Fresh values for the Kubernetes secret; print them, store them only in the secret store."""
    for name in SECRET_VARIABLES:
        print(f"{name}={new_secret_text()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.consent.manage", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply the Alembic migrations").set_defaults(run=migrate)
    commands.add_parser("verify-ledger", help="walk the hash chain; exit 2 naming the first bad entry").set_defaults(
        run=verify_ledger
    )
    commands.add_parser("run-erasures", help="retry due erasures in the chat service once").set_defaults(
        run=run_erasures
    )
    commands.add_parser("generate-secrets", help="print new CONSENT_HMAC_KEY / CONSENT_KEY_ENCRYPTION_KEY").set_defaults(
        run=generate_secrets
    )
    args = parser.parse_args(argv)
    from services.runtime import logs

    logs.configure("consent-manage")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
