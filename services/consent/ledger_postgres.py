"""The ledger's PostgreSQL fast paths, through the psycopg driver under SQLAlchemy's connection.

An append batch takes two pipelined round trips (lock and lookups, then every write) besides its commit:
SQLAlchemy's per-statement overhead and one round trip per statement were most of a batch's time. The statements
are the same ones ledger_storage issues through SQLAlchemy on SQLite. Verification of a large ledger is split
across two processes reading one exported snapshot.
"""
from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from services.consent.chain import (
    ENTRY_COLUMNS,
    GENESIS_HASH,
    ChainKeys,
    Verification,
    Walk,
    against_head,
    joined,
    walk,
)
from services.consent.storage import STATE_COLUMNS
from services.runtime.db import Database

# A driver row: one value per selected column, of that column's type.
Row = tuple[Any, ...]  # Any: the columns' types differ


class _MultiRowInsert:
    """INSERT of many rows as one statement (one Bind, one result) instead of one per row."""

    def __init__(self, table: str, columns: Sequence[str], suffix: str = ""):
        self.columns = tuple(columns)
        self._prefix = f"INSERT INTO {table} ({', '.join(self.columns)}) VALUES "
        self._row = f"({', '.join(['%s'] * len(self.columns))})"
        self._suffix = suffix

    def execute(self, cursor: psycopg.Cursor[TupleRow], rows: Sequence[Mapping[str, object]]) -> None:
        statement = self._prefix + ", ".join([self._row] * len(rows)) + self._suffix
        cursor.execute(statement, [row[name] for row in rows for name in self.columns])


_LOCK_HEAD = "SELECT seq, entry_hash FROM ledger_head WHERE id = 1 FOR UPDATE"
_SUBJECTS = (
    f"SELECT s.subject_hash, s.subject_id, s.wrapped_key, {', '.join('c.' + n for n in STATE_COLUMNS)} "
    "FROM subjects s LEFT JOIN consent_state c ON c.subject_id = s.subject_id WHERE s.subject_hash = ANY(%s)"
)
_REQUESTS = "SELECT request_id, action, subject_id FROM ledger_entries WHERE request_id = ANY(%s)"
_INSERT_SUBJECTS = _MultiRowInsert("subjects", ("subject_id", "subject_hash", "wrapped_key", "created_at"))
_INSERT_ENTRIES = _MultiRowInsert("ledger_entries", ENTRY_COLUMNS)
_UPSERT_STATES = _MultiRowInsert(
    "consent_state", ["subject_id", *STATE_COLUMNS],
    " ON CONFLICT (subject_id) DO UPDATE SET " + ", ".join(f"{n} = EXCLUDED.{n}" for n in STATE_COLUMNS),
)
_DELETE_STATES = "DELETE FROM consent_state WHERE subject_id = ANY(%s)"
_UPDATE_HEAD = "UPDATE ledger_head SET seq = %s, entry_hash = %s WHERE id = 1"


def _driver(connection: Connection) -> psycopg.Connection[TupleRow]:
    pg = connection.connection.driver_connection
    if not isinstance(pg, psycopg.Connection):
        raise TypeError(f"the PostgreSQL fast path needs a psycopg connection, not {type(pg).__name__}")
    return pg


@contextlib.contextmanager
def _as_sqlalchemy_errors() -> Iterator[None]:
    """Driver errors from the pipelined statements look like SQLAlchemy's (OperationalError and so on), as callers
    expect from every other statement."""
    try:
        yield
    except psycopg.Error as exc:
        raise DBAPIError.instance(None, None, exc, psycopg.Error) from exc


