"""Write the kind cluster's secret values to a local, git-ignored env file (`make kind-secrets`).

    python -m deploy.k8s.kind_secrets --output deploy/k8s/overlays/kind/secrets.env

The keys are those of deploy/k8s/secrets-template/secret.yaml. Fresh random values for the in-cluster database
passwords (the administrative one and one per service role and migration role), the consent keys and the
checkpoint bucket's credentials (on kind, also the in-cluster MinIO's root user: overlays/kind/minio.yaml);
the notifier's destinations (SLACK_WEBHOOK_URL, SLACK_BOT_TOKEN, MONDAY_API_KEY, MONDAY_BOARD_ID, SMTP_URL,
ESCALATION_EMAIL) are taken from this shell's environment (empty disables the destination). An existing file is
never overwritten: the consent HMAC key and key-encryption key must outlive a redeploy, or the ledger's subjects
can no longer be found or decrypted.
"""
from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

TEMPLATE = Path(__file__).resolve().parent / "secrets-template" / "secret.yaml"
FROM_ENVIRONMENT = ("SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN", "MONDAY_API_KEY", "MONDAY_BOARD_ID", "SMTP_URL",
                    "ESCALATION_EMAIL")
DATABASE_SERVICES = ("chat", "consent", "notifier")


def template_keys() -> list[str]:
    secret = next(doc for doc in yaml.safe_load_all(TEMPLATE.read_text()) if doc and doc["kind"] == "Secret")
    return list(secret["stringData"])


def database_urls() -> dict[str, str]:
    """Each service's role and migration role (novahouse_<svc>, novahouse_<svc>_migrator), each with its own random
    password (hex: nothing to escape in a URL or in the init script that reads them back)."""
    urls = {}
    for service in DATABASE_SERVICES:
        for suffix, key in (("", "DATABASE_URL"), ("_migrator", "MIGRATION_DATABASE_URL")):
            urls[f"{service.upper()}_{key}"] = (f"postgresql://novahouse_{service}{suffix}:{secrets.token_hex(24)}"
                                                "@postgres:5432/novahouse")
    return urls


def staff_sign_in() -> dict[str, str]:
    """The inbox's signing key pair (PEM, line breaks as \\n: an env file holds one line per key) and the agents
    from this shell's STAFF_USERS (empty: nobody can sign in until it is set)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    return {"STAFF_TOKEN_KEY": private.strip().replace("\n", "\\n"),
            "STAFF_TOKEN_PUBLIC_KEY": public.strip().replace("\n", "\\n"),
            "STAFF_USERS": os.environ.get("STAFF_USERS", "")}


def generated_values() -> dict[str, str]:
    values = {
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        **database_urls(),
        "CONSENT_HMAC_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "CONSENT_KEY_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "CONSENT_CHAIN_KEYS": f"k{secrets.token_hex(3)}:{base64.b64encode(secrets.token_bytes(32)).decode()}",
        "CONSENT_CHECKPOINT_SIGNING_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        # hex: nothing to escape in the bucket Job's MC_HOST_local URL; MinIO wants a user of 3+ and a password of 8+
        "CONSENT_CHECKPOINT_AWS_ACCESS_KEY_ID": f"consent{secrets.token_hex(8)}",
        "CONSENT_CHECKPOINT_AWS_SECRET_ACCESS_KEY": secrets.token_hex(24),
    }
    values.update({name: os.environ.get(name, "") for name in FROM_ENVIRONMENT})
    values.update(staff_sign_in())
    missing = set(template_keys()) - set(values)
    if missing:
        raise KeyError(f"no value rule for the template keys {sorted(missing)}")
    return {key: values[key] for key in template_keys()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="env file to create (mode 0600)")
    args = parser.parse_args(argv)
    if args.output.exists():
        print(f"{args.output} exists; kept as is (delete it to rotate every key)")
        return 0
    values = generated_values()
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"{key}={value}\n" for key, value in values.items())
    empty = [key for key, value in values.items() if not value]
    print(f"wrote {len(values)} secret values to {args.output}" + (f"; empty: {', '.join(empty)}" if empty else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
