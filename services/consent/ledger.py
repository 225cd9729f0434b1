"""The hash chain: how an entry is appended under the head lock, and how the whole chain is verified.

entry_hash = SHA-256 over a canonical JSON list of every stored column but entry_hash itself (prev_hash included),
so changing any single field of any row, or removing, inserting or reordering rows, is found by verify().
"""
from __future__ import annotations

import hashlib
from json.encoder import encode_basestring
import multiprocessing
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable, Iterator, Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from services.consent.storage import GENESIS_HASH, consent_state, ledger_entries, ledger_head, subjects
from services.runtime.db import Database

HASHED_COLUMNS = tuple(c.name for c in ledger_entries.columns if c.name != "entry_hash")
_PREV_INDEX = HASHED_COLUMNS.index("prev_hash")
_ENTRY_HASH_INDEX = len(HASHED_COLUMNS)  # verify reads entry_hash right after the hashed columns
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


# The order entry_hash covers the columns in; the table must keep exactly these (checked at import).
_CANONICAL_COLUMNS = (
    "seq", "recorded_at", "action", "subject_id", "processing_consent", "marketing_consent", "text_version",
    "source", "session_id", "conversation_id", "lead_id", "request_id", "email_enc", "client_ip_enc",
    "user_agent_enc", "reason_enc", "prev_hash",
)
if HASHED_COLUMNS != _CANONICAL_COLUMNS:
    raise RuntimeError("ledger_entries columns changed: update hash_values() and _CANONICAL_COLUMNS together")
_sha256 = hashlib.sha256
_json_string = encode_basestring  # what json's encoder writes for a str with ensure_ascii=False


def _json_hex(blob: bytes | None) -> str:
    return "null" if blob is None else f'"{blob.hex()}"'


def hash_values(values: Sequence) -> str:
    """entry_hash of a row given its HASHED_COLUMNS values, in that order (called a million times by verify).

    What is hashed is the compact JSON list (json.dumps with ensure_ascii=False) of the values, with datetimes
    (SQLite hands them back naive, PostgreSQL in the session's time zone) as microseconds since the epoch and binary
    ciphertexts as hex. It is written out directly, byte for byte what json.dumps gives (a test holds them
    together), because the generic encoder was two thirds of verify's time.
    """
    (seq, recorded_at, action, subject_id, processing, marketing, text_version, source, session_id,
     conversation_id, lead_id, request_id, email_enc, client_ip_enc, user_agent_enc, reason_enc, prev_hash) = values
    if recorded_at.tzinfo is None:
        recorded_at = recorded_at.replace(tzinfo=timezone.utc)
    canonical = (
        f"[{seq:d},{(recorded_at - _EPOCH) // _MICROSECOND:d},{_json_string(action)},{_json_string(subject_id)},"
        f"{'true' if processing else 'false'},{'true' if marketing else 'false'},{_json_string(text_version)},"
        f"{_json_string(source)},{_json_string(session_id)},{_json_string(conversation_id)},{_json_string(lead_id)},"
        f"{'null' if request_id is None else _json_string(request_id)},{_json_hex(email_enc)},"
        f"{_json_hex(client_ip_enc)},{_json_hex(user_agent_enc)},{_json_hex(reason_enc)},{_json_string(prev_hash)}]"
    )
    return _sha256(canonical.encode()).hexdigest()


@dataclass
class Event:
    """What one append records; personal fields arrive already encrypted."""

    action: str
    subject_id: str
    processing_consent: bool
    marketing_consent: bool
    text_version: str = ""
    source: str = ""
    session_id: str = ""
    conversation_id: str = ""
    lead_id: str = ""
    request_id: str | None = None
    email_enc: bytes | None = None
    client_ip_enc: bytes | None = None
    user_agent_enc: bytes | None = None
    reason_enc: bytes | None = None


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)


_MISSING = object()
_STATE_COLUMNS = tuple(c.name for c in consent_state.columns if c.name != "subject_id")
_SUBJECT_COLUMNS = ("subject_id", "subject_hash", "wrapped_key", "created_at")


class _MultiRowInsert:
    """INSERT of many rows as one statement (one Bind, one result) instead of one per row."""

    def __init__(self, table: str, columns: Sequence[str], suffix: str = ""):
        self.columns = tuple(columns)
        self._prefix = f"INSERT INTO {table} ({', '.join(self.columns)}) VALUES "
        self._row = f"({', '.join(['%s'] * len(self.columns))})"
        self._suffix = suffix

    def execute(self, cursor, rows: Sequence[dict]) -> None:
        statement = self._prefix + ", ".join([self._row] * len(rows)) + self._suffix
        cursor.execute(statement, [row[name] for row in rows for name in self.columns])


