"""Chat benchmark: the CPU cost of understanding one message, 5-turn lead-capture conversations through Envoy,
and follow-up claims on PostgreSQL.

Printed, not asserted. The conversations run against the whole local stack (real consent and notifier, Slack and
Monday.com answered by local receivers) with the rate limits raised so that only the work itself is measured.
"""
from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.eval import CORPUS, cpu_ms_per_message, read_corpus
from services.chat.app import build
from services.chat.knowledge import KnowledgeBase
from services.chat.settings import Settings
from services.chat.storage import Conversation
from services.runtime.clock import utcnow
from services.runtime.db import Database
from testsupport import backing
from testsupport.peers import PeerServer
from testsupport.receivers import HttpReceiver, monday_graphql
from testsupport.stack import running_stack

RAISED = {
    "CHAT_RATE_LIMIT": "100000 per minute",
    "API_RATE_LIMIT_MINUTE": "100000 per minute",
    "API_RATE_LIMIT_HOUR": "1000000 per hour",
    "LOCAL_RATE_LIMIT_DISABLED": "true",
}
THREADS = 16
DURATION_S = 20.0
MAX_CONVERSATIONS = 5000
FOLLOWUPS = 2000


def turns(n: int) -> list[dict]:
    return [
        {"message": "Dzień dobry, ile kosztuje wykończenie mieszkania?"},
        # Each visitor a different person (email and phone): the same phone would make them one returning visitor.
        {"message": f"Jan Kowalski, bench{n}@example.com, 600 {n // 1000 % 1000:03d} {n % 1000:03d}, Warszawa, 85 m2"},
        {"message": "Budżet 250 tys. zł"},
        {"message": "Chcemy zacząć od zaraz"},
        {"message": "", "processing_consent": True, "marketing_consent": True},
    ]


def conversations(port: int) -> tuple[list[float], int, int, float]:
    """(latency of every message, conversations completed, errors, elapsed seconds)."""
    latencies: list[float] = []
    completed, errors = [0], [0]
    lock = threading.Lock()
    counter = [0]
    stop_at = time.monotonic() + DURATION_S

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        while time.monotonic() < stop_at:
            with lock:
                if counter[0] >= MAX_CONVERSATIONS:
                    break
                counter[0] += 1
                n = counter[0]
            session = ""
            for body in turns(n):
                started = time.perf_counter()
                conn.request("POST", "/api/chatbot/chat", body=json.dumps({**body, "session_id": session}),
                             headers={"content-type": "application/json"})
                response = conn.getresponse()
                payload = response.read()
                mine.append(time.perf_counter() - started)
                if response.status != 200:
                    with lock:
                        errors[0] += 1
                    break
                session = json.loads(payload)["session_id"]
            else:
                with lock:
                    completed[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    workers = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return latencies, completed[0], errors[0], time.monotonic() - started


def percentile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def bench_conversations() -> None:
    with tempfile.TemporaryDirectory() as tmp, HttpReceiver() as slack, HttpReceiver(respond=monday_graphql) as monday:
        env = {**RAISED, "SLACK_WEBHOOK_URL": slack.url, "MONDAY_API_URL": monday.url, "MONDAY_API_KEY": "bench",
               "MONDAY_BOARD_ID": "1", "LOG_LEVEL": "WARNING"}
        with running_stack(Path(tmp), env=env) as gw:
            latencies, completed, errors, elapsed = conversations(gw.stack.config.public_port)
    print(f"chat conversations: {THREADS} concurrent visitors, 5 turns each, {elapsed:.1f} s, SQLite, no Redis")
    print(f"  conversations completed: {completed}, messages: {len(latencies)}, errors: {errors}")
    print(f"  messages/s: {len(latencies) / elapsed:.1f}, leads/s: {completed / elapsed:.1f}")
    if latencies:
        p50, p99 = statistics.median(latencies) * 1000, percentile_ms(latencies, 0.99)
        print(f"  latency p50: {p50:.1f} ms, p99: {p99:.1f} ms")


def seed(db: Database, count: int) -> None:
    then = utcnow() - dt.timedelta(hours=25)
    with db.session() as s:
        s.add_all(
            Conversation(session_id=f"00000000-0000-4000-8000-{i:012d}", slots={}, stage="done", language="pl",
                         contact_email=f"bench{i}@example.com", marketing_consent=True, last_activity_at=then)
            for i in range(count)
        )


def bench_followups() -> None:
    with PeerServer() as peers:
        peers.consent.allow_marketing([f"bench{i}@example.com" for i in range(FOLLOWUPS)])
        for workers in (1, 4):
            schema = backing.unique_name("bench_chat")
            app = build(Settings(backing.TEST_DATABASE_URL.replace("postgresql://", "postgresql+psycopg://"),
                                 db_schema=schema, consent_addr=peers.address, notifier_addr=peers.address))
            db = app.db
            try:
                app.migrate()
                seed(db, FOLLOWUPS)
                env = {**os.environ, "DATABASE_URL": backing.TEST_DATABASE_URL, "DB_SCHEMA": schema,
                       "NOTIFIER_ADDR": peers.address, "CONSENT_ADDR": peers.address, "LOG_LEVEL": "WARNING"}
                command = [sys.executable, "-m", "services.chat.manage", "run-followups", "--limit", str(FOLLOWUPS)]
                started = time.monotonic()
                procs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL) for _ in range(workers)]
                for proc in procs:
                    proc.wait(timeout=600)
                elapsed = time.monotonic() - started
                sent = len(peers.notifier.keys("followup:"))
                duplicates = sum(count - 1 for count in peers.notifier.calls.values())
                print(f"follow-ups on PostgreSQL, {workers} manage process(es): {FOLLOWUPS} due, {sent} sent, "
                      f"{duplicates} duplicates, {elapsed:.1f} s including process start, "
                      f"{sent / elapsed:.0f} claimed/s")
                peers.notifier.calls.clear()
            finally:
                db.dispose()
                backing.drop_schema(schema)


def bench_understanding() -> None:
    """CPU time of understanding one message (topic and language) over the development corpus, in this process."""
    kb = KnowledgeBase.load()
    examples = read_corpus(CORPUS / "dev.tsv")
    print(f"understanding: {cpu_ms_per_message(kb, examples):.3f} ms CPU per message "
          f"(time.process_time over {len(examples)} dev messages x 5)")


def main() -> None:
    bench_understanding()
    bench_conversations()
    bench_followups()


if __name__ == "__main__":
    main()
