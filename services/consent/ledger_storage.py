"""The ledger in the database, through SQLAlchemy: appending a batch of entries under the head lock, verifying the
whole chain from one snapshot, and its length. On PostgreSQL the hot statements go through ledger_postgres.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from services.consent import ledger_postgres
from services.consent.chain import (
    ENTRY_COLUMNS,
    GENESIS_HASH,
    UNKEYED,
    ChainKeys,
    Entry,
    Event,
    Verification,
    next_entry,
    verify_rows,
    walk,
)
from services.consent.storage import (
    STATE_COLUMNS,
    ConsentState,
    aware,
    consent_state,
    consent_texts,
    ledger_entries,
    ledger_head,
    subjects,
)
from services.runtime.clock import utcnow
from services.runtime.db import Database

# Below this many entries a second process costs more to start than it saves.
PARALLEL_MIN_ENTRIES = 200_000

_upsert = sqlite_insert(consent_state)
_UPSERT_STATES = _upsert.on_conflict_do_update(
    index_elements=[consent_state.c.subject_id], set_={name: _upsert.excluded[name] for name in STATE_COLUMNS}
)


def _state(
    subject_id: str, processing: bool, marketing: bool, last_action: str, last_action_at: datetime, last_seq: int,
    stated_at: datetime | None = None,
) -> ConsentState:
    return ConsentState(
        subject_id=subject_id, processing_consent=processing, marketing_consent=marketing, last_action=last_action,
        last_action_at=aware(last_action_at), last_seq=last_seq, stated_at=aware(stated_at or last_action_at),
    )


@dataclass
class Appender:
    """One ledger transaction: the chain head locked, new entries and current-state changes buffered.

    Buffering lets a whole batch of events reach the database together on save(); reads through find_request(),
    subject() and state() see what the batch already did.
    """

    connection: Connection
    keys: ChainKeys
    seq: int
    entry_hash: str
    postgres: bool = False
    appended: list[Entry] = field(default_factory=list)
    _requests: dict[str, tuple[str, str] | None] = field(default_factory=dict)
    _subjects: dict[str, tuple[str, bytes | None] | None] = field(default_factory=dict)
    _states: dict[str, ConsentState | None] = field(default_factory=dict)
    _changed_states: set[str] = field(default_factory=set)
    _new_subjects: list[dict[str, object]] = field(default_factory=list)

    @classmethod
    def locked(
        cls, connection: Connection, keys: ChainKeys, subject_hashes: Sequence[str] = (),
        request_ids: Sequence[str] = (),
    ) -> Appender:
        """Lock the chain head and load what the batch will ask about (see prefetch)."""
        if connection.dialect.name == "postgresql":
            hashes, ids = list(set(subject_hashes)), list(set(request_ids))
            (seq, entry_hash), known, earlier = ledger_postgres.lock_and_load(connection, hashes, ids)
            appender = cls(connection, keys, seq, entry_hash, postgres=True)
            appender._learn(hashes, known, ids, earlier)
            return appender
        # On SQLite, BEGIN IMMEDIATE has already serialised appenders.
        row = connection.execute(
            select(ledger_head.c.seq, ledger_head.c.entry_hash).where(ledger_head.c.id == 1).with_for_update()
        ).one()
        appender = cls(connection, keys, row.seq, row.entry_hash)
        appender.prefetch(subject_hashes, request_ids)
        return appender

    def prefetch(self, subject_hashes: Sequence[str], request_ids: Sequence[str]) -> None:
        """Load the subjects, their states and earlier request ids a batch will ask about, in two queries."""
        known: Sequence[Sequence[Any]] = ()  # Any: column values
        earlier: Sequence[Sequence[Any]] = ()  # Any: column values
        if subject_hashes:
            known = self.connection.execute(
                select(subjects.c.subject_hash, subjects.c.subject_id, subjects.c.wrapped_key,
                       *[consent_state.c[name] for name in STATE_COLUMNS])
                .join(consent_state, consent_state.c.subject_id == subjects.c.subject_id, isouter=True)
                .where(subjects.c.subject_hash.in_(set(subject_hashes)))
            ).all()
        if request_ids:
            earlier = self.connection.execute(
                select(ledger_entries.c.request_id, ledger_entries.c.action, ledger_entries.c.subject_id).where(
                    ledger_entries.c.request_id.in_(set(request_ids))
                )
            ).all()
        self._learn(subject_hashes, known, request_ids, earlier)

    def _learn(
        self,
        subject_hashes: Iterable[str],
        subject_rows: Iterable[Sequence[Any]],  # Any: (subject_hash, subject_id, wrapped_key, *STATE_COLUMNS)
        request_ids: Iterable[str],
        request_rows: Iterable[Sequence[Any]],  # Any: (request_id, action, subject_id)
    ) -> None:
        """What the database knows about these subjects and request ids; those it has no row for are None."""
        self._subjects.update(dict.fromkeys(subject_hashes))
        for subject_hash, subject_id, wrapped_key, *state in subject_rows:
            self._subjects[subject_hash] = (subject_id, wrapped_key)
            self._states[subject_id] = _state(subject_id, *state) if state[0] is not None else None
        self._requests.update(dict.fromkeys(request_ids))
        for request_id, action, subject_id in request_rows:
            self._requests[request_id] = (action, subject_id)

    def append(self, event: Event) -> Entry:
        entry = next_entry(self.keys, self.seq, self.entry_hash, event, utcnow())
        self.seq, self.entry_hash = entry["seq"], entry["entry_hash"]
        self.appended.append(entry)
        if event.request_id is not None:
            self._requests[event.request_id] = (event.action, event.subject_id)
        return entry

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
            "subject_id": subject_id, "subject_hash": subject_hash, "wrapped_key": wrapped_key, "created_at": utcnow(),
        })
        self._subjects[subject_hash] = (subject_id, wrapped_key)
        self._states[subject_id] = None

    def forget_subject(self, subject_id: str) -> None:
        """Erasure: the keyed hash and the wrapped key go; the random subject_id in the ledger links to nobody."""
        self._insert_new_subjects()
        self.connection.execute(
            update(subjects).where(subjects.c.subject_id == subject_id).values(
                subject_hash=None, wrapped_key=None, erased_at=utcnow()
            )
        )
        for subject_hash, known in list(self._subjects.items()):
            if known is not None and known[0] == subject_id:
                self._subjects[subject_hash] = None
        self._states[subject_id] = None
        self._changed_states.add(subject_id)

    def _insert_new_subjects(self) -> None:
        if self._new_subjects:
            self.connection.execute(subjects.insert(), self._new_subjects)
            self._new_subjects = []

    def state(self, subject_id: str) -> ConsentState | None:
        """The subject's current consent, or None when nothing is on record."""
        if subject_id not in self._states:
            row = self.connection.execute(
                select(consent_state).where(consent_state.c.subject_id == subject_id)
            ).first()
            self._states[subject_id] = None if row is None else _state(*row)
        return self._states[subject_id]

    def set_state(self, state: ConsentState) -> None:
        """The subject's new current consent, written with the entries on save()."""
        self._states[state["subject_id"]] = state
        self._changed_states.add(state["subject_id"])

    def save(self) -> None:
        if not self.appended:
            return
        states = [state for s in self._changed_states if (state := self._states[s]) is not None]
        forgotten = [s for s in self._changed_states if self._states[s] is None]
        if self.postgres:
            ledger_postgres.save(
                self.connection, self._new_subjects, self.appended, states, forgotten, (self.seq, self.entry_hash)
            )
            self._new_subjects = []
            return
        self._insert_new_subjects()
        # executemany: the driver pipelines the rows, and the compiled statement stays cached.
        self.connection.execute(ledger_entries.insert(), self.appended)
        if states:
            self.connection.execute(_UPSERT_STATES, states)
        if forgotten:
            self.connection.execute(delete(consent_state).where(consent_state.c.subject_id.in_(forgotten)))
        self.connection.execute(
            update(ledger_head).where(ledger_head.c.id == 1).values(seq=self.seq, entry_hash=self.entry_hash)
        )


