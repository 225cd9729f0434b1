"""The real server process: starts on SQLite with generated local secrets, keeps emails out of its logs, and
refuses to start without secrets when CONSENT_REQUIRE_SECRETS is true."""
from __future__ import annotations

import base64
import os
import stat

import grpc
import pytest

from deploy.local.processes import ManagedProcess, free_port, grpc_serving, python_module
from novahouse.consent.v1 import consent_pb2 as pb
from novahouse.consent.v1 import consent_pb2_grpc
from services.consent.crypto import SECRETS_FILE, load_secrets
from services.runtime.config import ConfigError
from testsupport.consent import confirm_latest
from testsupport.peers import PeerServer

EMAIL = "private.person@example.com"


def _env(tmp_path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSENT_", "DATABASE_URL", "DB_SCHEMA"))}
    env.update({"DATA_DIR": str(tmp_path), "GRPC_PORT": str(free_port()), "CHAT_ADDR": f"127.0.0.1:{free_port()}",
                "PYTHONUNBUFFERED": "1", **extra})
    return env


def test_server_starts_on_sqlite_and_keeps_personal_data_out_of_logs(tmp_path):
    with PeerServer() as mail:
        _serve_and_revoke(tmp_path, mail)


def _serve_and_revoke(tmp_path, mail: PeerServer) -> None:
    env = _env(tmp_path, LOG_LEVEL="DEBUG", CONSENT_ERASURE_RETRY_S="0.05", CONSENT_ERASURE_POLL_S="0.2",
               NOTIFIER_ADDR=mail.address)
    process = ManagedProcess("consent", python_module("services.consent.server"), env, tmp_path / "logs").start()
    address = f"127.0.0.1:{env['GRPC_PORT']}"
    try:
        process.wait_until(lambda: grpc_serving(address), timeout=60, what="SERVING")
        with grpc.insecure_channel(address) as channel:
            public = consent_pb2_grpc.ConsentStub(channel)
            public.Unsubscribe(
                pb.UnsubscribeRequest(email=EMAIL, reason="Please stop"),
                metadata=(("x-novahouse-client-ip", "198.51.100.77"),),
            )
            public.RevokeConsent(pb.RevokeConsentRequest(email=EMAIL))
            confirm_latest(channel, mail.notifier, EMAIL)  # chat is down: the retry job logs failures
            export = consent_pb2_grpc.ConsentAdminStub(channel).ExportSubject(pb.ExportSubjectRequest(email=EMAIL))
            assert [e.action for e in export.entries] == ["unsubscribe", "revoke"]
            assert consent_pb2_grpc.ConsentAdminStub(channel).VerifyLedger(pb.VerifyLedgerRequest()).ok
        process.wait_until(lambda: "erasure step failed" in process.log_path.read_text(), what="retry logged")
    finally:
        process.stop()
    log = process.log_path.read_text()
    assert "generated local ones" in log
    for secret in (EMAIL, "198.51.100.77", "Please stop"):
        assert secret not in log
    secrets_file = tmp_path / SECRETS_FILE
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert "CONSENT_HMAC_KEY" in secrets_file.read_text()


def test_server_refuses_to_start_without_required_secrets(tmp_path):
    env = _env(tmp_path, CONSENT_REQUIRE_SECRETS="true")
    process = ManagedProcess("consent", python_module("services.consent.server"), env, tmp_path / "logs").start()
    assert process.proc is not None and process.proc.wait(timeout=60) != 0
    assert "CONSENT_HMAC_KEY" in process.log_path.read_text()
    assert not (tmp_path / SECRETS_FILE).exists()


def test_secrets_come_from_the_environment_when_set(tmp_path, monkeypatch):
    hmac_key, kek = os.urandom(32), os.urandom(32)
    monkeypatch.setenv("CONSENT_REQUIRE_SECRETS", "true")
    monkeypatch.setenv("CONSENT_HMAC_KEY", base64.b64encode(hmac_key).decode())
    monkeypatch.setenv("CONSENT_KEY_ENCRYPTION_KEY", base64.b64encode(kek).decode())
    secrets = load_secrets(tmp_path)
    assert (secrets.hmac_key, secrets.key_encryption_key) == (hmac_key, kek)
    assert not (tmp_path / SECRETS_FILE).exists()

    monkeypatch.setenv("CONSENT_HMAC_KEY", base64.b64encode(b"too short").decode())
    with pytest.raises(ConfigError, match="CONSENT_HMAC_KEY must decode to 32 bytes"):
        load_secrets(tmp_path)


def test_generated_local_secrets_are_reused_across_restarts(tmp_path, monkeypatch):
    for name in ("CONSENT_REQUIRE_SECRETS", "CONSENT_HMAC_KEY", "CONSENT_KEY_ENCRYPTION_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert load_secrets(tmp_path) == load_secrets(tmp_path)