def lock_and_load(
    connection: Connection, subject_hashes: list[str], request_ids: list[str]
) -> tuple[Row, list[Row], list[Row]]:
    """Lock the chain head (FOR UPDATE serialises appenders of every replica) and, in the same round trip, load
    the subjects with their states and the earlier entries of these request ids.

    Returns the head (seq, entry_hash), subject rows (subject_hash, subject_id, wrapped_key, *STATE_COLUMNS, the
    states' None when there is none) and request rows (request_id, action, subject_id).
    """
    pg = _driver(connection)
    with _as_sqlalchemy_errors(), pg.pipeline():
        head = pg.execute(_LOCK_HEAD)
        known = pg.execute(_SUBJECTS, (subject_hashes,)) if subject_hashes else None
        earlier = pg.execute(_REQUESTS, (request_ids,)) if request_ids else None
    head_row = head.fetchone()
    if head_row is None:
        raise RuntimeError("ledger_head has no row: the consent database is not migrated")
    return head_row, known.fetchall() if known else [], earlier.fetchall() if earlier else []


def save(
    connection: Connection,
    new_subjects: Sequence[Mapping[str, object]],
    entries: Sequence[Mapping[str, object]],
    states: Sequence[Mapping[str, object]],
    forgotten_states: list[str],
    head: tuple[int, str],
) -> None:
    """Every write of a batch in one pipelined round trip; the commit that follows is the only other."""
    pg = _driver(connection)
    with _as_sqlalchemy_errors(), pg.pipeline(), pg.cursor() as cursor:
        if new_subjects:
            _INSERT_SUBJECTS.execute(cursor, new_subjects)
        _INSERT_ENTRIES.execute(cursor, entries)
        if states:
            _UPSERT_STATES.execute(cursor, states)
        if forgotten_states:
            cursor.execute(_DELETE_STATES, (forgotten_states,))
        cursor.execute(_UPDATE_HEAD, head)


# --- verification ----------------------------------------------------------------------------------------------

_SELECT_ROWS = f"SELECT {', '.join(ENTRY_COLUMNS)} FROM ledger_entries"


def _rows(pg: psycopg.Connection[TupleRow], where: str, bound: int, batch_rows: int) -> Iterator[Row]:
    """Rows straight from a server-side cursor in binary form: no ORM rows, no text parsing."""
    with pg.cursor(name="ledger_verify", binary=True) as cursor:
        cursor.execute(f"{_SELECT_ROWS} WHERE seq {where} %s ORDER BY seq", (bound,))
        while batch := cursor.fetchmany(batch_rows):
            yield from batch


def _walk_later_range(
    conninfo: str, schema: str, snapshot: str, after_seq: int, batch_rows: int, keys: ChainKeys, unkeyed_until: int
) -> Walk:
    """In a second process: the entries after after_seq, read in the snapshot the first process exported."""
    with psycopg.connect(conninfo, options=f"-csearch_path={schema}") as pg:
        pg.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        pg.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        return walk(_rows(pg, ">", after_seq, batch_rows), after_seq + 1, None, keys, unkeyed_until)


def verify(
    db: Database, connection: Connection, head_seq: int, head_hash: str, keys: ChainKeys, unkeyed_until: int,
    batch_rows: int, parallel_from: int,
) -> Verification:
    """Verify in connection's REPEATABLE READ transaction: from parallel_from entries on, as two contiguous ranges
    walked at once, by this process and a spawned one, from one exported snapshot.

    Each range checks its own links and hashes; the seam check is that the second range's first prev_hash is the
    first range's last entry_hash, so together they prove exactly what one walk would.
    """
    pg = _driver(connection)
    if head_seq < parallel_from:
        first_walk = walk(_rows(pg, ">=", 1, batch_rows), 1, GENESIS_HASH, keys, unkeyed_until)
        return against_head(first_walk, head_seq, head_hash)
    exported = pg.execute("SELECT pg_export_snapshot()").fetchone()
    if exported is None or db.schema is None:
        raise RuntimeError("a PostgreSQL database has a schema and exports snapshots")
    split = head_seq // 2
    conninfo = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        later = pool.submit(
            _walk_later_range, conninfo, db.schema, exported[0], split, batch_rows, keys, unkeyed_until
        )
        first = walk(_rows(pg, "<=", split, batch_rows), 1, GENESIS_HASH, keys, unkeyed_until)
        second = later.result()
    return against_head(joined(first, second), head_seq, head_hash)