@dataclass(frozen=True)
class ChainCheck:
    """What one snapshot of the database says: the walk against the stored head, the hash of the entry a signed
    checkpoint names (None when there is no such entry), and the consent_state rows the ledger contradicts as
    (subject_id, the entry they should follow)."""

    verification: Verification
    hash_at_checkpoint: str | None
    state_mismatches: list[tuple[str, int]]
    # consent_texts rows whose wording no longer has the hash they are stored under, each with the first entry that
    # references it (0: none does)
    altered_texts: list[tuple[str, int]]


def verify(
    db: Database,
    keys: ChainKeys,
    checkpoint_seq: int = 0,
    unkeyed_until: int = 0,
    batch_rows: int = 20000,
    parallel_from: int = PARALLEL_MIN_ENTRIES,
) -> ChainCheck:
    """Verify the whole chain from one consistent snapshot, streaming rows in seq order; in the same snapshot, read
    the entry hash at checkpoint_seq and replay the current states against the ledger."""
    connection = db.engine.connect()
    if db.is_postgres:
        connection = connection.execution_options(isolation_level="REPEATABLE READ")
    with connection as conn, conn.begin():
        head = conn.execute(select(ledger_head.c.seq, ledger_head.c.entry_hash).where(ledger_head.c.id == 1)).one()
        if db.is_postgres:
            verification = ledger_postgres.verify(
                db, conn, head.seq, head.entry_hash, keys, unkeyed_until, batch_rows, parallel_from
            )
        else:
            rows = conn.execution_options(yield_per=batch_rows).execute(
                select(*[ledger_entries.c[name] for name in ENTRY_COLUMNS]).order_by(ledger_entries.c.seq)
            )
            verification = verify_rows(rows, head.seq, head.entry_hash, keys, unkeyed_until)
        at_checkpoint: str | None = None
        if checkpoint_seq:
            at_checkpoint = conn.execute(
                select(ledger_entries.c.entry_hash).where(ledger_entries.c.seq == checkpoint_seq)
            ).scalar_one_or_none()
        return ChainCheck(verification, at_checkpoint, _state_mismatches(conn), _altered_texts(conn))


