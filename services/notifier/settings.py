"""The notifier's configuration, read once from environment variables (safe defaults, clear errors)."""
from __future__ import annotations

from dataclasses import dataclass

from services.runtime.config import env_bool, env_float, env_int, env_str, service_addr


@dataclass(frozen=True)
class Settings:
    slack_webhook_url: str
    slack_bot_token: str       # SLACK_BOT_TOKEN: with SLACK_CHANNEL, alerts go through chat.postMessage (deletable)
    slack_channel: str         # SLACK_CHANNEL: the channel id the bot posts to
    slack_api_url: str         # SLACK_API_URL: the Web API base, https://slack.com/api
    slack_min_interval_s: float
    monday_api_url: str
    monday_api_key: str
    monday_board_id: str
    monday_lookup_column: str  # MONDAY_LOOKUP_COLUMN: the board column a create's lookup_key is written to and found by
    smtp_url: str
    smtp_from: str
    escalation_email: str
    http_timeout_s: float
    cb_fail_max: int
    cb_reset_timeout_s: float
    retry_base_delay_s: float
    retry_max_delay_s: float
    max_retries: int
    poll_interval_s: float
    cleanup_days: int
    purge_interval_h: float    # DLQ_PURGE_INTERVAL_HOURS: the in-process purge job's period; 0 leaves it to the CronJob
    lease_s: float
    workers: int
    max_retry_after_s: float
    migrate_on_start: bool
    consent_addr: str          # CONSENT_ADDR: asked before every attempt of a marketing message
    consent_timeout_s: float   # NOTIFIER_CONSENT_TIMEOUT_S: one such question

    @property
    def slack_bot(self) -> bool:
        """Alerts go through the bot (chat.postMessage, deletable), not the incoming webhook."""
        return bool(self.slack_bot_token and self.slack_channel)

    @property
    def max_attempts(self) -> int:
        """The first attempt plus DLQ_MAX_RETRIES retries."""
        return 1 + self.max_retries

    @classmethod
    def from_env(cls) -> Settings:
        # DLQ_RETRY_DELAY_SECONDS overrides the minutes, so tests can shrink delays (as Svix's tests do).
        base_delay = env_float("DLQ_RETRY_DELAY_SECONDS", 0.0, minimum=0.0) or 60.0 * env_float(
            "DLQ_RETRY_DELAY_MINUTES", 5.0, minimum=0.0
        )
        return cls(
            slack_webhook_url=env_str("SLACK_WEBHOOK_URL"),
            slack_bot_token=env_str("SLACK_BOT_TOKEN"),
            slack_channel=env_str("SLACK_CHANNEL"),
            slack_api_url=env_str("SLACK_API_URL", "https://slack.com/api").rstrip("/"),
            slack_min_interval_s=env_float("SLACK_MIN_INTERVAL_S", 1.0, minimum=0.0),
            monday_api_url=env_str("MONDAY_API_URL", "https://api.monday.com/v2"),
            monday_api_key=env_str("MONDAY_API_KEY"),
            monday_board_id=env_str("MONDAY_BOARD_ID"),
            monday_lookup_column=env_str("MONDAY_LOOKUP_COLUMN", "text_lead_id"),
            smtp_url=env_str("SMTP_URL"),
            smtp_from=env_str("SMTP_FROM", "noreply@novahouse.pl"),
            escalation_email=env_str("ESCALATION_EMAIL"),
            http_timeout_s=env_float("NOTIFIER_HTTP_TIMEOUT_S", 10.0, minimum=0.05),
            cb_fail_max=env_int("CB_FAIL_MAX", 5, minimum=1),
            cb_reset_timeout_s=env_float("CB_RESET_TIMEOUT", 60.0, minimum=0.0),
            retry_base_delay_s=base_delay,
            retry_max_delay_s=env_float("DLQ_MAX_DELAY_SECONDS", 6 * 3600.0, minimum=0.0),
            max_retries=env_int("DLQ_MAX_RETRIES", 5, minimum=0),
            poll_interval_s=env_float("DLQ_POLL_INTERVAL_S", min(max(base_delay, 1.0), 60.0), minimum=0.01),
            cleanup_days=env_int("DLQ_CLEANUP_DAYS", 30, minimum=0),
            purge_interval_h=env_float("DLQ_PURGE_INTERVAL_HOURS", 24.0, minimum=0.0),
            lease_s=env_float("DELIVERY_LEASE_S", 60.0, minimum=0.5),
            workers=env_int("DELIVERY_WORKERS", 8, minimum=1),
            max_retry_after_s=env_float("MAX_RETRY_AFTER_S", 30.0, minimum=0.0),
            migrate_on_start=env_bool("MIGRATE_ON_START", True),
            consent_addr=service_addr("consent"),
            consent_timeout_s=env_float("NOTIFIER_CONSENT_TIMEOUT_S", 2.0, minimum=0.05),
        )
