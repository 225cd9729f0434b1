"""Tables of the consent service: the append-only ledger, its head, subject keys, current state, pending erasures.

Tables carry no schema: on PostgreSQL the connection's search_path (DB_SCHEMA) places them. Schema changes go
through migrations/ only; the ledger's append-only triggers are created there.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()

GENESIS_HASH = "0" * 64

# One row per consent event, never updated or deleted. Personal fields (*_enc) are AES-GCM ciphertexts under the
# subject's key; every column but entry_hash is covered by entry_hash (see ledger.hash_values).
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("action", String(32), nullable=False),
    Column("subject_id", String(32), nullable=False, index=True),
    Column("processing_consent", Boolean, nullable=False),
    Column("marketing_consent", Boolean, nullable=False),
    Column("text_version", String(64), nullable=False),
    Column("source", String(64), nullable=False),
    Column("session_id", String(128), nullable=False),
    Column("conversation_id", String(128), nullable=False),
    Column("lead_id", String(128), nullable=False),
    Column("request_id", String(128), nullable=True, unique=True),
    Column("email_enc", LargeBinary, nullable=True),
    Column("client_ip_enc", LargeBinary, nullable=True),
    Column("user_agent_enc", LargeBinary, nullable=True),
    Column("reason_enc", LargeBinary, nullable=True),
    Column("prev_hash", String(64), nullable=False, unique=True),
    Column("entry_hash", String(64), nullable=False, unique=True),
)

# The single row (id 1) every append locks: it serialises appends so the chain can never fork.
ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("entry_hash", String(64), nullable=False),
)

# A subject is a person known by the HMAC of their normalised email. Erasure clears subject_hash and wrapped_key:
# the ledger rows keep their random subject_id, which then links to nobody.
subjects = Table(
    "subjects",
    metadata,
    Column("subject_id", String(32), primary_key=True),
    Column("subject_hash", String(64), nullable=True, unique=True),
    Column("wrapped_key", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("erased_at", DateTime(timezone=True), nullable=True),
)

# Current consent per subject, written in the same transaction as the ledger event that changed it.
consent_state = Table(
    "consent_state",
    metadata,
    Column("subject_id", String(32), primary_key=True),
    Column("processing_consent", Boolean, nullable=False),
    Column("marketing_consent", Boolean, nullable=False),
    Column("last_action", String(32), nullable=False),
    Column("last_action_at", DateTime(timezone=True), nullable=False),
    Column("last_seq", BigInteger, nullable=False),
)

# Erasure requested from the chat service after a revoke; retried until chat confirms, then the key is destroyed.
pending_erasures = Table(
    "pending_erasures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_id", String(32), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("email_enc", LargeBinary, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, index=True),
    Column("last_error", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("subject_id", name="uq_pending_erasures_subject"),
)
