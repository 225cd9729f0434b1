"""The one place the consent service's objects are built, for the server and for the manage commands."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from services.consent import ledger_storage
from services.consent.action_tokens import ActionTokens
from services.consent.checkpoints import CheckpointStore, CheckpointWorker, DirectoryStore, LedgerIntegrity, S3Store
from services.consent.consent import ConsentService
from services.consent.crypto import SubjectCrypto, load_secrets
from services.consent.erasure import ErasureWorker
from services.consent.erasure_clients import ChatEraser, NotifierEraser
from services.consent.erasure_journal import ErasureJournal, ErasureReapplier
from services.consent.erasure_report import ErasureReports
from services.consent.erasure_steps import ErasureSteps
from services.consent.export_clients import ChatExport, DeliveriesExport
from services.consent.ledger_keys import load_ledger_keys
from services.consent.mailer import Mailer
from services.consent.person_export import PersonExport
from services.consent.phone_erasure import PhoneOnlyErasure
from services.consent.settings import Settings
from services.consent.storage import ActionRecords, ErasureRecords, PendingErasures
from services.consent.verification import VerifiedRequests
from services.consent.writer import LedgerWriter
from services.runtime.clients import channel_to
from services.runtime.clock import utcnow
from services.runtime.config import data_dir
from services.runtime.db import Database
from services.runtime.diagnostics import Diagnostics
from services.runtime.migrate import upgrade_to_head

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def database() -> Database:
    """The consent database (DATABASE_URL and DB_SCHEMA, read by the runtime)."""
    return Database("consent")


def migrate(db: Database) -> None:
    upgrade_to_head(db, MIGRATIONS)


def check_database(db: Database) -> None:
    """Raises unless the database answers and is migrated (the ledger head exists)."""
    ledger_storage.length(db)


@dataclass
class ConsentApp:
    settings: Settings
    db: Database
    writer: LedgerWriter
    pending: PendingErasures
    worker: ErasureWorker
    consent: ConsentService
    diagnostics: Diagnostics
    verified: VerifiedRequests
    person_export: PersonExport
    phone_erasure: PhoneOnlyErasure
    erasure_reports: ErasureReports
    reapplier: ErasureReapplier  # `manage reapply-erasures`, after a restore
    checkpoints: CheckpointWorker  # signs the ledger head every CONSENT_CHECKPOINT_INTERVAL_S while serving

    def migrate(self) -> None:
        migrate(self.db)

    def close(self) -> None:
        """Stop the retry thread and the ledger writer, then release the database."""
        self.worker.stop()
        self.checkpoints.stop()
        self.writer.stop()
        self.db.dispose()


def build(settings: Settings) -> ConsentApp:
    """Every object of the service, wired; nothing runs until the worker is started or the writer first used."""
    db = database()
    secrets = load_secrets()
    crypto = SubjectCrypto(secrets)
    ledger_keys = load_ledger_keys()
    writer = LedgerWriter(db, ledger_keys.chain, max_batch=settings.append_batch)
    integrity = LedgerIntegrity(db, ledger_keys, checkpoint_store(settings), settings.checkpoint_interval_s)
    pending = PendingErasures(db)
    erasure_records = ErasureRecords(db)
    chat_eraser = ChatEraser(channel_to(settings.chat_addr), timeout_s=settings.erase_timeout_s)
    notifier_eraser = NotifierEraser(channel_to(settings.notifier_addr), timeout_s=settings.erase_timeout_s)
    erasure_steps = ErasureSteps(erasure_records, chat_eraser.lookup, chat_eraser, notifier_eraser)
    journal_dir = settings.erasure_journal_dir
    erasure_journal = ErasureJournal(Path(journal_dir) if journal_dir else data_dir() / "erasure-journal")
    worker = ErasureWorker(
        pending, crypto, writer, erasure_records, erasure_steps, erasure_journal,
        retry_base_s=settings.erasure_retry_s, retry_max_s=settings.erasure_retry_max_s,
        poll_s=settings.erasure_poll_s,
    )
    consent = ConsentService(
        db, crypto, writer, on_erasure_requested=worker.wake, public_base_url=settings.public_base_url,
        integrity=integrity,
    )
    diagnostics = _diagnostics(db, consent, pending, settings.erasure_alert_s)
    person_export = PersonExport(
        consent,
        ChatExport(channel_to(settings.chat_addr), timeout_s=settings.export_timeout_s),
        DeliveriesExport(channel_to(settings.notifier_addr), timeout_s=settings.export_timeout_s),
    )
    verified = VerifiedRequests(
        consent, ActionTokens(secrets.hmac_key, timedelta(minutes=settings.action_token_ttl_minutes)),
        ActionRecords(db), Mailer(channel_to(settings.notifier_addr), timeout_s=settings.notify_timeout_s),
        person_export.export,
        public_base_url=settings.public_base_url, emails_per_hour=settings.verification_emails_per_hour,
    )
    phone_erasure = PhoneOnlyErasure(erasure_records, erasure_steps, erasure_journal)
    erasure_reports = ErasureReports(erasure_records, pending, crypto, notifier_eraser)
    return ConsentApp(
        settings, db, writer, pending, worker, consent, diagnostics, verified, person_export, phone_erasure,
        erasure_reports, ErasureReapplier(erasure_journal, erasure_records, consent, crypto),
        checkpoints=CheckpointWorker(integrity),
    )


def checkpoint_store(settings: Settings) -> CheckpointStore:
    """The object-locked bucket when one is configured, else a directory (make up)."""
    if settings.checkpoint_s3_bucket:
        return S3Store(settings.checkpoint_s3_bucket, settings.checkpoint_s3_prefix, settings.checkpoint_s3_endpoint,
                       settings.checkpoint_s3_region, settings.checkpoint_retain_days)
    directory = Path(settings.checkpoint_dir) if settings.checkpoint_dir else data_dir() / "ledger-checkpoints"
    return DirectoryStore(directory)


def _diagnostics(db: Database, consent: ConsentService, pending: PendingErasures, alert_after_s: float) -> Diagnostics:
    diagnostics = Diagnostics("consent")
    diagnostics.add_dependency("database", lambda: check_database(db))

    def ledger() -> tuple[bool, str]:
        """The full verification (chain keys, signed checkpoint, replayed state), as VerifyLedger gives it."""
        result = consent.verify()
        if result.ok:
            return True, f"{result.entries_checked} entries"
        return False, f"broken at entry {result.first_bad_seq}: {result.problem}"

    diagnostics.add("ledger", ledger)

    def pending_erasures() -> tuple[bool, str]:
        summary = pending.summary()
        if summary.oldest_created_at is None:
            return True, "0 pending"
        age_s = (utcnow() - summary.oldest_created_at).total_seconds()
        detail = f"{summary.pending} pending, oldest {age_s:.0f}s, most attempts {summary.most_attempts}"
        return age_s < alert_after_s, detail

    diagnostics.add("erasures:pending", pending_erasures)
    return diagnostics
