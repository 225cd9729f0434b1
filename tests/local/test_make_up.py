"""`make up`'s program: everything starts, answers through Envoy, and Ctrl-C stops every process it started; on
PostgreSQL each service runs as its own role, its tables owned by its migration role."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import requests

from deploy.local import database_roles
from deploy.local.database_roles import ServiceRoles
from testsupport import backing
from testsupport.probes import tcp_open

SERVICES = ("chat", "consent", "notifier")


@contextlib.contextmanager
def make_up(args: list[str], env: dict[str, str] | None = None) -> Iterator[tuple[dict[str, str], list[str]]]:
    """Run the stack's program until it says it is up; yield (its printed URLs, its output); then Ctrl-C it and
    check it exits 0 with nothing left listening."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.local.stack", *args, "--free-ports"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines: list[str] = []
    up = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C stops everything"):
                up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ports: list[int] = []
    try:
        assert up.wait(120), "".join(lines)
        urls = dict(re.findall(r"^\s{2}(.+?)\s{2,}(\S+)$", "".join(lines), re.M))
        ports = [int(url.rsplit(":", 1)[1]) for url in urls.values()]
        yield urls, lines
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    assert not any(tcp_open("127.0.0.1", port) for port in ports), "a process of the stack is still listening"


def chat_answers(urls: dict[str, str]) -> bool:
    reply = requests.post(urls["public REST and gRPC"] + "/api/chatbot/chat", json={"message": "Dzień dobry"},
                          timeout=10)
    return reply.status_code == 200 and bool(reply.json()["reply"])


def test_stack_command_starts_everything_and_ctrl_c_stops_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MIGRATION_DATABASE_URL")}
    with make_up(["--data-dir", str(tmp_path)], env) as (urls, lines):
        assert chat_answers(urls)
        assert all(tcp_open("127.0.0.1", int(url.rsplit(":", 1)[1])) for url in urls.values())
    assert not any(line.startswith("PostgreSQL:") for line in lines)
    assert {path.name for path in tmp_path.glob("*.db")} >= {f"{svc}.db" for svc in SERVICES}


@pytest.mark.postgres
def test_on_postgres_each_service_runs_as_its_own_role_and_a_second_start_reuses_the_roles(tmp_path):
    backing.postgres_connect().close()
    prefix = backing.unique_name("makeup")
    roles = {svc: ServiceRoles(svc, f"{prefix}_{svc}", f"{prefix}_{svc}", f"{prefix}_{svc}_migrator", "", "")
             for svc in SERVICES}
    env = {**os.environ, "DATABASE_URL": backing.TEST_DATABASE_URL}
    try:
        for start in range(2):
            with make_up(["--data-dir", str(tmp_path), "--database-prefix", prefix], env) as (urls, lines):
                assert chat_answers(urls), start
                with backing.postgres_connect() as conn:
                    users = {r[0] for r in conn.execute("SELECT usename FROM pg_stat_activity WHERE usename <> ''")}
                    owners = conn.execute(
                        "SELECT n.nspname, pg_get_userbyid(c.relowner), count(*) FROM pg_class c"
                        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%s) AND c.relkind = 'r'"
                        " GROUP BY 1, 2", ([r.schema for r in roles.values()],)).fetchall()
                assert {r.role for r in roles.values()} <= users, users
                assert {(schema, owner) for schema, owner, _ in owners} == {
                    (r.schema, r.migrator) for r in roles.values()}
                assert f"chat connects as {prefix}_chat (migrated by {prefix}_chat_migrator)" in "".join(lines)
        assert not list(tmp_path.glob("*.db")), "a service fell back to SQLite"
    finally:
        with backing.postgres_connect() as conn:
            for svc_roles in roles.values():
                database_roles.drop(conn, svc_roles)
            left = conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (f"{prefix}%",)).fetchall()
        assert left == []
