"""Signed checkpoints of the ledger head, published where the database role cannot write, and the verification that
holds the chain against them.

A keyed chain alone cannot show a cut tail: whoever deletes the last entries and moves the head back leaves a chain
that verifies. So every CONSENT_CHECKPOINT_INTERVAL_S the head (seq, entry_hash, when, and where unkeyed entries
end) is signed with an Ed25519 key the database does not hold and written to a directory (make up) or to an
S3-compatible bucket with object lock in COMPLIANCE mode (Kubernetes). A cut of entries a checkpoint covers is
then found; a cut of later ones can go unseen for at most the interval (truncation_window_s).

A checkpoint is only signed over a chain that verifies from the previous checkpoint on, so a rewrite is never
sealed. Objects are named so the newest lists first (S3 lists in ascending key order only); the newest is the last
signed, which after a restore from an older backup (`manage checkpoint-ledger --after-restore`) may name a lower
entry than the one before.
"""
from __future__ import annotations

import base64
import json
import logging
import math
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from prometheus_client import Gauge

from services.consent import ledger_storage
from services.consent.chain import Verification
from services.consent.ledger_keys import LedgerKeys, public_key_text
from services.consent.ledger_storage import Head
from services.runtime.clock import utcnow
from services.runtime.db import Database
from services.runtime.errors import UnavailableError

log = logging.getLogger(__name__)

_LABEL = "novahouse/consent-ledger-checkpoint/v1"
# Set by the checkpoint thread each interval: the entries since the newest checkpoint verify (1) or not (0), when they
# last did, and the ledger's length then (deploy/monitoring alerts on the first two, the consent dashboard shows all).
LEDGER_VERIFIED = Gauge("consent_ledger_verified", "1 when the last check of the ledger verified, 0 when it did not")
LEDGER_LAST_VERIFIED = Gauge(
    "consent_ledger_last_verified_timestamp_seconds", "When the ledger last verified and its head was signed"
)
LEDGER_ENTRIES = Gauge("consent_ledger_entries", "Entries in the consent ledger at the last signed checkpoint")
LEDGER_VERIFIED.set(float("nan"))  # not checked yet: neither verifies nor fails
_INVERTED = 10**17  # names sort newest (by signing time) first: _INVERTED - microseconds since the epoch