class _PostgresSQL:
    """The statements of a batch on PostgreSQL, sent through the driver in two pipelined round trips.

    SQLAlchemy's per-statement overhead and one round trip per statement were most of a batch's time; the
    statements are the same ones the portable path issues through SQLAlchemy on SQLite.
    """

    lock_head = "SELECT seq, entry_hash FROM ledger_head WHERE id = 1 FOR UPDATE"
    subjects = (
        f"SELECT s.subject_hash, s.subject_id, s.wrapped_key, {', '.join('c.' + n for n in _STATE_COLUMNS)} "
        "FROM subjects s LEFT JOIN consent_state c ON c.subject_id = s.subject_id WHERE s.subject_hash = ANY(%s)"
    )
    requests = "SELECT request_id, action, subject_id FROM ledger_entries WHERE request_id = ANY(%s)"
    insert_subjects = _MultiRowInsert("subjects", _SUBJECT_COLUMNS)
    insert_entries = _MultiRowInsert("ledger_entries", [c.name for c in ledger_entries.columns])
    upsert_states = _MultiRowInsert(
        "consent_state", ["subject_id", *_STATE_COLUMNS],
        " ON CONFLICT (subject_id) DO UPDATE SET " + ", ".join(f"{n} = EXCLUDED.{n}" for n in _STATE_COLUMNS),
    )
    delete_states = "DELETE FROM consent_state WHERE subject_id = ANY(%s)"
    update_head = "UPDATE ledger_head SET seq = %s, entry_hash = %s WHERE id = 1"


@contextmanager
def _as_sqlalchemy_errors(connection: Connection) -> Iterator[None]:
    """Driver errors from the pipelined statements look like SQLAlchemy's (OperationalError and so on), as callers
    expect from every other statement."""
    dbapi_error = connection.dialect.loaded_dbapi.Error
    try:
        yield
    except dbapi_error as exc:
        raise DBAPIError.instance(None, None, exc, dbapi_error) from exc


