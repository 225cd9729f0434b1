"""The hash chain itself, with no database: what an entry hashes, and how a walk over entries finds the first that
does not fit.

entry_hash = HMAC-SHA256, under the chain key named by the entry's key_id, over a canonical JSON list of every
stored column but entry_hash itself (prev_hash and key_id included), so changing any single field of any row, or
removing, inserting or reordering rows, is found by a walk, and nobody without the key (the database owner
included) can recompute a hash. Entries written before the chain was keyed have key_id "" and a plain SHA-256 over
the first seventeen columns; they are accepted only up to the seq a signed checkpoint sealed (unkeyed_until).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring
from typing import Any, TypedDict

GENESIS_HASH = "0" * 64
UNKEYED = ""  # the key_id of entries hashed before the chain was keyed

# The order entry_hash covers the columns in; storage.ledger_entries must have exactly these, then entry_hash.
# Unkeyed entries cover the first seventeen (UNKEYED_COLUMNS), as they did when they were written.
HASHED_COLUMNS = (
    "seq", "recorded_at", "action", "subject_id", "processing_consent", "marketing_consent", "text_version",
    "source", "session_id", "conversation_id", "lead_id", "request_id", "email_enc", "client_ip_enc",
    "user_agent_enc", "reason_enc", "prev_hash", "key_id", "references_enc",
)
UNKEYED_COLUMNS = HASHED_COLUMNS[:HASHED_COLUMNS.index("key_id")]
ENTRY_COLUMNS = (*HASHED_COLUMNS, "entry_hash")
_PREV_INDEX = HASHED_COLUMNS.index("prev_hash")
_KEY_ID_INDEX = HASHED_COLUMNS.index("key_id")
_ENTRY_HASH_INDEX = len(HASHED_COLUMNS)  # a walked row has entry_hash right after the hashed columns
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_sha256 = hashlib.sha256
_json_string = encode_basestring  # what json's encoder writes for a str with ensure_ascii=False


def _json_hex(blob: bytes | None) -> str:
    return "null" if blob is None else f'"{blob.hex()}"'


def _canonical(values: Sequence[Any]) -> str:  # Any: one value per column, each of its column's type
    """The compact JSON list (json.dumps with ensure_ascii=False) of a row's UNKEYED_COLUMNS values, without its
    closing bracket, with datetimes (SQLite hands them back naive, PostgreSQL in the session's time zone) as
    microseconds since the epoch and binary ciphertexts as hex.

    It is written out directly, byte for byte what json.dumps gives (a test holds them together), because the
    generic encoder was two thirds of verify's time.
    """
    (seq, recorded_at, action, subject_id, processing, marketing, text_version, source, session_id,
     conversation_id, lead_id, request_id, email_enc, client_ip_enc, user_agent_enc, reason_enc, prev_hash,
     *_keyed) = values
    if recorded_at.tzinfo is None:
        recorded_at = recorded_at.replace(tzinfo=UTC)
    return (
        f"[{seq:d},{(recorded_at - _EPOCH) // _MICROSECOND:d},{_json_string(action)},{_json_string(subject_id)},"
        f"{'true' if processing else 'false'},{'true' if marketing else 'false'},{_json_string(text_version)},"
        f"{_json_string(source)},{_json_string(session_id)},{_json_string(conversation_id)},{_json_string(lead_id)},"
        f"{'null' if request_id is None else _json_string(request_id)},{_json_hex(email_enc)},"
        f"{_json_hex(client_ip_enc)},{_json_hex(user_agent_enc)},{_json_hex(reason_enc)},{_json_string(prev_hash)}"
    )


def hash_values(values: Sequence[Any]) -> str:  # Any: one value per column, each of its column's type
    """The unkeyed entry_hash (SHA-256) of a row given its UNKEYED_COLUMNS values: how entries were hashed before
    the chain was keyed, and so all an attacker without the chain key can compute."""
    return _sha256((_canonical(values) + "]").encode()).hexdigest()


class ChainKeys:
    """The chain's HMAC keys by id; current_id keys new entries, the others still verify the entries they keyed.

    HMAC-SHA256 (RFC 2104) is computed from each key's SHA-256 states after its inner and outer pad, made once and
    copied per entry: half the cost of hmac's own copy(), which a walk over a million entries notices.
    """

    def __init__(self, current_id: str, keys: Mapping[str, bytes]):
        if current_id not in keys:
            raise ValueError(f"the current chain key {current_id!r} is not among the keys")
        for key_id, key in keys.items():
            if not key_id or len(key_id) > 16 or not key_id.replace("-", "").isalnum():
                raise ValueError(f"a chain key id is 1-16 letters, digits or dashes, not {key_id!r}")
            if not 32 <= len(key) <= _SHA256_BLOCK:
                raise ValueError(f"chain key {key_id!r} must be 32 to {_SHA256_BLOCK} bytes")
        self.current_id = current_id
        self.keys = dict(keys)
        self._pads = {key_id: _pads(key) for key_id, key in self.keys.items()}

    def __reduce__(self) -> tuple[type[ChainKeys], tuple[str, dict[str, bytes]]]:
        """Pickled as the keys themselves (a spawned verifying process rebuilds the pads)."""
        return ChainKeys, (self.current_id, self.keys)

    def entry_hash(self, values: Sequence[Any]) -> str | None:  # Any: HASHED_COLUMNS values (entry_hash may follow)
        """entry_hash of a row given its HASHED_COLUMNS values, in that order (called a million times by a walk);
        None when its key_id names no key held here (or an unkeyed row carries a column it could not have had).

        What is MACed is the compact JSON list of the unkeyed form's seventeen values (see _canonical), then key_id
        and references_enc, written out in one go here: a second function call per row showed in verify's time.
        """
        (seq, recorded_at, action, subject_id, processing, marketing, text_version, source, session_id,
         conversation_id, lead_id, request_id, email_enc, client_ip_enc, user_agent_enc, reason_enc, prev_hash,
         key_id, references_enc, *_entry_hash) = values
        pads = self._pads.get(key_id)
        if pads is None:
            if key_id == UNKEYED and references_enc is None:
                return hash_values(values)
            return None
        if recorded_at.tzinfo is None:
            recorded_at = recorded_at.replace(tzinfo=UTC)
        inner, outer = pads[0].copy(), pads[1].copy()
        inner.update((
            f"[{seq:d},{(recorded_at - _EPOCH) // _MICROSECOND:d},{_json_string(action)},{_json_string(subject_id)},"
            f"{'true' if processing else 'false'},{'true' if marketing else 'false'},{_json_string(text_version)},"
            f"{_json_string(source)},{_json_string(session_id)},{_json_string(conversation_id)},"
            f"{_json_string(lead_id)},{'null' if request_id is None else _json_string(request_id)},"
            f"{_json_hex(email_enc)},{_json_hex(client_ip_enc)},{_json_hex(user_agent_enc)},{_json_hex(reason_enc)},"
            f"{_json_string(prev_hash)},{_json_string(key_id)},{_json_hex(references_enc)}]"
        ).encode())
        outer.update(inner.digest())
        return outer.hexdigest()


_SHA256_BLOCK = 64


def _pads(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """SHA-256 states after HMAC's inner and outer padded key (keys of at most one block are used as they are)."""
    block = key.ljust(_SHA256_BLOCK, b"\0")
    return (_sha256(bytes(b ^ 0x36 for b in block)), _sha256(bytes(b ^ 0x5C for b in block)))


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
    references_enc: bytes | None = None


class Entry(TypedDict):
    """One ledger row as stored: ENTRY_COLUMNS by name (a dict, so a batch of them inserts as is)."""

    seq: int
    recorded_at: datetime
    action: str
    subject_id: str
    processing_consent: bool
    marketing_consent: bool
    text_version: str
    source: str
    session_id: str
    conversation_id: str
    lead_id: str
    request_id: str | None
    email_enc: bytes | None
    client_ip_enc: bytes | None
    user_agent_enc: bytes | None
    reason_enc: bytes | None
    prev_hash: str
    key_id: str
    references_enc: bytes | None
    entry_hash: str


def next_entry(keys: ChainKeys, prev_seq: int, prev_hash: str, event: Event, recorded_at: datetime) -> Entry:
    """The entry that records event right after the entry (prev_seq, prev_hash), keyed with the current key."""
    seq = prev_seq + 1
    entry_hash = keys.entry_hash((
        seq, recorded_at, event.action, event.subject_id, event.processing_consent, event.marketing_consent,
        event.text_version, event.source, event.session_id, event.conversation_id, event.lead_id, event.request_id,
        event.email_enc, event.client_ip_enc, event.user_agent_enc, event.reason_enc, prev_hash, keys.current_id,
        event.references_enc,
    ))
    if entry_hash is None:
        raise RuntimeError("the current chain key is always held")
    return Entry(
        seq=seq, recorded_at=recorded_at, action=event.action, subject_id=event.subject_id,
        processing_consent=event.processing_consent, marketing_consent=event.marketing_consent,
        text_version=event.text_version, source=event.source, session_id=event.session_id,
        conversation_id=event.conversation_id, lead_id=event.lead_id, request_id=event.request_id,
        email_enc=event.email_enc, client_ip_enc=event.client_ip_enc, user_agent_enc=event.user_agent_enc,
        reason_enc=event.reason_enc, prev_hash=prev_hash, key_id=keys.current_id,
        references_enc=event.references_enc, entry_hash=entry_hash,
    )


# --- verification -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verification:
    ok: bool
    entries_checked: int
    first_bad_seq: int = 0
    problem: str = ""
    # The newest signed checkpoint checked against (0/None: none yet), and how long a cut tail can go unseen.
    checkpoint_seq: int = 0
    checkpoint_at: datetime | None = None
    truncation_window_s: int = 0
    # Subjects whose consent_state row disagrees with the ledger (pseudonymous ids).
    state_mismatches: tuple[str, ...] = field(default=())


@dataclass
class Walk:
    """What walking one contiguous range of the chain found: where it ended, and the first entry that did not fit."""

    start_seq: int
    next_seq: int
    checked: int = 0
    first_prev_hash: str | None = None
    last_hash: str | None = None
    bad: Verification | None = None


def _unfit(keys: ChainKeys, row: Sequence[Any], unkeyed_until: int) -> str:  # Any: column values
    """Why a row that failed the walk's hash check does not fit."""
    seq, key_id = row[0], row[_KEY_ID_INDEX]
    if key_id == UNKEYED and seq > unkeyed_until:
        return f"entry {seq} is not keyed (unkeyed entries end at {unkeyed_until}, as signed)"
    if key_id != UNKEYED and key_id not in keys.keys:
        return f"entry {seq} names an unknown chain key"
    return f"entry {seq} does not match its hash (content changed)"


def walk(
    rows: Iterable[Sequence[Any]],  # Any: column values
    first_seq: int,
    prev_hash: str | None,
    keys: ChainKeys,
    unkeyed_until: int = 0,
) -> Walk:
    """Check rows (ENTRY_COLUMNS values, in seq order) from first_seq on; unkeyed entries only up to unkeyed_until.

    prev_hash None leaves the first row's link to the caller, which checks it at the seam with the range before.
    """
    result = Walk(first_seq, first_seq)
    expected_seq, checked, last_hash = first_seq, 0, prev_hash
    entry_hash = keys.entry_hash
    for row in rows:
        seq = row[0]
        if seq != expected_seq:
            problem = f"entry {expected_seq} is missing (next found: {seq})"
            result.bad = Verification(False, checked, expected_seq, problem)
            break
        if entry_hash(row) != row[_ENTRY_HASH_INDEX] or (row[_KEY_ID_INDEX] == UNKEYED and seq > unkeyed_until):
            result.bad = Verification(False, checked, seq, _unfit(keys, row, unkeyed_until))
            break
        if last_hash is None:
            result.first_prev_hash = row[_PREV_INDEX]
        elif row[_PREV_INDEX] != last_hash:
            result.bad = Verification(False, checked, seq, f"entry {seq} does not link to entry {seq - 1}")
            break
        last_hash, expected_seq, checked = row[_ENTRY_HASH_INDEX], seq + 1, checked + 1
    result.next_seq, result.checked, result.last_hash = expected_seq, checked, last_hash
    return result


def joined(first: Walk, second: Walk) -> Walk:
    """Two adjacent ranges as one: the second must start where the first ended and link to its last entry."""
    if first.bad is not None:
        return first
    checked = first.checked
    if first.next_seq != second.start_seq:
        missing = first.next_seq
        return Walk(1, missing, checked, bad=Verification(False, checked, missing, f"entry {missing} is missing"))
    if second.first_prev_hash is not None and second.first_prev_hash != first.last_hash:
        seq = second.start_seq
        problem = f"entry {seq} does not link to entry {seq - 1}"
        return Walk(1, seq, checked, bad=Verification(False, checked, seq, problem))
    if second.bad is not None:
        bad = second.bad
        return Walk(1, second.next_seq, checked + second.checked,
                    bad=Verification(False, checked + bad.entries_checked, bad.first_bad_seq, bad.problem))
    return Walk(1, second.next_seq, checked + second.checked, first.first_prev_hash,
                second.last_hash if second.checked else first.last_hash)


def against_head(result: Walk, head_seq: int, head_hash: str) -> Verification:
    """The walked chain (from entry 1) must end exactly at the entry the ledger head recorded."""
    checked = result.checked
    if result.bad is not None:
        return result.bad
    if head_seq > checked:
        return Verification(False, checked, checked + 1, f"entries {checked + 1}..{head_seq} are missing")
    if head_seq < checked:
        return Verification(False, checked, head_seq + 1, f"entries after {head_seq} are not in the ledger head")
    if head_hash != (result.last_hash or GENESIS_HASH):
        return Verification(False, checked, head_seq, f"entry {head_seq} differs from the hash the head recorded")
    return Verification(True, checked)


def verify_rows(
    rows: Iterable[Sequence[Any]], head_seq: int, head_hash: str, keys: ChainKeys, unkeyed_until: int = 0
) -> Verification:  # Any: as in walk
    """Walk all rows of the chain in seq order and name the first that does not fit."""
    return against_head(walk(rows, 1, GENESIS_HASH, keys, unkeyed_until), head_seq, head_hash)