class CheckpointInvalid(ValueError):
    """A published checkpoint that is malformed or not signed by a trusted key."""


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    entry_hash: str
    signed_at: datetime
    unkeyed_until: int
    public_key: str  # base64 of the raw Ed25519 public key that signed
    signature: str   # base64

    def signed_text(self) -> bytes:
        return (f"{_LABEL}\n{self.seq}\n{self.entry_hash}\n{self.signed_at.isoformat()}\n"
                f"{self.unkeyed_until}").encode()

    @property
    def name(self) -> str:
        micros = int(self.signed_at.timestamp() * 1_000_000)
        return f"{_INVERTED - micros:017d}-{self.seq}.json"

    def to_json(self) -> bytes:
        document = {"seq": self.seq, "entry_hash": self.entry_hash, "signed_at": self.signed_at.isoformat(),
                    "unkeyed_until": self.unkeyed_until, "public_key": self.public_key, "signature": self.signature}
        return json.dumps(document, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Checkpoint:
        try:
            document: dict[str, Any] = json.loads(data)  # Any: JSON values, checked below
            checkpoint = cls(int(document["seq"]), str(document["entry_hash"]),
                             datetime.fromisoformat(document["signed_at"]), int(document["unkeyed_until"]),
                             str(document["public_key"]), str(document["signature"]))
        except (ValueError, KeyError, TypeError):
            raise CheckpointInvalid("a published checkpoint is malformed") from None
        if checkpoint.signed_at.tzinfo is None:
            raise CheckpointInvalid("a published checkpoint has no time zone")
        return checkpoint


def sign(keys: LedgerKeys, head: Head, now: datetime) -> Checkpoint:
    unsigned = Checkpoint(head.seq, head.entry_hash, now, head.unkeyed_until, public_key_text(keys.trusted[0]), "")
    signature = keys.signing.sign(unsigned.signed_text())
    return replace(unsigned, signature=base64.b64encode(signature).decode())


def check_signature(keys: LedgerKeys, checkpoint: Checkpoint) -> None:
    """Raises CheckpointInvalid unless a trusted key signed exactly this checkpoint."""
    for trusted in keys.trusted:
        if public_key_text(trusted) != checkpoint.public_key:
            continue
        try:
            trusted.verify(base64.b64decode(checkpoint.signature), checkpoint.signed_text())
        except (InvalidSignature, ValueError):
            break
        return
    raise CheckpointInvalid(f"checkpoint of entry {checkpoint.seq} is not signed by a trusted key")


class CheckpointStore(Protocol):
    def put(self, checkpoint: Checkpoint) -> None: ...

    def newest(self) -> bytes | None:
        """The newest published checkpoint document, or None when none was published."""


class DirectoryStore:
    """Checkpoints as files (make up): a directory the database role has no access to."""

    def __init__(self, directory: Path):
        self.directory = directory

    def put(self, checkpoint: Checkpoint) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f".{checkpoint.name}.partial"
        partial.write_bytes(checkpoint.to_json())
        partial.rename(self.directory / checkpoint.name)

    def newest(self) -> bytes | None:
        if not self.directory.is_dir():
            return None
        names = sorted(p.name for p in self.directory.glob("*.json"))
        return (self.directory / names[0]).read_bytes() if names else None


class S3Store:
    """Checkpoints as objects in an S3-compatible bucket with object lock: each is kept in COMPLIANCE mode until
    retain_days have passed, so no credential, the bucket owner's included, can delete or overwrite it sooner.

    The bucket is created with object lock by the operators; credentials come from AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY (boto3's own lookup)."""

    def __init__(self, bucket: str, prefix: str, endpoint: str, region: str, retain_days: int):
        import boto3  # only a deployment with a bucket needs it loaded
        from botocore.config import Config

        self.bucket, self.prefix, self.retain = bucket, prefix, timedelta(days=retain_days)
        config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3})
        self._client = boto3.client("s3", endpoint_url=endpoint or None, region_name=region, config=config)

    def put(self, checkpoint: Checkpoint) -> None:
        self._client.put_object(
            Bucket=self.bucket, Key=self.prefix + checkpoint.name, Body=checkpoint.to_json(),
            ContentType="application/json", ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=checkpoint.signed_at + self.retain,
        )

    def newest(self) -> bytes | None:
        listed = self._client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        contents = listed.get("Contents") or []
        if not contents:
            return None
        body: bytes = self._client.get_object(Bucket=self.bucket, Key=contents[0]["Key"])["Body"].read()
        return body


