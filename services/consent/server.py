"""Consent service: unsubscribe, and revoke and status confirmed from an emailed link (public), opt-ins from chat
(internal), ledger export and verification (admin). Ready when its own database answers and is migrated.

Environment (besides the common runtime variables): CONSENT_HMAC_KEY, CONSENT_KEY_ENCRYPTION_KEY (32 bytes,
base64), CONSENT_REQUIRE_SECRETS (default false), CHAT_ADDR, CONSENT_ERASE_TIMEOUT_S (10),
CONSENT_ERASURE_RETRY_S (2, doubled per failed attempt), CONSENT_ERASURE_RETRY_MAX_S (300),
CONSENT_ERASURE_POLL_S (5), CONSENT_ERASURE_ALERT_S (3600), CONSENT_APPEND_BATCH (200), MIGRATE_ON_START (true),
PUBLIC_BASE_URL, NOTIFIER_ADDR, CONSENT_NOTIFY_TIMEOUT_S (5), CONSENT_ACTION_TOKEN_TTL_MINUTES (60),
CONSENT_VERIFICATION_EMAILS_PER_HOUR (5); the ledger's keys CONSENT_CHAIN_KEYS, CONSENT_CHECKPOINT_SIGNING_KEY,
CONSENT_CHECKPOINT_PUBLIC_KEYS (ledger_keys.py) and its checkpoints CONSENT_CHECKPOINT_INTERVAL_S (300),
CONSENT_CHECKPOINT_DIR, CONSENT_CHECKPOINT_S3_BUCKET / _ENDPOINT / _PREFIX / _REGION, CONSENT_CHECKPOINT_RETAIN_DAYS.
"""
from __future__ import annotations

import argparse

from novahouse.consent.v1 import consent_pb2_grpc
from services.consent.app import ConsentApp, build, check_database
from services.consent.servicer import ConsentAdminServicer, ConsentInternalServicer, ConsentServicer
from services.consent.settings import Settings
from services.runtime import logs
from services.runtime.server import GrpcService, database_readiness


def grpc_service(app: ConsentApp) -> GrpcService:
    """The consent service's gRPC services over app; the erasure worker runs while it is ready."""
    service = GrpcService("consent", readiness={
        "database": database_readiness(lambda: check_database(app.db),
                                       app.migrate if app.settings.migrate_on_start else None),
    })
    service.add(
        consent_pb2_grpc.add_ConsentServicer_to_server,
        ConsentServicer(app.consent, app.verified),
        "novahouse.consent.v1.Consent",
    )
    service.add(
        consent_pb2_grpc.add_ConsentInternalServicer_to_server,
        ConsentInternalServicer(app.consent),
        "novahouse.consent.v1.ConsentInternal",
    )
    service.add(
        consent_pb2_grpc.add_ConsentAdminServicer_to_server,
        ConsentAdminServicer(
            app.consent, app.diagnostics, app.person_export, app.phone_erasure, app.erasure_reports
        ),
        "novahouse.consent.v1.ConsentAdmin",
    )
    service.on_ready(app.worker.start)
    service.on_ready(app.checkpoints.start)
    service.on_stop(app.close)
    return service


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    logs.configure("consent")
    grpc_service(build(Settings.from_env())).run()


if __name__ == "__main__":
    main()