@dataclass
class Appender:
    """One ledger transaction: the chain head locked, new entries and current-state changes buffered.

    Buffering lets a whole batch of events reach the database together on save(); reads through find_request()
    and state() see what the batch already did.
    """

    connection: Connection
    seq: int
    entry_hash: str
    appended: list[dict] = field(default_factory=list)
    _requests: dict[str, tuple[str, str] | None] = field(default_factory=dict)
    _subjects: dict[str, tuple[str, bytes | None] | None] = field(default_factory=dict)
    _states: dict[str, dict | None] = field(default_factory=dict)
    _changed_states: set[str] = field(default_factory=set)
    _new_subjects: list[dict] = field(default_factory=list)

    @classmethod
    def locked(cls, connection: Connection, subject_hashes: Sequence[str] = (), request_ids: Sequence[str] = ()):
        """Lock the chain head and load what the batch will ask about (see prefetch)."""
        if connection.dialect.name == "postgresql":
            return cls._locked_postgres(connection, list(set(subject_hashes)), list(set(request_ids)))
        # On SQLite, BEGIN IMMEDIATE has already serialised appenders.
        row = connection.execute(
            select(ledger_head.c.seq, ledger_head.c.entry_hash).where(ledger_head.c.id == 1).with_for_update()
        ).one()
        appender = cls(connection, row.seq, row.entry_hash)
        appender.prefetch(subject_hashes, request_ids)
        return appender

    @classmethod
    def _locked_postgres(cls, connection: Connection, subject_hashes: list[str], request_ids: list[str]):
        # FOR UPDATE serialises appenders of every replica; the lookups ride in the same round trip.
        pg = connection.connection.driver_connection
        with _as_sqlalchemy_errors(connection), pg.pipeline():
            head = pg.execute(_PostgresSQL.lock_head)
            known = pg.execute(_PostgresSQL.subjects, (subject_hashes,)) if subject_hashes else None
            earlier = pg.execute(_PostgresSQL.requests, (request_ids,)) if request_ids else None
        seq, entry_hash = head.fetchone()
        appender = cls(connection, seq, entry_hash)
        appender._subjects.update(dict.fromkeys(subject_hashes))
        for subject_hash, subject_id, wrapped_key, *state in known.fetchall() if known else ():
            appender._remember(subject_hash, subject_id, wrapped_key, state)
        appender._requests.update(dict.fromkeys(request_ids))
        for request_id, action, subject_id in earlier.fetchall() if earlier else ():
            appender._requests[request_id] = (action, subject_id)
        return appender

    def _remember(self, subject_hash: str, subject_id: str, wrapped_key: bytes | None, state: Sequence) -> None:
        self._subjects[subject_hash] = (subject_id, wrapped_key)
        known = dict(zip(_STATE_COLUMNS, state))
        self._states[subject_id] = {"subject_id": subject_id, **known} if known["last_seq"] is not None else None

    def append(self, event: Event) -> dict:
        row = {
            "seq": self.seq + 1,
            "recorded_at": utc_now(),
            **vars(event),
            "prev_hash": self.entry_hash,
        }
        row["entry_hash"] = hash_values([row[name] for name in HASHED_COLUMNS])
        self.seq, self.entry_hash = row["seq"], row["entry_hash"]
        self.appended.append(row)
        if event.request_id is not None:
            self._requests[event.request_id] = (event.action, event.subject_id)
        return row

    def prefetch(self, subject_hashes: Sequence[str], request_ids: Sequence[str]) -> None:
        """Load the subjects, their states and earlier request ids a batch will ask about, in two queries."""
        if subject_hashes:
            state_columns = [consent_state.c[name] for name in _STATE_COLUMNS]
            rows = self.connection.execute(
                select(subjects.c.subject_hash, subjects.c.subject_id, subjects.c.wrapped_key, *state_columns)
                .join(consent_state, consent_state.c.subject_id == subjects.c.subject_id, isouter=True)
                .where(subjects.c.subject_hash.in_(set(subject_hashes)))
            ).all()
            self._subjects.update(dict.fromkeys(subject_hashes))
            for subject_hash, subject_id, wrapped_key, *state in rows:
                self._remember(subject_hash, subject_id, wrapped_key, state)
        if request_ids:
            self._requests.update(dict.fromkeys(request_ids))
            for row in self.connection.execute(
                select(ledger_entries.c.request_id, ledger_entries.c.action, ledger_entries.c.subject_id).where(
                    ledger_entries.c.request_id.in_(set(request_ids))
                )
            ):
                self._requests[row.request_id] = (row.action, row.subject_id)

    def find_request(self, request_id: str) -> tuple[str, str] | None:
        """The (action, subject_id) of the entry recorded with this request id, or None."""
        if request_id not in self._requests:
            self.prefetch([], [request_id])
        return self._requests[request_id]

    def subject(self, subject_hash: str) -> tuple[str, bytes | None] | None:
        """(subject_id, wrapped_key) of the live subject with this keyed hash, or None."""
        if subject_hash not in self._subjects:
            self.prefetch([subject_hash], [])
        return self._subjects[subject_hash]

    def add_subject(self, subject_hash: str, subject_id: str, wrapped_key: bytes) -> None:
        """A new subject, inserted on save() before the entries that name it."""
        self._new_subjects.append({
            "subject_id": subject_id, "subject_hash": subject_hash, "wrapped_key": wrapped_key, "created_at": utc_now(),
        })
        self._subjects[subject_hash] = (subject_id, wrapped_key)
        self._states[subject_id] = None

    def forget_subject(self, subject_id: str) -> None:
        """Erasure: the keyed hash and the wrapped key go; the random subject_id in the ledger links to nobody."""
        self._insert_new_subjects()
        self.connection.execute(
            update(subjects).where(subjects.c.subject_id == subject_id).values(
                subject_hash=None, wrapped_key=None, erased_at=utc_now()
            )
        )
        for subject_hash, known in list(self._subjects.items()):
            if known is not None and known[0] == subject_id:
                self._subjects[subject_hash] = None
        self.set_state(subject_id, None)

    def _insert_new_subjects(self) -> None:
        if self._new_subjects:
            self.connection.execute(subjects.insert(), self._new_subjects)
            self._new_subjects = []

    def state(self, subject_id: str) -> dict | None:
        """The subject's current consent_state row as a dict, or None when nothing is on record."""
        state = self._states.get(subject_id, _MISSING)
        if state is _MISSING:
            row = self.connection.execute(
                select(consent_state).where(consent_state.c.subject_id == subject_id)
            ).first()
            state = self._states[subject_id] = dict(row._mapping) if row is not None else None
        return state

    def set_state(self, subject_id: str, state: dict | None) -> None:
        """New current state (None forgets it), written with the entries on save()."""
        self._states[subject_id] = None if state is None else {"subject_id": subject_id, **state}
        self._changed_states.add(subject_id)

    def save(self) -> None:
        if not self.appended:
            return
        upserts = [self._states[s] for s in self._changed_states if self._states[s] is not None]
        forgotten = [s for s in self._changed_states if self._states[s] is None]
        if self.connection.dialect.name == "postgresql":
            self._save_postgres(upserts, forgotten)
            return
        self._insert_new_subjects()
        # executemany: the driver pipelines the rows, and the compiled statement stays cached.
        self.connection.execute(ledger_entries.insert(), self.appended)
        if upserts:
            self.connection.execute(_upsert_states(self.connection.dialect.name), upserts)
        if forgotten:
            self.connection.execute(delete(consent_state).where(consent_state.c.subject_id.in_(forgotten)))
        self.connection.execute(
            update(ledger_head).where(ledger_head.c.id == 1).values(seq=self.seq, entry_hash=self.entry_hash)
        )

    def _save_postgres(self, upserts: list[dict], forgotten: list[str]) -> None:
        """Every write of the batch in one pipelined round trip; the commit that follows is the only other."""
        pg = self.connection.connection.driver_connection
        with _as_sqlalchemy_errors(self.connection), pg.pipeline(), pg.cursor() as cursor:
            if self._new_subjects:
                _PostgresSQL.insert_subjects.execute(cursor, self._new_subjects)
            _PostgresSQL.insert_entries.execute(cursor, self.appended)
            if upserts:
                _PostgresSQL.upsert_states.execute(cursor, upserts)
            if forgotten:
                cursor.execute(_PostgresSQL.delete_states, (forgotten,))
            cursor.execute(_PostgresSQL.update_head, (self.seq, self.entry_hash))
        self._new_subjects = []