class LedgerIntegrity:
    """Writes checkpoints, and verifies the ledger against its chain keys, the newest checkpoint and itself."""

    def __init__(self, db: Database, keys: LedgerKeys, store: CheckpointStore, interval_s: float):
        self.db, self.keys, self.store, self.interval_s = db, keys, store, interval_s

    def newest(self) -> Checkpoint | None:
        """The newest published checkpoint, its signature checked; UnavailableError when the store cannot answer."""
        try:
            document = self.store.newest()
        except Exception as exc:  # noqa: BLE001 - a file system's and boto3's errors share no narrower base
            raise UnavailableError(f"the ledger checkpoints cannot be read ({type(exc).__name__})") from None
        if document is None:
            return None
        checkpoint = Checkpoint.from_json(document)
        check_signature(self.keys, checkpoint)
        return checkpoint

    def checkpoint(self, after_restore: bool = False) -> Checkpoint:
        """Sign and publish the current head, once the entries since the newest checkpoint verify; raises
        CheckpointInvalid (nothing published) when they do not.

        after_restore: the database was restored from a backup older than the newest checkpoint, so the chain ends
        before it on purpose; the whole chain is walked instead and its head signed (an operator's decision, see
        docs/privacy/ledger-integrity.md)."""
        newest = None if after_restore else self.newest()
        since = None if newest is None else Head(newest.seq, newest.entry_hash, newest.unkeyed_until)
        head, problem = ledger_storage.walked_head(self.db, self.keys.chain, since)
        if problem:
            raise CheckpointInvalid(f"no checkpoint signed: {problem}")
        checkpoint = sign(self.keys, head, utcnow())
        self.store.put(checkpoint)
        return checkpoint

    def verify(self) -> Verification:
        try:
            newest = self.newest()
        except CheckpointInvalid as exc:
            return Verification(False, 0, 0, str(exc))
        seq = newest.seq if newest else 0
        check = ledger_storage.verify(self.db, self.keys.chain, seq, newest.unkeyed_until if newest else 0)
        result = check.verification
        window = 0
        if newest is not None:
            age_s = (utcnow() - newest.signed_at).total_seconds()
            window = math.ceil(max(self.interval_s, age_s))
            result = replace(result, checkpoint_seq=newest.seq, checkpoint_at=newest.signed_at)
            result = _against_checkpoint(result, newest, check.hash_at_checkpoint)
        result = replace(result, truncation_window_s=window)
        if check.altered_texts and result.ok:
            first = min(seq for _, seq in check.altered_texts)
            problem = f"{len(check.altered_texts)} stored consent wording(s) no longer match their hash"
            result = replace(result, ok=False, first_bad_seq=first, problem=problem + f" (first used by entry {first})")
        if check.state_mismatches:
            subjects = tuple(subject for subject, _ in check.state_mismatches)
            result = replace(result, ok=False, state_mismatches=subjects)
            if result.first_bad_seq == 0:
                first = min(seq for _, seq in check.state_mismatches)
                problem = (f"consent_state of {len(subjects)} subject(s) disagrees with the ledger "
                           f"(first: entry {first})")
                result = replace(result, first_bad_seq=first, problem=problem)
        return result


def _against_checkpoint(result: Verification, checkpoint: Checkpoint, hash_at_checkpoint: str | None) -> Verification:
    """A chain that verifies must still reach the checkpointed entry, with exactly its hash."""
    if not result.ok:
        return result
    if checkpoint.seq > result.entries_checked:
        first = result.entries_checked + 1
        problem = (f"entries {first}..{checkpoint.seq} are missing: the chain ends before the checkpoint signed at "
                   f"{checkpoint.signed_at.isoformat()} (cut)")
        return replace(result, ok=False, first_bad_seq=first, problem=problem)
    if checkpoint.seq and hash_at_checkpoint != checkpoint.entry_hash:
        problem = f"entry {checkpoint.seq} differs from the signed checkpoint"
        return replace(result, ok=False, first_bad_seq=checkpoint.seq, problem=problem)
    return result


class CheckpointWorker:
    """The server's thread: a checkpoint at start and every interval after (the CronJob `manage checkpoint-ledger`
    does the same where the server's thread is not trusted to run)."""

    def __init__(self, integrity: LedgerIntegrity):
        self.integrity = integrity
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            LEDGER_LAST_VERIFIED.set_to_current_time()  # the start counts: "not verified for long" means since then
            self._thread = threading.Thread(target=self._loop, name="ledger-checkpoints", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                checkpoint = self.integrity.checkpoint()
                log.info("ledger checkpoint signed", extra={"seq": checkpoint.seq})
                LEDGER_VERIFIED.set(1)
                LEDGER_LAST_VERIFIED.set_to_current_time()
                LEDGER_ENTRIES.set(checkpoint.seq)
            except CheckpointInvalid as exc:
                log.error("ledger checkpoint refused: %s", exc)
                LEDGER_VERIFIED.set(0)
            except Exception:  # the thread must outlive a database or bucket outage: logged, retried
                log.exception("ledger checkpoint failed; retrying at the next interval")
            self._stopping.wait(self.integrity.interval_s)