def _altered_texts(conn: Connection) -> list[tuple[str, int]]:
    rows = conn.execute(select(consent_texts.c.text_hash, consent_texts.c.wording).order_by(consent_texts.c.text_hash))
    altered = [text_hash for text_hash, wording in rows if hashlib.sha256(wording.encode()).hexdigest() != text_hash]
    return [(text_hash, conn.execute(
        select(func.coalesce(func.min(ledger_entries.c.seq), 0))
        .where(ledger_entries.c.text_version == TEXT_LABEL_PREFIX + text_hash)
    ).scalar_one()) for text_hash in altered]


TEXT_LABEL_PREFIX = "sha256:"  # an entry's text_version that references a consent_texts row

# Only an opt-in can be outranked by an earlier statement (it carries the time the visitor answered); an unsubscribe,
# revoke or erasure is stated when it is recorded, so it always becomes the current state.
_OPT_IN = "opt-in"


def _state_mismatches(conn: Connection) -> list[tuple[str, int]]:
    """consent_state rows the ledger contradicts: the entry they name (last_seq) is missing, is another subject's or
    says otherwise, or a later withdrawal of the subject should have replaced them. Each with the entry that should
    have set the state."""
    later = ledger_entries.alias("later")
    named = ledger_entries.alias("named")
    state = consent_state
    later_withdrawal = (
        select(func.min(later.c.seq))
        .where(later.c.subject_id == state.c.subject_id, later.c.seq > state.c.last_seq, later.c.action != _OPT_IN)
        .scalar_subquery()
    )
    rows = conn.execute(
        select(state.c.subject_id, func.coalesce(later_withdrawal, state.c.last_seq))
        .select_from(state.outerjoin(named, named.c.seq == state.c.last_seq))
        .where(or_(
            named.c.seq.is_(None),
            named.c.subject_id != state.c.subject_id,
            named.c.action != state.c.last_action,
            named.c.processing_consent != state.c.processing_consent,
            named.c.marketing_consent != state.c.marketing_consent,
            later_withdrawal.is_not(None),
        ))
        .order_by(state.c.subject_id)
    ).all()
    return [(subject_id, seq) for subject_id, seq in rows]


@dataclass(frozen=True)
class Head:
    """The chain's last entry as walked, and where its unkeyed entries end; what a checkpoint signs."""

    seq: int
    entry_hash: str
    unkeyed_until: int


def walked_head(db: Database, keys: ChainKeys, since: Head | None) -> tuple[Head, str]:
    """The head after walking the entries since a checkpoint (all of them without one), and the problem found
    ("" when none): a checkpoint is only signed over a chain that verifies from the one before.

    Without an earlier checkpoint the unkeyed entries are trusted on first use, provided none follows a keyed one.
    """
    connection = db.engine.connect()
    if db.is_postgres:
        connection = connection.execution_options(isolation_level="REPEATABLE READ")
    with connection as conn, conn.begin():
        if since is None:
            last_unkeyed, first_keyed = conn.execute(select(
                func.max(ledger_entries.c.seq).filter(ledger_entries.c.key_id == UNKEYED),
                func.min(ledger_entries.c.seq).filter(ledger_entries.c.key_id != UNKEYED),
            )).one()
            start = Head(0, GENESIS_HASH, last_unkeyed or 0)
            if first_keyed is not None and last_unkeyed is not None and last_unkeyed > first_keyed:
                return start, f"entry {last_unkeyed} is not keyed but follows keyed entry {first_keyed}"
        else:
            start = since
        rows = conn.execution_options(yield_per=20000).execute(
            select(*[ledger_entries.c[name] for name in ENTRY_COLUMNS])
            .where(ledger_entries.c.seq > start.seq).order_by(ledger_entries.c.seq)
        )
        walked = walk(rows, start.seq + 1, start.entry_hash, keys, start.unkeyed_until)
        if walked.bad is not None:
            return start, walked.bad.problem
        if since is not None:
            at_since = conn.execute(
                select(ledger_entries.c.entry_hash).where(ledger_entries.c.seq == since.seq)
            ).scalar_one_or_none()
            if since.seq and at_since != since.entry_hash:
                return start, f"entry {since.seq} differs from the last signed checkpoint"
        return Head(walked.next_seq - 1, walked.last_hash or start.entry_hash, start.unkeyed_until), ""


def length(db: Database) -> int:
    """Entries in the ledger, from its head; raises unless the database answers and is migrated."""
    with db.engine.connect() as conn:
        seq: int = conn.execute(select(ledger_head.c.seq).where(ledger_head.c.id == 1)).scalar_one()
    return seq
