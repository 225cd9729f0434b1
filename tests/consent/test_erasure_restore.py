"""Erasures re-applied after the database is restored from a backup taken before them (docs/privacy/erasure.md).

On PostgreSQL: a person opts in, the consent schema is dumped (the backup), the person revokes and is erased, a
phone-only erasure is done too; then the schema is dropped and restored from the dump: the person is back, with
their key. `reapply` finds them through the erasure journal (kept outside the database, no personal data in it),
queues the revoke again, and the worker erases them in chat and the notifier; a second run changes nothing, and the
erasure by phone is listed for the operator.
"""
from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.consent.app import ConsentApp, build
from services.consent.settings import Settings
from services.consent.storage import subjects
from testsupport import backing
from testsupport.consent import FakeChat, migrated_database, new_key_values
from testsupport.peers import PeerServer

EMAIL = "restored.person@example.com"


@contextlib.contextmanager
def consent_app(env: dict[str, str]) -> Iterator[ConsentApp]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        app = build(Settings.from_env())
        try:
            yield app
        finally:
            app.close()


def dump_schema(schema: str) -> str:
    return subprocess.run(["pg_dump", "--schema", schema, backing.TEST_DATABASE_URL], check=True,
                          capture_output=True, text=True, timeout=60).stdout


def restore_schema(schema: str, dump: str) -> None:
    backing.drop_schema(schema)
    subprocess.run(["psql", "--quiet", "--set", "ON_ERROR_STOP=1", backing.TEST_DATABASE_URL], input=dump,
                   check=True, capture_output=True, text=True, timeout=60)


def live_subjects(app: ConsentApp) -> int:
    with app.db.engine.connect() as conn:
        return len([row for row in conn.execute(subjects.select()) if row.subject_hash is not None])


def test_an_erasure_lost_by_a_restore_is_reapplied_from_the_journal(tmp_path: Path):
    with migrated_database("postgres", tmp_path) as db, FakeChat() as chat, PeerServer() as notifier:
        assert db.schema
        journal = tmp_path / "erasure-journal"
        env = {"DATABASE_URL": db.url, "DB_SCHEMA": db.schema, "DATA_DIR": str(tmp_path),
               "CHAT_ADDR": chat.address, "NOTIFIER_ADDR": notifier.address, "CONSENT_ERASE_TIMEOUT_S": "2",
               "CONSENT_HMAC_KEY": "", "CONSENT_KEY_ENCRYPTION_KEY": "", **new_key_values(),
               "CONSENT_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
               "CONSENT_ERASURE_JOURNAL_DIR": str(journal)}
        with consent_app(env) as app:  # generated local secrets in DATA_DIR: the same after the restore
            app.consent.record_consent(EMAIL, processing_consent=True, marketing_consent=True,
                                       text_version="v1", source="test")
            backup = dump_schema(db.schema)

            app.consent.revoke(EMAIL)
            assert app.worker.run_due().completed == 1
            app.phone_erasure.erase("+48 601 702 803", "a.nowak", "TICKET-9", "phone-after-backup")
            assert live_subjects(app) == 0 and len(list(journal.glob("*.json"))) == 2
        first_request = chat.erased[0][1]
        journalled = "\n".join(p.read_text() for p in journal.glob("*.json"))
        assert EMAIL not in journalled and "restored.person" not in journalled and "601" not in journalled

        restore_schema(db.schema, backup)
        with consent_app(env) as app:
            assert live_subjects(app) == 1  # the restore brought the person back, key and all
            done = app.reapplier.run()
            assert done.requeued == [(first_request, f"reapply:{first_request}")]
            assert done.by_phone == ["phone-after-backup"] and done.not_found == []
            assert app.worker.run_due().completed == 1
            assert live_subjects(app) == 0
            assert [email for email, _ in chat.erased] == [EMAIL, "", EMAIL]  # erased again, in every system
            assert [e.email for e in notifier.notifier.erasures] == [EMAIL, "", EMAIL]
            assert app.erasure_reports.report(email=EMAIL).status == "completed"

            again = app.reapplier.run()  # nothing left to do for the person; the phone is still the operator's
            assert again.requeued == [] and again.not_found == [] and again.by_phone == ["phone-after-backup"]
