"""Operator and CronJob commands of the chat service. Each prints what it did and exits non-zero on failure.

  migrate          bring the database schema to the newest revision
  run-followups    hand over pending leads, then send the due follow-ups (exactly once each)
  purge-cache      remove expired entries from the running server's in-process cache (ChatAdmin.PurgeCache)
  purge-retention  delete conversations without a lead idle for more than RETENTION_DAYS, in batches
"""
from __future__ import annotations

import argparse
import sys

import grpc

from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from services.chat import privacy
from services.chat.app import ChatApp
from services.runtime import logs
from services.runtime.clients import service_channel


def migrate(app: ChatApp, _args) -> int:
    app.migrate()
    print(f"chat database migrated to head ({app.db.engine.dialect.name}, schema {app.db.schema or '-'})")
    return 0


def run_followups(app: ChatApp, args) -> int:
    leads = app.leads.retry_pending()
    print(f"leads handed over: {leads.delivered}, still pending: {leads.pending}")
    run = app.followups.run(limit=args.limit)
    print(
        f"follow-ups due: {run.due}, sent: {run.sent}, already sent: {run.already_sent}, "
        f"skipped (no consent): {run.skipped_no_consent}, failed: {run.failed}"
    )
    return 1 if run.failed or leads.pending else 0


def purge_cache(app: ChatApp, args) -> int:
    stub = chat_pb2_grpc.ChatAdminStub(service_channel("chat"))
    try:
        reply = stub.PurgeCache(chat_pb2.PurgeCacheRequest(), timeout=args.timeout)
    except grpc.RpcError as exc:
        print(f"purge-cache failed: the chat server did not answer ({exc.code().name})", file=sys.stderr)
        return 1
    print(f"expired cache entries removed: {reply.removed}")
    return 0


def purge_retention(app: ChatApp, args) -> int:
    days = args.days or app.settings.retention_days
    batch = args.batch_size or app.settings.retention_batch
    print(f"deleting conversations without a lead idle for more than {days} days, {batch} per batch")
    deleted = privacy.purge_retention(app.db, days, batch, progress=lambda n: print(f"  deleted {n} so far", flush=True))
    print(f"conversations deleted: {deleted}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.chat.manage", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply the Alembic migrations").set_defaults(run=migrate)
    followups = commands.add_parser("run-followups", help="send due follow-ups and retry pending leads")
    followups.add_argument("--limit", type=int, default=0, help="at most this many follow-ups (0: FOLLOWUP_BATCH)")
    followups.set_defaults(run=run_followups)
    cache = commands.add_parser("purge-cache", help="purge expired in-process cache entries of the server at CHAT_ADDR")
    cache.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server")
    cache.set_defaults(run=purge_cache)
    retention = commands.add_parser("purge-retention", help="delete old conversations without a lead")
    retention.add_argument("--days", type=int, default=0, help="age in days (0: RETENTION_DAYS)")
    retention.add_argument("--batch-size", type=int, default=0, help="rows per transaction (0: RETENTION_BATCH)")
    retention.set_defaults(run=purge_retention)
    args = parser.parse_args(argv)
    logs.configure("chat-manage")
    app = ChatApp.from_env()
    try:
        return args.run(app, args)
    finally:
        app.db.dispose()


if __name__ == "__main__":
    sys.exit(main())
