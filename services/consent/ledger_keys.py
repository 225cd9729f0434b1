"""The ledger's own keys, which the database never holds: the chain keys (HMAC of every entry) and the checkpoint
signing key (Ed25519).

CONSENT_CHAIN_KEYS is "id:base64,id:base64,..." (each key 32 bytes or more), the first one keying new entries, the
others kept so the entries they keyed still verify (rotation: put the new key first, keep the old ones).
CONSENT_CHECKPOINT_SIGNING_KEY is the base64 of a 32-byte Ed25519 private key; CONSENT_CHECKPOINT_PUBLIC_KEYS
("base64,base64", optional) lists the public keys of earlier signing keys, whose checkpoints still count.
Without them (local `make up`) they are generated once into DATA_DIR/consent-ledger-keys.json (mode 0600);
CONSENT_REQUIRE_SECRETS=true turns their absence into a start-up error.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.consent.chain import ChainKeys
from services.consent.crypto import local_secrets_file, new_secret_text
from services.runtime.config import ConfigError, data_dir, env_bool, env_str

CHAIN_KEYS = "CONSENT_CHAIN_KEYS"
SIGNING_KEY = "CONSENT_CHECKPOINT_SIGNING_KEY"
PUBLIC_KEYS = "CONSENT_CHECKPOINT_PUBLIC_KEYS"
KEY_VARIABLES = (CHAIN_KEYS, SIGNING_KEY)
KEYS_FILE = "consent-ledger-keys.json"


@dataclass(frozen=True)
class LedgerKeys:
    chain: ChainKeys
    signing: Ed25519PrivateKey
    trusted: tuple[Ed25519PublicKey, ...]  # the signing key's public key first, then earlier ones

    @classmethod
    def of(cls, chain: ChainKeys, signing: Ed25519PrivateKey, earlier: tuple[Ed25519PublicKey, ...] = ()) -> LedgerKeys:
        return cls(chain, signing, (signing.public_key(), *earlier))


def public_key_text(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def new_key_values() -> dict[str, str]:
    """Fresh values: a chain key (its id says when it was made only by being new) and a signing key."""
    return {CHAIN_KEYS: f"k{new_secret_text()[:6].replace('+', 'x').replace('/', 'y')}:{new_secret_text()}",
            SIGNING_KEY: new_secret_text()}


def _base64(name: str, text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name} is not valid base64") from None


def parse_chain_keys(text: str) -> ChainKeys:
    """'id:base64,id:base64' (the first keys new entries) as ChainKeys; ConfigError when malformed."""
    keys: dict[str, bytes] = {}
    for item in text.split(","):
        key_id, colon, encoded = item.strip().partition(":")
        if not colon:
            raise ConfigError(f"{CHAIN_KEYS} items are id:base64")
        if key_id in keys:
            raise ConfigError(f"{CHAIN_KEYS} names key {key_id!r} twice")
        keys[key_id] = _base64(CHAIN_KEYS, encoded)
    try:
        return ChainKeys(next(iter(keys)), keys)
    except ValueError as exc:
        raise ConfigError(f"{CHAIN_KEYS}: {exc}") from None


def _public_key(name: str, text: str) -> Ed25519PublicKey:
    raw = _base64(name, text)
    if len(raw) != 32:
        raise ConfigError(f"{name} keys must decode to 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_ledger_keys(directory: Path | None = None) -> LedgerKeys:
    values = {name: env_str(name, "") for name in KEY_VARIABLES}
    missing = [name for name, value in values.items() if not value]
    if missing and env_bool("CONSENT_REQUIRE_SECRETS", False):
        raise ConfigError(f"CONSENT_REQUIRE_SECRETS is true but {', '.join(missing)} is not set")
    if missing:
        stored = local_secrets_file((directory or data_dir()) / KEYS_FILE, new_key_values)
        values.update({name: stored[name] for name in missing})
    signing_raw = _base64(SIGNING_KEY, values[SIGNING_KEY])
    if len(signing_raw) != 32:
        raise ConfigError(f"{SIGNING_KEY} must decode to 32 bytes, not {len(signing_raw)}")
    signing = Ed25519PrivateKey.from_private_bytes(signing_raw)
    earlier = [item for item in env_str(PUBLIC_KEYS, "").split(",") if item.strip()]
    trusted = tuple(_public_key(PUBLIC_KEYS, item) for item in earlier)
    return LedgerKeys.of(parse_chain_keys(values[CHAIN_KEYS]), signing, trusted)
