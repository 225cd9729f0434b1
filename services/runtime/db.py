"""The SQLAlchemy engine every service uses: a SQLite file by default, PostgreSQL when DATABASE_URL is set.

On PostgreSQL each service keeps its tables in its own schema (DB_SCHEMA, default the service name), so services
sharing one database server still never touch each other's tables.
"""
from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from collections.abc import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from services.runtime.config import ConfigError, data_dir, env_bool, env_int, env_str

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def database_url(service: str) -> str:
    """DATABASE_URL, else the service's SQLite file; with REQUIRE_DATABASE_URL=true (as the manifests set) an unset
    DATABASE_URL is an error naming it, so no pod serves or migrates a SQLite file of its own."""
    url = env_str("DATABASE_URL", "")
    if not url and env_bool("REQUIRE_DATABASE_URL", False):
        raise ConfigError("DATABASE_URL is not set, and REQUIRE_DATABASE_URL=true: this process must use "
                          "PostgreSQL, not a SQLite file of its own")
    if not url:
        return f"sqlite:///{data_dir() / f'{service}.db'}"
    return sqlalchemy_url(url)


def sqlalchemy_url(url: str) -> str:
    """The URL as operators write it (postgres://, postgresql://) in the form SQLAlchemy uses with psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


class Database:
    """One engine and session factory for one service."""

    def __init__(self, service: str, url: str | None = None, schema: str | None = None):
        self.service = service
        self.url = url or database_url(service)
        self.schema = None
        if self.url.startswith("sqlite"):
            self.engine = self._sqlite_engine(self.url)
        else:
            self.schema = schema or env_str("DB_SCHEMA", service)
            if not _SCHEMA_NAME.match(self.schema):
                raise ConfigError(f"DB_SCHEMA={self.schema!r} is not a valid schema name")
            self.engine = create_engine(
                self.url,
                pool_size=env_int("DB_POOL_SIZE", 10, minimum=1),
                max_overflow=env_int("DB_POOL_OVERFLOW", 10, minimum=0),
                pool_pre_ping=True,
                connect_args={"options": f"-csearch_path={self.schema}", "connect_timeout": 5},
            )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @staticmethod
    def _sqlite_engine(url: str) -> Engine:
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN itself
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        # SQLite has one writer at a time. Threads of this process queue on a lock instead of in SQLite's busy
        # handler, which sleeps with back-off (up to 100 ms a step) and turns contention into long tails; other
        # processes on the same file still wait in the busy handler.
        writer_gate = threading.Lock()

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Connection) -> None:
            if not writer_gate.acquire(timeout=30):
                raise TimeoutError("the SQLite database stayed busy for 30 s")
            conn.info["holds_writer_gate"] = True
            try:
                # Take the write lock at BEGIN so concurrent writers queue instead of failing on upgrade.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                _release(conn)
                raise

        @event.listens_for(engine, "commit")
        @event.listens_for(engine, "rollback")
        def _release(conn: Connection) -> None:
            if conn.info.pop("holds_writer_gate", False):
                writer_gate.release()

        return engine

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block ends, rolled back on any error."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
