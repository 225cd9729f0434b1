"""Operator and CronJob commands of the consent service. Each prints what it did and exits non-zero on failure.

  migrate           bring the database schema to the newest revision (needs no secrets: the migration Job has none)
  verify-ledger     check the chain (keys, links, newest signed checkpoint) and the current states against it;
                    exit 2 naming the first bad entry
  checkpoint-ledger sign the ledger head and publish it (the CronJob; the server also does it every interval)
  run-erasures      retry due erasures in every system once
  reapply-erasures  after a restore from an older backup: erase again whom the erasure journal names
  generate-secrets  print new CONSENT_HMAC_KEY / CONSENT_KEY_ENCRYPTION_KEY / CONSENT_CHAIN_KEYS /
                    CONSENT_CHECKPOINT_SIGNING_KEY values
"""
from __future__ import annotations

import argparse
import sys

from services.consent import app as consent_app
from services.consent.app import ConsentApp, build
from services.consent.checkpoints import CheckpointInvalid
from services.consent.crypto import SECRET_VARIABLES, new_secret_text
from services.consent.ledger_keys import new_key_values
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


def verify_ledger(context: Context, _args: argparse.Namespace) -> int:
    result = context.app.consent.verify()
    checkpoint = (f"signed checkpoint at entry {result.checkpoint_seq} ({result.checkpoint_at:%Y-%m-%dT%H:%M:%SZ}); "
                  f"a cut tail can go unseen for {result.truncation_window_s} s"
                  if result.checkpoint_at else "no signed checkpoint yet: a cut tail cannot be seen")
    if result.ok:
        print(f"ledger ok: {result.entries_checked} entries verified; {checkpoint}")
        return 0
    print(f"ledger BROKEN at entry {result.first_bad_seq}: {result.problem} ({result.entries_checked} verified before; "
          f"{checkpoint})")
    if result.state_mismatches:
        print(f"consent_state disagrees with the ledger for subjects: {', '.join(result.state_mismatches)}")
    return 2


def checkpoint_ledger(context: Context, args: argparse.Namespace) -> int:
    """Sign the head once the entries since the last checkpoint verify; exit 2 (nothing signed) when they do not."""
    try:
        checkpoint = context.app.checkpoints.integrity.checkpoint(after_restore=args.after_restore)
    except CheckpointInvalid as exc:
        print(f"ledger checkpoint REFUSED: {exc}")
        return 2
    print(f"ledger checkpoint signed: entry {checkpoint.seq} at {checkpoint.signed_at:%Y-%m-%dT%H:%M:%SZ}")
    return 0


def run_erasures(context: Context, _args: argparse.Namespace) -> int:
    """Attempt every due erasure once (the server's retry thread does the same periodically)."""
    app = context.app
    run = app.worker.run_due()
    summary = app.pending.summary()
    print(f"erasures completed: {run.completed}, failed: {run.failed}, still pending: {summary.pending}")
    return 0 if run.failed == 0 else 1


def reapply_erasures(context: Context, _args: argparse.Namespace) -> int:
    """After a restore from a backup older than some erasures: queue them again from the erasure journal, then
    attempt them (docs/privacy/erasure.md). Exit 1 while any is left for an operator or still failing."""
    app = context.app
    done = app.reapplier.run()
    for journalled, revoke_id in done.requeued:
        print(f"re-queued {journalled} as revoke {revoke_id}")
    for request_id in done.by_phone:
        print(f"{request_id}: an erasure by phone; repeat ErasePhoneOnly with the phone from its ticket and this id")
    for request_id in done.not_found:
        print(f"{request_id}: the restored consent database does not hold this person; see docs/privacy/erasure.md")
    run = app.worker.run_due()
    print(f"re-queued: {len(done.requeued)}, by phone: {len(done.by_phone)}, not found: {len(done.not_found)}; "
          f"erasures completed: {run.completed}, failed: {run.failed}")
    return 0 if run.failed == 0 and not done.by_phone and not done.not_found else 1


def generate_secrets(_context: Context, _args: argparse.Namespace) -> int:
    """Fresh values for the Kubernetes secret; print them, store them only in the secret store."""
    for name in SECRET_VARIABLES:
        print(f"{name}={new_secret_text()}")
    for name, value in new_key_values().items():
        print(f"{name}={value}")
    return 0


def _restore_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--after-restore", action="store_true",
                        help="the database was restored from a backup older than the newest checkpoint: walk the "
                             "whole chain and sign its head (see docs/privacy/ledger-integrity.md)")


COMMANDS: list[Command[Settings, ConsentApp]] = [
    Command("migrate", "apply the Alembic migrations", migrate),
    Command("verify-ledger", "check the chain, its signed checkpoint and the states; exit 2 if bad", verify_ledger),
    Command("checkpoint-ledger", "sign and publish the ledger head", checkpoint_ledger, _restore_flag),
    Command("run-erasures", "retry due erasures in every system once", run_erasures),
    Command("reapply-erasures", "after a restore: erase again the people the journal says were erased",
            reapply_erasures),
    Command("generate-secrets", "print new consent secrets and ledger keys", generate_secrets),
]


def main(argv: list[str] | None = None) -> int:
    return run_command("consent", __doc__ or "", Settings.from_env, build, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
