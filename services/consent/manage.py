"""Operator commands of the consent service (also run as Kubernetes Jobs). Each prints what it did."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from services.consent.crypto import SECRET_VARIABLES, new_secret_text


def migrate(_args: argparse.Namespace) -> int:
    from services.consent import app

    db = app.database()
    app.migrate(db)
    print(f"consent database migrated to head ({db.engine.dialect.name}{', schema ' + db.schema if db.schema else ''})")
    return 0


def verify_ledger(_args: argparse.Namespace) -> int:
    from services.consent import app, ledger_storage

    result = ledger_storage.verify(app.database())
    if result.ok:
        print(f"ledger ok: {result.entries_checked} entries verified")
        return 0
    print(f"ledger BROKEN at entry {result.first_bad_seq}: {result.problem} ({result.entries_checked} verified before)")
    return 2


def run_erasures(_args: argparse.Namespace) -> int:
    """Attempt every due erasure once (the server's retry thread does the same periodically)."""
    from services.consent.app import build
    from services.consent.settings import Settings
    from services.runtime.request_context import request_scope

    app = build(Settings.from_env())
    try:
        with request_scope():  # one job: its log lines and its calls to chat share an id
            run = app.worker.run_due()
        summary = app.pending.summary()
    finally:
        app.close()
    print(f"erasures completed: {run.completed}, failed: {run.failed}, still pending: {summary.pending}")
    return 0 if run.failed == 0 else 1


def generate_secrets(_args: argparse.Namespace) -> int:
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
    commands.add_parser(
        "generate-secrets", help="print new CONSENT_HMAC_KEY / CONSENT_KEY_ENCRYPTION_KEY"
    ).set_defaults(run=generate_secrets)
    args = parser.parse_args(argv)
    from services.runtime import logs

    logs.configure("consent-manage")
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
