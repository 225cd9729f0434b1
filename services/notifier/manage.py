"""Operator and CronJob commands of the notifier. Each prints what it did and exits non-zero on failure."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from services.notifier.app import NotifierApp, build
from services.notifier.settings import Settings
from services.runtime import logs
from services.runtime.request_context import request_scope


def migrate(app: NotifierApp, _args: argparse.Namespace) -> str:
    app.migrate()
    return "notifier schema is at head"


def purge_dlq(app: NotifierApp, args: argparse.Namespace) -> str:
    days: int = args.older_than_days if args.older_than_days is not None else app.settings.cleanup_days
    deleted = app.store.purge_delivered(days)
    return f"purged {deleted} delivered entries older than {days} days"


def dlq_stats(app: NotifierApp, _args: argparse.Namespace) -> str:
    counts = app.store.counts()
    lines = [f"{destination:8s} {status:10s} {count}" for destination, status, count in counts]
    return "\n".join(lines) if lines else "no deliveries"


Command = Callable[[NotifierApp, argparse.Namespace], str]
COMMANDS: dict[str, tuple[Command, str]] = {
    "migrate": (migrate, "bring the notifier's database schema to the newest revision"),
    "purge-dlq": (purge_dlq, "delete delivered entries older than DLQ_CLEANUP_DAYS (the CronJob)"),
    "dlq-stats": (dlq_stats, "print delivery counts by destination and status"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.notifier.manage", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name == "purge-dlq":
            sub.add_argument("--older-than-days", type=int, default=None, help="default: DLQ_CLEANUP_DAYS (30)")
    args = parser.parse_args(argv)
    logs.configure("notifier")
    app: NotifierApp | None = None
    # A command is a job, not a request: its log lines carry an id of their own.
    with request_scope():
        try:
            app = build(Settings.from_env())
            print(COMMANDS[args.command][0](app, args))
        except Exception as exc:  # noqa: BLE001 - a CronJob needs a message and a non-zero exit, not a traceback
            print(f"{args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        finally:
            if app is not None:
                app.db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
