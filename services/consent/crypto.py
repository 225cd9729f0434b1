"""Keys that make the ledger erasable: a keyed hash finds a subject, a per-subject AES-GCM key hides their data.

The HMAC key and the key-encryption key (which wraps every subject key) come from CONSENT_HMAC_KEY and
CONSENT_KEY_ENCRYPTION_KEY (32 bytes, base64). Without them (local `make up`) random ones are generated once into
DATA_DIR/consent-secrets.json (mode 0600); CONSENT_REQUIRE_SECRETS=true turns their absence into a start-up error.
Destroying a subject's wrapped key is what erases: its ciphertexts can then never be read again.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.runtime.config import ConfigError, data_dir, env_bool, env_str

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
SECRET_VARIABLES = ("CONSENT_HMAC_KEY", "CONSENT_KEY_ENCRYPTION_KEY")
SECRETS_FILE = "consent-secrets.json"
# The label that derives the unsubscribe-link key from the HMAC key: a link's MAC is never an email's keyed hash.
UNSUBSCRIBE_LABEL = b"novahouse/one-click-unsubscribe/v1"


class KeyDestroyed(LookupError):
    """The subject's key was destroyed by erasure (or the ciphertext is not theirs): nothing can be decrypted."""


@dataclass(frozen=True)
class Secrets:
    hmac_key: bytes
    key_encryption_key: bytes


def new_secret_text() -> str:
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def _decode(name: str, text: str) -> bytes:
    try:
        value = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name} is not valid base64") from None
    if len(value) != KEY_BYTES:
        raise ConfigError(f"{name} must decode to {KEY_BYTES} bytes, not {len(value)}")
    return value


def local_secrets_file(path: Path, generate: Callable[[], dict[str, str]]) -> dict[str, str]:
    """Read the generated secrets, or create them (generate()) once with owner-only permissions."""
    if not path.exists():
        generated = generate()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: use theirs
        else:
            with os.fdopen(fd, "w") as handle:
                json.dump(generated, handle)
            log.warning(
                "consent secrets are not set in the environment; generated local ones (not for production)",
                extra={"secrets_file": str(path)},
            )
    stored: dict[str, str] = json.loads(path.read_text())
    return stored


def load_secrets(directory: Path | None = None) -> Secrets:
    require = env_bool("CONSENT_REQUIRE_SECRETS", False)
    values = {name: env_str(name, "") for name in SECRET_VARIABLES}
    missing = [name for name, value in values.items() if not value]
    if missing and require:
        raise ConfigError(f"CONSENT_REQUIRE_SECRETS is true but {', '.join(missing)} is not set")
    if missing:
        stored = local_secrets_file(
            (directory or data_dir()) / SECRETS_FILE, lambda: {name: new_secret_text() for name in SECRET_VARIABLES}
        )
        values.update({name: stored[name] for name in missing})
    return Secrets(
        hmac_key=_decode("CONSENT_HMAC_KEY", values["CONSENT_HMAC_KEY"]),
        key_encryption_key=_decode("CONSENT_KEY_ENCRYPTION_KEY", values["CONSENT_KEY_ENCRYPTION_KEY"]),
    )


class SubjectCrypto:
    """Keyed hashes of emails, wrapping of subject keys, and field encryption bound to subject and column."""

    def __init__(self, secrets: Secrets):
        self._hmac_key = secrets.hmac_key
        self._kek = AESGCM(secrets.key_encryption_key)
        self._unsubscribe_key = hmac.new(secrets.hmac_key, UNSUBSCRIBE_LABEL, hashlib.sha256).digest()

    def unsubscribe_token(self, subject_id: str) -> str:
        """'<subject id>.<MAC>': names the person by their random subject id (never the email) and does not expire."""
        return f"{subject_id}.{self._unsubscribe_mac(subject_id)}"

    def token_subject(self, token: str) -> str | None:
        """The subject id a token was issued for; None for anything this service did not sign."""
        subject_id, dot, mac = token.partition(".")
        if not dot or not subject_id or len(subject_id) > 64 or not subject_id.isalnum():
            return None
        return subject_id if hmac.compare_digest(mac, self._unsubscribe_mac(subject_id)) else None

    def _unsubscribe_mac(self, subject_id: str) -> str:
        digest = hmac.new(self._unsubscribe_key, subject_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def subject_hash(self, normalised_email: str) -> str:
        return hmac.new(self._hmac_key, normalised_email.encode(), hashlib.sha256).hexdigest()

    def new_subject_key(self, subject_id: str) -> tuple[bytes, bytes]:
        """A fresh key and its wrapped form (what is stored)."""
        key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        nonce = os.urandom(NONCE_BYTES)
        return key, nonce + self._kek.encrypt(nonce, key, subject_id.encode())

    def unwrap(self, subject_id: str, wrapped: bytes | None) -> bytes:
        if wrapped is None:
            raise KeyDestroyed("the subject's key was destroyed")
        try:
            return self._kek.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], subject_id.encode())
        except InvalidTag:
            raise KeyDestroyed("the subject's key does not unwrap with this key-encryption key") from None

    @staticmethod
    def encrypt(key: bytes, subject_id: str, field: str, value: str) -> bytes | None:
        """None for an empty value, so absence stays visible (and hashed) without a ciphertext."""
        if not value:
            return None
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(key).encrypt(nonce, value.encode(), f"{subject_id}:{field}".encode())

    @staticmethod
    def decrypt(key: bytes | None, subject_id: str, field: str, blob: bytes | None) -> str:
        if blob is None:
            return ""
        if key is None:
            raise KeyDestroyed("the subject's key was destroyed")
        try:
            plain = AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], f"{subject_id}:{field}".encode())
        except InvalidTag:
            raise KeyDestroyed(f"{field} does not decrypt with the subject's key") from None
        return plain.decode()
