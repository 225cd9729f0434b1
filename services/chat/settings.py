"""The chat service's configuration: every environment variable it reads, read once, with safe defaults.

Besides these the runtime reads its own (GRPC_HOST, GRPC_PORT, GRPC_WORKERS, METRICS_HOST, METRICS_PORT,
SHUTDOWN_GRACE_S, HEALTH_CHECK_INTERVAL_S, LOG_LEVEL, DATA_DIR, DB_POOL_SIZE, DB_POOL_OVERFLOW, REDIS_TIMEOUT_S).
The addresses of the other services, and their defaults, come from runtime.config.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

from services.chat.handoff import OpeningHours
from services.runtime.config import DEFAULT_ADDRS, ConfigError, env_bool, env_float, env_int, env_str, service_addr
from services.runtime.db import database_url
from services.runtime.redis_client import key_prefix, redis_url

_DELAY = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# gRPC threads kept for unary calls beyond STREAM_MAX_CONCURRENT: a grpcio sync server holds one thread per open
# stream, so the chat server's pool (GRPC_WORKERS) defaults to STREAM_MAX_CONCURRENT + this.
UNARY_WORKERS = 16


def parse_delays(raw: str) -> tuple[int, ...]:
    """'24h,72h,168h' -> (86400, 259200, 604800); strictly increasing, so follow-up n+1 comes after n."""
    delays = []
    for part in raw.split(","):
        match = _DELAY.match(part)
        if not match:
            raise ConfigError(f"FOLLOWUP_DELAYS part {part!r} is not like '24h' (units s, m, h, d)")
        delays.append(int(match.group(1)) * _UNIT_S[match.group(2)])
    if any(b <= a for a, b in pairwise(delays)) or not delays or delays[0] <= 0:
        raise ConfigError(f"FOLLOWUP_DELAYS={raw!r} must be positive and increasing")
    return tuple(delays)


@dataclass(frozen=True)
class Settings:
    """Tests construct one directly, naming their database and the stand-ins' addresses; the rest has defaults."""

    database_url: str  # DATABASE_URL, or the local SQLite file in DATA_DIR
    db_schema: str = "chat"  # DB_SCHEMA: the PostgreSQL schema of chat's tables
    redis_url: str = ""  # REDIS_URL; empty: the cache stays in process
    redis_key_prefix: str = ""  # REDIS_KEY_PREFIX
    consent_addr: str = DEFAULT_ADDRS["consent"]
    notifier_addr: str = DEFAULT_ADDRS["notifier"]
    ratelimit_addr: str = DEFAULT_ADDRS["ratelimit"]  # asked by PlatformHealth.Deep
    chat_addr: str = DEFAULT_ADDRS["chat"]  # the replicas `manage purge-cache` asks
    migrate_on_start: bool = True
    max_message_chars: int = 2000
    lead_alert_score: int = 70
    followup_delays_s: tuple[int, ...] = (86400, 259200, 604800)
    followup_batch: int = 1000
    followup_interval_min: float = 15.0
    lead_retry_interval_s: float = 60.0
    lead_idle_min: float = 30.0  # LEAD_IDLE_MINUTES: a visitor gone quiet mid-questions is handed over after this
    cache_ttl_s: int = 3600
    cache_max_entries: int = 10000
    cache_cleanup_min: float = 10.0
    redis_retry_s: float = 5.0
    retention_days: int = 90  # RETENTION_DAYS: conversations without a lead
    lead_retention_days: int = 365  # LEAD_RETENTION_DAYS: leads (not customers) with their transcripts; README says why
    retention_batch: int = 500
    retention_interval_min: float = 60.0  # RETENTION_INTERVAL_MINUTES: the in-process purge (CronJob in Kubernetes)
    scheduler_enabled: bool = True  # SCHEDULER_ENABLED: the in-process APScheduler jobs (off where CronJobs run)
    peer_timeout_s: float = 2.0
    knowledge_dir: str = ""  # KNOWLEDGE_DIR: faq.yaml and dialogue.yaml (a mounted ConfigMap); empty: the packaged ones
    knowledge_reload_s: float = 5.0  # KNOWLEDGE_RELOAD_SECONDS: how often each replica looks for a changed faq.yaml
    eur_pln_rate: float | None = None  # EUR_PLN_RATE: scores a EUR budget; unset, such a budget is flagged to sales
    monday_columns: str = ""  # MONDAY_COLUMNS: lead field -> board column id ('email=email_mk1,...'); sales.py
    # HANDOFF_HOURS, HANDOFF_TIMEZONE: when an agent can join a chat (handoff.py); outside them a consultant calls
    handoff_hours: str = "mon-fri 08:00-18:00"
    handoff_timezone: str = "Europe/Warsaw"
    handoff_wait_min: float = 5.0  # HANDOFF_WAIT_MINUTES: a visitor waiting longer is offered a callback instead
    public_base_url: str = "http://127.0.0.1:8080"  # PUBLIC_BASE_URL: the inbox link in a handoff's Slack alert
    stream_heartbeat_s: float = 15.0  # STREAM_HEARTBEAT_S: streams send one this often (below every idle timeout)
    stream_max_s: float = 300.0  # STREAM_MAX_S: a stream ends (OK) after this and its client reconnects
    stream_max_concurrent: int = 32  # STREAM_MAX_CONCURRENT: open streams per replica; one more: RESOURCE_EXHAUSTED
    # The inbox's own sign-in (staff_auth.py); without a key and users, StaffAuth.Login answers FAILED_PRECONDITION.
    staff_token_key: str = ""  # STAFF_TOKEN_KEY: PEM private key (EC P-256 or RSA) that signs staff tokens
    staff_token_key_file: str = ""  # STAFF_TOKEN_KEY_FILE: the same, from a file (a mounted Secret)
    staff_users: str = ""  # STAFF_USERS: 'user:Display Name:argon2-hash;...'
    staff_users_file: str = ""  # STAFF_USERS_FILE: the same lines, from a file
    staff_token_issuer: str = "novahouse-staff"  # STAFF_TOKEN_ISSUER: the gateway's JWT provider checks it
    staff_token_audience: str = "novahouse-inbox"  # STAFF_TOKEN_AUDIENCE
    staff_token_ttl_min: int = 480  # STAFF_TOKEN_TTL_MINUTES: a working day
    staff_cookie_secure: bool = True  # STAFF_COOKIE_SECURE: the cookie only over HTTPS (off for http://127.0.0.1)

    @classmethod
    def from_env(cls) -> Settings:
        hours, zone = env_str("HANDOFF_HOURS", "mon-fri 08:00-18:00"), env_str("HANDOFF_TIMEZONE", "Europe/Warsaw")
        OpeningHours.parse(hours, zone)  # ConfigError naming the variable, at start
        heartbeat, max_s, streams = _stream_limits()
        return cls(
            database_url=database_url("chat"),
            db_schema=env_str("DB_SCHEMA", "chat"),
            redis_url=redis_url(),
            redis_key_prefix=key_prefix(),
            consent_addr=service_addr("consent"),
            notifier_addr=service_addr("notifier"),
            ratelimit_addr=service_addr("ratelimit"),
            chat_addr=service_addr("chat"),
            migrate_on_start=env_bool("MIGRATE_ON_START", True),
            max_message_chars=env_int("CHAT_MAX_MESSAGE_CHARS", 2000, minimum=1),
            lead_alert_score=env_int("LEAD_ALERT_SCORE", 70, minimum=0),
            followup_delays_s=parse_delays(env_str("FOLLOWUP_DELAYS", "24h,72h,168h")),
            followup_batch=env_int("FOLLOWUP_BATCH", 1000, minimum=1),
            followup_interval_min=env_float("FOLLOWUP_INTERVAL_MINUTES", 15.0, minimum=0.01),
            lead_retry_interval_s=env_float("LEAD_RETRY_SECONDS", 60.0, minimum=0.1),
            lead_idle_min=env_float("LEAD_IDLE_MINUTES", 30.0, minimum=0.01),
            cache_ttl_s=env_int("CACHE_TTL_SECONDS", 3600, minimum=1),
            cache_max_entries=env_int("CACHE_MAX_ENTRIES", 10000, minimum=1),
            cache_cleanup_min=env_float("CACHE_CLEANUP_MINUTES", 10.0, minimum=0.01),
            redis_retry_s=env_float("REDIS_RETRY_SECONDS", 5.0, minimum=0.0),
            retention_days=env_int("RETENTION_DAYS", 90, minimum=1),
            lead_retention_days=env_int("LEAD_RETENTION_DAYS", 365, minimum=1),
            retention_batch=env_int("RETENTION_BATCH", 500, minimum=1),
            retention_interval_min=env_float("RETENTION_INTERVAL_MINUTES", 60.0, minimum=0.01),
            scheduler_enabled=env_bool("SCHEDULER_ENABLED", True),
            peer_timeout_s=env_float("PEER_TIMEOUT_S", 2.0, minimum=0.05),
            knowledge_dir=env_str("KNOWLEDGE_DIR", ""),
            knowledge_reload_s=env_float("KNOWLEDGE_RELOAD_SECONDS", 5.0, minimum=0.0),
            eur_pln_rate=env_float("EUR_PLN_RATE", 0.0, minimum=0.0) or None,
            monday_columns=env_str("MONDAY_COLUMNS", ""),
            staff_token_key=env_str("STAFF_TOKEN_KEY", ""),
            staff_token_key_file=env_str("STAFF_TOKEN_KEY_FILE", ""),
            staff_users=env_str("STAFF_USERS", ""),
            staff_users_file=env_str("STAFF_USERS_FILE", ""),
            staff_token_issuer=env_str("STAFF_TOKEN_ISSUER", "novahouse-staff"),
            staff_token_audience=env_str("STAFF_TOKEN_AUDIENCE", "novahouse-inbox"),
            staff_token_ttl_min=env_int("STAFF_TOKEN_TTL_MINUTES", 480, minimum=1),
            staff_cookie_secure=env_bool("STAFF_COOKIE_SECURE", True),
            handoff_hours=hours,
            handoff_timezone=zone,
            handoff_wait_min=env_float("HANDOFF_WAIT_MINUTES", 5.0, minimum=0.01),
            public_base_url=_public_base_url(),
            stream_heartbeat_s=heartbeat,
            stream_max_s=max_s,
            stream_max_concurrent=streams,
        )


def _public_base_url() -> str:
    base_url = env_str("PUBLIC_BASE_URL", "http://127.0.0.1:8080").rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"PUBLIC_BASE_URL must start with http:// or https://, not {base_url!r}")
    return base_url


def _stream_limits() -> tuple[float, float, int]:
    """STREAM_HEARTBEAT_S, STREAM_MAX_S, STREAM_MAX_CONCURRENT, checked against each other and GRPC_WORKERS."""
    heartbeat = env_float("STREAM_HEARTBEAT_S", 15.0, minimum=0.05)
    max_s = env_float("STREAM_MAX_S", 300.0, minimum=0.1)
    if max_s <= heartbeat:
        raise ConfigError(f"STREAM_MAX_S={max_s} must be longer than STREAM_HEARTBEAT_S={heartbeat}")
    streams = env_int("STREAM_MAX_CONCURRENT", 32, minimum=1)
    workers = env_int("GRPC_WORKERS", 0, minimum=0)
    if workers and workers < streams + 4:
        raise ConfigError(
            f"GRPC_WORKERS={workers} must exceed STREAM_MAX_CONCURRENT={streams} by at least 4: each open stream "
            "holds a thread, and unary calls need the rest"
        )
    return heartbeat, max_s, streams