def _upsert_states(dialect: str):
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(consent_state)
    return statement.on_conflict_do_update(
        index_elements=[consent_state.c.subject_id],
        set_={c.name: statement.excluded[c.name] for c in consent_state.columns if c.name != "subject_id"},
    )


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries_checked: int
    first_bad_seq: int = 0
    problem: str = ""


@dataclass
class _Walk:
    """What walking one contiguous range of the chain found: where it ended, and the first entry that did not fit."""

    start_seq: int
    next_seq: int
    checked: int = 0
    first_prev_hash: str | None = None
    last_hash: str | None = None
    bad: Verification | None = None


def _walk(rows: Iterable[Sequence], first_seq: int, prev_hash: str | None) -> _Walk:
    """Check rows (HASHED_COLUMNS values then entry_hash, in seq order) from first_seq on.

    prev_hash None leaves the first row's link to the caller, which checks it at the seam with the range before.
    """
    walk = _Walk(first_seq, first_seq)
    expected_seq, checked, last_hash = first_seq, 0, prev_hash
    for row in rows:
        seq = row[0]
        if seq != expected_seq:
            problem = f"entry {expected_seq} is missing (next found: {seq})"
            walk.bad = Verification(False, checked, expected_seq, problem)
            break
        if hash_values(row[:_ENTRY_HASH_INDEX]) != row[_ENTRY_HASH_INDEX]:
            walk.bad = Verification(False, checked, seq, f"entry {seq} does not match its hash (content changed)")
            break
        if last_hash is None:
            walk.first_prev_hash = row[_PREV_INDEX]
        elif row[_PREV_INDEX] != last_hash:
            walk.bad = Verification(False, checked, seq, f"entry {seq} does not link to entry {seq - 1}")
            break
        last_hash, expected_seq, checked = row[_ENTRY_HASH_INDEX], seq + 1, checked + 1
    walk.next_seq, walk.checked, walk.last_hash = expected_seq, checked, last_hash
    return walk


def _joined(first: _Walk, second: _Walk) -> _Walk:
    """Two adjacent ranges as one: the second must start where the first ended and link to its last entry."""
    if first.bad is not None:
        return first
    checked = first.checked
    if first.next_seq != second.start_seq:
        missing = first.next_seq
        return _Walk(1, missing, checked, bad=Verification(False, checked, missing, f"entry {missing} is missing"))
    if second.first_prev_hash is not None and second.first_prev_hash != first.last_hash:
        seq = second.start_seq
        problem = f"entry {seq} does not link to entry {seq - 1}"
        return _Walk(1, seq, checked, bad=Verification(False, checked, seq, problem))
    if second.bad is not None:
        bad = second.bad
        return _Walk(1, second.next_seq, checked + second.checked,
                     bad=Verification(False, checked + bad.entries_checked, bad.first_bad_seq, bad.problem))
    return _Walk(1, second.next_seq, checked + second.checked, first.first_prev_hash,
                 second.last_hash if second.checked else first.last_hash)


