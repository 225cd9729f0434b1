"""Operator and CronJob commands of the consent service. Each prints what it did and exits non-zero on failure.

  migrate           bring the database schema to the newest revision (needs no secrets: the migration Job has none)
  verify-ledger     walk the hash chain; exit 2 naming the first bad entry
  run-erasures      retry due erasures in the chat service once
  generate-secrets  print new CONSENT_HMAC_KEY / CONSENT_KEY_ENCRYPTION_KEY values
"""
from __future__ import annotations

import argparse
import sys

from services.consent import app as consent_app
from services.consent import ledger_storage
from services.consent.app import ConsentApp, build
from services.consent.crypto import SECRET_VARIABLES, new_secret_text
from services.consent.settings import Settings
from services.runtime.commands import Command, CommandContext, run_command

Context = CommandContext[Settings, ConsentApp]


def migrate(_context: Context, _args: argparse.Namespace) -> int:
    db = consent_app.database()
    try:
        consent_app.migrate(db)
        print(f"consent database migrated to head ({db.engine.dialect.name}, schema {db.schema or '-'})")
    finally:
        db.dispose()
    return 0


def verify_ledger(_context: Context, _args: argparse.Namespace) -> int:
    db = consent_app.database()
    try:
        result = ledger_storage.verify(db)
    finally:
        db.dispose()
    if result.ok:
        print(f"ledger ok: {result.entries_checked} entries verified")
        return 0
    print(f"ledger BROKEN at entry {result.first_bad_seq}: {result.problem} ({result.entries_checked} verified before)")
    return 2


def run_erasures(context: Context, _args: argparse.Namespace) -> int:
    """Attempt every due erasure once (the server's retry thread does the same periodically)."""
    app = context.app
    run = app.worker.run_due()
    summary = app.pending.summary()
    print(f"erasures completed: {run.completed}, failed: {run.failed}, still pending: {summary.pending}")
    return 0 if run.failed == 0 else 1


def generate_secrets(_context: Context, _args: argparse.Namespace) -> int:
    """Fresh values for the Kubernetes secret; print them, store them only in the secret store."""
    for name in SECRET_VARIABLES:
        print(f"{name}={new_secret_text()}")
    return 0


COMMANDS: list[Command[Settings, ConsentApp]] = [
    Command("migrate", "apply the Alembic migrations", migrate),
    Command("verify-ledger", "walk the hash chain; exit 2 naming the first bad entry", verify_ledger),
    Command("run-erasures", "retry due erasures in the chat service once", run_erasures),
    Command("generate-secrets", "print new CONSENT_HMAC_KEY / CONSENT_KEY_ENCRYPTION_KEY", generate_secrets),
]


def main(argv: list[str] | None = None) -> int:
    return run_command("consent", __doc__ or "", Settings.from_env, build, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
