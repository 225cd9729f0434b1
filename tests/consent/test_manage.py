"""`manage run-erasures` as an operator runs it: the same settings as the server, and its log lines carry an id."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

from sqlalchemy import select

from services.consent.storage import aware, pending_erasures
from services.runtime.clock import utcnow
from testsupport.consent import FakeChat, consent_service, fresh_secrets, migrated_database
from testsupport.peers import PeerServer


def test_run_erasures_backs_off_by_the_configured_retry_delay(tmp_path):
    """CONSENT_ERASURE_RETRY_S reaches the command: the failed attempt is next due that far ahead (not the 2 s
    default), and the warning it logs carries a request id minted for the run."""
    secrets = fresh_secrets()
    with migrated_database("sqlite", tmp_path) as db, FakeChat() as chat, PeerServer() as notifier:
        consent = consent_service(db, secrets)
        consent.revoke("retry.later@example.com")
        consent.writer.stop()
        chat.fail_next = 1
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSENT_", "DATABASE_URL", "DB_SCHEMA"))}
        env.update({
            "DATA_DIR": str(tmp_path), "DATABASE_URL": db.url, "CHAT_ADDR": chat.address,
            "NOTIFIER_ADDR": notifier.address,
            "CONSENT_HMAC_KEY": base64.b64encode(secrets.hmac_key).decode(),
            "CONSENT_KEY_ENCRYPTION_KEY": base64.b64encode(secrets.key_encryption_key).decode(),
            "CONSENT_ERASURE_RETRY_S": "900", "CONSENT_ERASURE_RETRY_MAX_S": "3600",
        })
        started = utcnow()
        result = subprocess.run(
            [sys.executable, "-m", "services.consent.manage", "run-erasures"],
            env=env, capture_output=True, text=True, timeout=60,
        )

        assert result.returncode == 1, result.stderr
        assert "erasures completed: 0, failed: 1, still pending: 1" in result.stdout
        assert len(chat.attempts) == 1 and chat.erased == []
        with db.engine.connect() as conn:
            pending = conn.execute(select(pending_erasures)).one()
        assert pending.attempts == 1 and pending.last_error == "chat EraseSubject: UNAVAILABLE"
        assert 890 <= (aware(pending.next_attempt_at) - started).total_seconds() <= 960
        warning = next(json.loads(line) for line in result.stderr.splitlines() if "erasure step failed" in line)
        assert warning["retry_in_s"] == 900 and warning["request_id"]