def _against_head(walk: _Walk, head_seq: int, head_hash: str) -> Verification:
    """The walked chain must end exactly at the entry the ledger head recorded."""
    checked = walk.checked
    if walk.bad is not None:
        return walk.bad
    if head_seq > checked:
        return Verification(False, checked, checked + 1, f"entries {checked + 1}..{head_seq} are missing")
    if head_seq < checked:
        return Verification(False, checked, head_seq + 1, f"entries after {head_seq} are not in the ledger head")
    if head_hash != (walk.last_hash or GENESIS_HASH):
        return Verification(False, checked, head_seq, f"entry {head_seq} differs from the hash the head recorded")
    return Verification(True, checked)


def verify_rows(rows: Iterable[Sequence], head_seq: int, head_hash: str) -> Verification:
    """Walk all rows of the chain in seq order and name the first that does not fit."""
    return _against_head(_walk(rows, 1, GENESIS_HASH), head_seq, head_hash)


# Below this many entries a second process costs more to start than it saves.
PARALLEL_MIN_ENTRIES = 200_000
_SELECT_ROWS = f"SELECT {', '.join((*HASHED_COLUMNS, 'entry_hash'))} FROM ledger_entries"


def _postgres_rows(pg, where: str, bound: int, batch_rows: int) -> Iterator[tuple]:
    """Rows straight from a psycopg server-side cursor in binary form: no ORM rows, no text parsing."""
    with pg.cursor(name="ledger_verify", binary=True) as cursor:
        cursor.execute(f"{_SELECT_ROWS} WHERE seq {where} %s ORDER BY seq", (bound,))
        while batch := cursor.fetchmany(batch_rows):
            yield from batch


def _walk_later_range(conninfo: str, schema: str, snapshot: str, after_seq: int, batch_rows: int) -> _Walk:
    """In a second process: the entries after after_seq, read in the snapshot the first process exported."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(conninfo, options=f"-csearch_path={schema}") as pg:
        pg.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        pg.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        return _walk(_postgres_rows(pg, ">", after_seq, batch_rows), after_seq + 1, None)


def _verify_postgres(
    db: Database, conn: Connection, head_seq: int, head_hash: str, batch_rows: int, parallel_from: int
) -> Verification:
    """Two contiguous ranges walked at once, by this process and a spawned one, from one exported snapshot.

    Each range checks its own links and hashes; the seam check is that the second range's first prev_hash is the
    first range's last entry_hash, so together they prove exactly what one walk would.
    """
    pg = conn.connection.driver_connection
    if head_seq < parallel_from:
        return _against_head(_walk(_postgres_rows(pg, ">=", 1, batch_rows), 1, GENESIS_HASH), head_seq, head_hash)
    snapshot = pg.execute("SELECT pg_export_snapshot()").fetchone()[0]
    split = head_seq // 2
    conninfo = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        later = pool.submit(_walk_later_range, conninfo, db.schema, snapshot, split, batch_rows)
        first = _walk(_postgres_rows(pg, "<=", split, batch_rows), 1, GENESIS_HASH)
        second = later.result()
    return _against_head(_joined(first, second), head_seq, head_hash)


def verify(db: Database, batch_rows: int = 20000, parallel_from: int = PARALLEL_MIN_ENTRIES) -> Verification:
    """Verify the whole chain from one consistent snapshot, streaming rows in seq order."""
    options = {"isolation_level": "REPEATABLE READ"} if db.is_postgres else {}
    with db.engine.connect().execution_options(**options) as conn:
        with conn.begin():
            head = conn.execute(select(ledger_head.c.seq, ledger_head.c.entry_hash).where(ledger_head.c.id == 1)).one()
            if db.is_postgres:
                return _verify_postgres(db, conn, head.seq, head.entry_hash, batch_rows, parallel_from)
            columns = [ledger_entries.c[name] for name in (*HASHED_COLUMNS, "entry_hash")]
            result = conn.execution_options(yield_per=batch_rows).execute(
                select(*columns).order_by(ledger_entries.c.seq)
            )
            return verify_rows(result, head.seq, head.entry_hash)


def length(db: Database) -> int:
    with db.engine.connect() as conn:
        return conn.execute(select(ledger_head.c.seq).where(ledger_head.c.id == 1)).scalar_one()
