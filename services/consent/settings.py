"""The consent service's configuration, read once from environment variables (safe defaults, clear errors).

The keys (CONSENT_HMAC_KEY, CONSENT_KEY_ENCRYPTION_KEY, CONSENT_REQUIRE_SECRETS) are read by crypto.load_secrets
when app.build() runs, not here, so only what uses them needs them: `manage migrate` runs without.
The database (DATABASE_URL, DB_SCHEMA, DB_POOL_*) and the server (GRPC_*, METRICS_PORT ...) are the runtime's.
"""
from __future__ import annotations

from dataclasses import dataclass

from services.runtime.config import ConfigError, env_bool, env_float, env_int, env_str, service_addr


@dataclass(frozen=True)
class Settings:
    chat_addr: str              # CHAT_ADDR: where erasures are asked for
    erase_timeout_s: float      # CONSENT_ERASE_TIMEOUT_S: one EraseSubject call
    erasure_retry_s: float      # CONSENT_ERASURE_RETRY_S: first retry delay, doubled per failed attempt ...
    erasure_retry_max_s: float  # CONSENT_ERASURE_RETRY_MAX_S: ... up to this
    erasure_poll_s: float       # CONSENT_ERASURE_POLL_S: longest sleep of the retry thread
    erasure_journal_dir: str    # CONSENT_ERASURE_JOURNAL_DIR: erasures kept outside the database ("": DATA_DIR/...)
    erasure_alert_s: float      # CONSENT_ERASURE_ALERT_S: Diagnose reports unhealthy once an erasure is this old
    append_batch: int           # CONSENT_APPEND_BATCH: most appends per ledger transaction
    migrate_on_start: bool      # MIGRATE_ON_START: the server migrates its database before serving
    public_base_url: str        # PUBLIC_BASE_URL: where the public gateway is reached; unsubscribe links start with it
    notifier_addr: str          # NOTIFIER_ADDR: verification emails; deliveries about a person (access requests)
    notify_timeout_s: float     # CONSENT_NOTIFY_TIMEOUT_S: one Notify call
    action_token_ttl_minutes: int  # CONSENT_ACTION_TOKEN_TTL_MINUTES: how long an emailed confirmation link works
    verification_emails_per_hour: int  # CONSENT_VERIFICATION_EMAILS_PER_HOUR: most sent to one address per hour
    export_timeout_s: float     # CONSENT_EXPORT_TIMEOUT_S: one call to chat or the notifier for an access request
    # Signed ledger checkpoints (checkpoints.py): how often, and where the database role cannot write.
    checkpoint_interval_s: float  # CONSENT_CHECKPOINT_INTERVAL_S: a cut tail can go unseen this long at most
    checkpoint_dir: str         # CONSENT_CHECKPOINT_DIR: without a bucket ("": DATA_DIR/ledger-checkpoints)
    checkpoint_s3_bucket: str   # CONSENT_CHECKPOINT_S3_BUCKET: an object-locked bucket instead of the directory
    checkpoint_s3_endpoint: str  # CONSENT_CHECKPOINT_S3_ENDPOINT: an S3-compatible server ("": AWS)
    checkpoint_s3_prefix: str   # CONSENT_CHECKPOINT_S3_PREFIX: key prefix of the checkpoint objects
    checkpoint_s3_region: str   # CONSENT_CHECKPOINT_S3_REGION
    checkpoint_retain_days: int  # CONSENT_CHECKPOINT_RETAIN_DAYS: object lock (COMPLIANCE) retention

    @classmethod
    def from_env(cls) -> Settings:
        public_base_url = env_str("PUBLIC_BASE_URL", "http://127.0.0.1:8080").rstrip("/")
        if not public_base_url.startswith(("http://", "https://")):
            raise ConfigError(f"PUBLIC_BASE_URL must start with http:// or https://, not {public_base_url!r}")
        return cls(
            chat_addr=service_addr("chat"),
            erase_timeout_s=env_float("CONSENT_ERASE_TIMEOUT_S", 10.0, minimum=0.1),
            erasure_retry_s=env_float("CONSENT_ERASURE_RETRY_S", 2.0, minimum=0.01),
            erasure_retry_max_s=env_float("CONSENT_ERASURE_RETRY_MAX_S", 300.0, minimum=0.01),
            erasure_poll_s=env_float("CONSENT_ERASURE_POLL_S", 5.0, minimum=0.01),
            erasure_journal_dir=env_str("CONSENT_ERASURE_JOURNAL_DIR", ""),
            erasure_alert_s=env_float("CONSENT_ERASURE_ALERT_S", 3600.0, minimum=1),
            append_batch=env_int("CONSENT_APPEND_BATCH", 200, minimum=1),
            migrate_on_start=env_bool("MIGRATE_ON_START", True),
            public_base_url=public_base_url,
            notifier_addr=service_addr("notifier"),
            notify_timeout_s=env_float("CONSENT_NOTIFY_TIMEOUT_S", 5.0, minimum=0.1),
            action_token_ttl_minutes=env_int("CONSENT_ACTION_TOKEN_TTL_MINUTES", 60, minimum=1),
            verification_emails_per_hour=env_int("CONSENT_VERIFICATION_EMAILS_PER_HOUR", 5, minimum=1),
            export_timeout_s=env_float("CONSENT_EXPORT_TIMEOUT_S", 10.0, minimum=0.1),
            checkpoint_interval_s=env_float("CONSENT_CHECKPOINT_INTERVAL_S", 300.0, minimum=0.05),
            checkpoint_dir=env_str("CONSENT_CHECKPOINT_DIR", ""),
            checkpoint_s3_bucket=env_str("CONSENT_CHECKPOINT_S3_BUCKET", ""),
            checkpoint_s3_endpoint=env_str("CONSENT_CHECKPOINT_S3_ENDPOINT", ""),
            checkpoint_s3_prefix=env_str("CONSENT_CHECKPOINT_S3_PREFIX", "consent-ledger/"),
            checkpoint_s3_region=env_str("CONSENT_CHECKPOINT_S3_REGION", "us-east-1"),
            checkpoint_retain_days=env_int("CONSENT_CHECKPOINT_RETAIN_DAYS", 400, minimum=1),
        )
