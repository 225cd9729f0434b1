"""A PostgreSQL server of a test's own (initdb, pg_ctl) on a free port, that the test may stop and start again while
the machine's shared server, which CI needs afterwards, stays up.

initdb refuses to run as root: as root, the cluster is created and run as the `postgres` system user (runuser), in a
temporary directory that user owns; as anyone else, as that user.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from deploy.local.processes import free_port


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise AssertionError("PostgreSQL's initdb is required (/usr/lib/postgresql/*/bin or PATH) and is not there")
    return Path(initdb).parent


class PrivatePostgres:
    """`with PrivatePostgres() as pg:` a running server at `pg.url` (trust auth, database `test`); `stop()` shuts it
    down at once (an outage: open connections are cut), `start()` brings it back on the same port with its data."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="novahouse-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/test"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str) -> None:
        done = subprocess.run([*self._as_user, *argv], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stderr or done.stdout}")

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), *args)

    def create(self) -> PrivatePostgres:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync")
        self.start()
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE test")
        return self

    def start(self) -> None:
        """Starts the server and returns once it accepts connections (pg_ctl -w waits for that)."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off -c max_connections=200"
        self._pg_ctl("-w", "-t", "60", "-o", options, "start")

    def stop(self) -> None:
        """Immediate shutdown: every connection is cut, as when the server or its host goes away."""
        self._pg_ctl("-w", "-m", "immediate", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        if self.running():
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        try:
            return self.create()
        except BaseException:
            self.destroy()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()
