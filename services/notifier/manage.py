"""Operator and CronJob commands of the notifier. Each prints what it did and exits non-zero on failure.

  migrate    bring the database schema to the newest revision
  purge-dlq  delete delivered, failed, dead and cancelled entries older than DLQ_CLEANUP_DAYS (the CronJob)
  dlq-stats  print delivery counts by destination and status
"""
from __future__ import annotations

import argparse
import sys

from services.notifier.app import NotifierApp, build
from services.notifier.settings import Settings
from services.runtime.commands import Command, CommandContext, run_command

Context = CommandContext[Settings, NotifierApp]


def migrate(context: Context, _args: argparse.Namespace) -> int:
    context.app.migrate()
    print("notifier schema is at head")
    return 0


def purge_dlq(context: Context, args: argparse.Namespace) -> int:
    days: int = args.older_than_days if args.older_than_days is not None else context.settings.cleanup_days
    deleted = context.app.store.purge_ended(days)
    for status, count in deleted.items():
        print(f"purged {count} {status} entries older than {days} days")
    return 0


def dlq_stats(context: Context, _args: argparse.Namespace) -> int:
    counts = context.app.store.counts()
    lines = [f"{destination:8s} {status:10s} {count}" for destination, status, count in counts]
    print("\n".join(lines) if lines else "no deliveries")
    return 0


COMMANDS: list[Command[Settings, NotifierApp]] = [
    Command("migrate", "bring the notifier's database schema to the newest revision", migrate),
    Command("purge-dlq", "delete delivered, failed, dead and cancelled entries older than DLQ_CLEANUP_DAYS "
            "(the CronJob)", purge_dlq,
            lambda p: p.add_argument("--older-than-days", type=int, default=None,
                                     help="default: DLQ_CLEANUP_DAYS (30)")),
    Command("dlq-stats", "print delivery counts by destination and status", dlq_stats),
]


def main(argv: list[str] | None = None) -> int:
    return run_command("notifier", __doc__ or "", Settings.from_env, build, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
