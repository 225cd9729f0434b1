"""The local stack's sales-inbox sign-in: a signing key and one agent, made once in the data dir and kept.

`make up` (and every test stack) gets a working /inbox/login without anyone setting STAFF_* by hand; nothing of it
is in the repository. Where STAFF_TOKEN_KEY(_FILE), STAFF_USERS(_FILE) or STAFF_JWKS_URI are set already, those win.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from services.chat.staff_auth import hash_password

DEV_USER = "sales"
DEV_NAME = "Zespół sprzedaży"
_SET_ELSEWHERE = ("STAFF_TOKEN_KEY", "STAFF_TOKEN_KEY_FILE", "STAFF_USERS", "STAFF_USERS_FILE", "STAFF_JWKS_URI")


@dataclass(frozen=True)
class DevLogin:
    directory: Path
    username: str
    password: str

    @property
    def key_file(self) -> Path:
        return self.directory / "token-key.pem"

    @property
    def public_key_file(self) -> Path:
        return self.directory / "token-key.pub.pem"

    @property
    def login_file(self) -> Path:
        return self.directory / "dev-login.txt"

    def chat_env(self) -> dict[str, str]:
        """Chat signs tokens and knows the agent; the cookie is not Secure, as the local stack is plain http."""
        return {"STAFF_TOKEN_KEY_FILE": str(self.key_file),
                "STAFF_USERS": f"{self.username}:{DEV_NAME}:{hash_password(self.password)}",
                "STAFF_COOKIE_SECURE": "false"}

    def gateway_env(self) -> dict[str, str]:
        """Envoy verifies with the public half only."""
        return {"STAFF_TOKEN_PUBLIC_KEY_FILE": str(self.public_key_file)}


def configured_elsewhere(env: dict[str, str]) -> bool:
    return any(env.get(name, "").strip() for name in _SET_ELSEWHERE)


def dev_login(data_dir: Path) -> DevLogin:
    """The data dir's key and agent, made on first use (files readable by their owner only)."""
    directory = Path(data_dir) / "staff"
    directory.mkdir(parents=True, exist_ok=True)
    key_file, public_file, login_file = (directory / "token-key.pem", directory / "token-key.pub.pem",
                                         directory / "dev-login.txt")
    if key_file.exists():
        key = load_pem_private_key(key_file.read_bytes(), password=None)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        _write_private(key_file, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode())
    public_file.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    if login_file.exists():
        username, _, password = login_file.read_text().strip().partition(":")
    else:
        username, password = DEV_USER, secrets.token_urlsafe(12)
        _write_private(login_file, f"{username}:{password}\n")
    return DevLogin(directory, username, password)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
