"""Operator and CronJob commands of the chat service. Each prints what it did and exits non-zero on failure.

  migrate          bring the database schema to the newest revision
  run-followups    hand over pending leads, then send the due follow-ups (exactly once each)
  purge-cache      remove expired entries from every chat server's in-process cache (ChatAdmin.PurgeCache)
  purge-retention  delete conversations without a lead idle for more than RETENTION_DAYS, then leads (not customers)
                   idle for more than LEAD_RETENTION_DAYS with their transcripts, in batches
  hash-password    read a password (prompted, or the first line of stdin) and print its argon2 hash for STAFF_USERS
"""
from __future__ import annotations

import argparse
import getpass
import socket
import sys

import grpc

from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from services.chat import privacy
from services.chat.app import ChatApp, build
from services.chat.settings import Settings
from services.chat.staff_auth import hash_password as argon2_hash
from services.runtime.clients import channel_to
from services.runtime.commands import Command, CommandContext, run_command

Context = CommandContext[Settings, ChatApp]


def migrate(context: Context, _args: argparse.Namespace) -> int:
    app = context.app
    app.migrate()
    print(f"chat database migrated to head ({app.db.engine.dialect.name}, schema {app.db.schema or '-'})")
    return 0


def run_followups(context: Context, args: argparse.Namespace) -> int:
    app = context.app
    leads = app.leads.retry_pending()
    print(f"leads handed over: {leads.delivered}, still pending: {leads.pending}")
    run = app.followups.run(limit=args.limit)
    print(
        f"follow-ups due: {run.due}, sent: {run.sent}, already sent: {run.already_sent}, "
        f"skipped (no consent): {run.skipped_no_consent}, failed: {run.failed}"
    )
    return 1 if run.failed or leads.pending else 0


def replica_addresses(target: str) -> list[str]:
    """Every chat server behind CHAT_ADDR: each address its name resolves to (a headless Service resolves to every
    pod), or the explicit list of gRPC's `ipv4:host:port,host:port` form."""
    if target.startswith("ipv4:"):
        return [address for address in target.removeprefix("ipv4:").split(",") if address]
    host, _, port = target.rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    except (socket.gaierror, ValueError):
        return [target]
    resolved = [str(info[4][0]) for info in infos]
    return [f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in dict.fromkeys(resolved)]


def purge_cache(context: Context, args: argparse.Namespace) -> int:
    """Each replica keeps its own in-process fallback entries, so every one of them is asked."""
    addresses = replica_addresses(context.settings.chat_addr)
    removed, failed = 0, []
    for address in addresses:
        stub = chat_pb2_grpc.ChatAdminStub(channel_to(address))  # type: ignore[no-untyped-call]  # generated without annotations
        try:
            reply: chat_pb2.PurgeCacheResponse = stub.PurgeCache(chat_pb2.PurgeCacheRequest(), timeout=args.timeout)
        except grpc.RpcError as exc:
            failed.append(address)
            print(f"purge-cache failed: the chat server at {address} did not answer ({exc.code().name})",
                  file=sys.stderr)
            continue
        removed += reply.removed
        print(f"  {address}: {reply.removed} removed")
    print(f"expired cache entries removed: {removed} (chat servers purged: {len(addresses) - len(failed)} of "
          f"{len(addresses)})")
    return 1 if failed else 0


def purge_retention(context: Context, args: argparse.Namespace) -> int:
    app = context.app
    days = args.days or app.settings.retention_days
    lead_days = args.lead_days or app.settings.lead_retention_days
    batch = args.batch_size or app.settings.retention_batch
    print(f"deleting conversations without a lead idle for more than {days} days and leads (not customers) idle "
          f"for more than {lead_days} days with their transcripts, {batch} per batch")
    done = privacy.purge_retention(
        app.db, days, lead_days, batch,
        progress=lambda n: print(f"  deleted so far: {n.conversations_deleted} conversations, "
                                 f"{n.leads_deleted} leads", flush=True),
    )
    print(f"conversations deleted: {done.conversations_deleted}")
    print(f"leads deleted: {done.leads_deleted}")
    return 0


def hash_password(_context: Context, _args: argparse.Namespace) -> int:
    """Never from the command line, where other users of the machine and the shell history would see it."""
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("hash-password: an empty password", file=sys.stderr)
        return 2
    print(argon2_hash(password))
    return 0


COMMANDS: list[Command[Settings, ChatApp]] = [
    Command("migrate", "apply the Alembic migrations", migrate),
    Command("run-followups", "send due follow-ups and retry pending leads", run_followups,
            lambda p: p.add_argument("--limit", type=int, default=0,
                                     help="at most this many follow-ups (0: FOLLOWUP_BATCH)")),
    Command("purge-cache", "purge expired in-process cache entries of every chat server at CHAT_ADDR", purge_cache,
            lambda p: p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server")),
    Command("purge-retention", "delete old conversations without a lead and old leads", purge_retention, lambda p: (
        p.add_argument("--days", type=int, default=0, help="age in days (0: RETENTION_DAYS)"),
        p.add_argument("--lead-days", type=int, default=0, help="age of leads in days (0: LEAD_RETENTION_DAYS)"),
        p.add_argument("--batch-size", type=int, default=0, help="rows per transaction (0: RETENTION_BATCH)"))),
    Command("hash-password", "print the argon2 hash of a password, for STAFF_USERS", hash_password),
]


def main(argv: list[str] | None = None) -> int:
    return run_command("chat", __doc__ or "", Settings.from_env, build, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
