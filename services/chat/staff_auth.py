"""Staff sign-in for the sales inbox: StaffAuth.Login/Logout, the tokens they issue, and the interceptor that keeps
Inbox calls to verified, signed-in agents.

Tokens are JWTs (ES256 with an EC P-256 key, or RS256 with an RSA key) signed with STAFF_TOKEN_KEY. Envoy's JWT
filter verifies them on every Inbox route and passes the verified claims on as `x-staff-agent` (sub),
`x-staff-token-id` (jti) and `x-staff-name` (name), after dropping any such header a client sent. In production the
company's identity provider (OIDC) issues the tokens instead and this module only checks the interceptor's part.

STAFF_USERS lists the agents who may sign in here, separated by ';' or new lines (argon2 hashes contain commas):

    anna:Anna Kowalska:$argon2id$v=19$m=65536,t=3,p=4$...;jan:Jan Nowak:$argon2id$...

username ([a-z0-9._-], at most 64), display name (shown to visitors), argon2 hash (`python -m services.chat.manage
hash-password` prints one). STAFF_USERS_FILE names a file of the same lines (a mounted Secret) instead.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
from google.rpc import code_pb2

from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from services.chat import staff_store
from services.runtime.clock import utcnow
from services.runtime.config import ConfigError
from services.runtime.db import Database
from services.runtime.errors import abort
from services.runtime.interceptors import ScopedInterceptor
from services.runtime.timestamps import to_timestamp

COOKIE = "nh_staff"  # gateway/envoy.py reads the token from this cookie (STAFF_COOKIE there)
AGENT_HEADER = "x-staff-agent"
TOKEN_ID_HEADER = "x-staff-token-id"
NAME_HEADER = "x-staff-name"
EXPIRY_HEADER = "x-staff-token-exp"  # the token's exp (seconds since the epoch), whoever issued it
INBOX_PREFIX = "/novahouse.chat.v1.Inbox/"
LOGOUT = "/novahouse.chat.v1.StaffAuth/Logout"
WRONG_LOGIN = "wrong username or password"
MAX_PASSWORD_CHARS = 1024  # argon2 hashes any length; a bound keeps a request from buying CPU with megabytes

_USERNAME = re.compile(r"^[a-z0-9._-]{1,64}$")
_HASHER = PasswordHasher()


@dataclass(frozen=True)
class StaffUser:
    username: str
    name: str
    password_hash: str


@dataclass(frozen=True)
class Agent:
    """The verified agent of an Inbox call: the token's subject and display name."""
    username: str
    name: str
    token_id: str
    expires_at: dt.datetime | None = None


def hash_password(password: str) -> str:
    """An argon2id hash for STAFF_USERS."""
    return _HASHER.hash(password)


def parse_users(raw: str) -> dict[str, StaffUser]:
    """STAFF_USERS's lines as users by username; a bad entry raises ConfigError naming the variable."""
    users: dict[str, StaffUser] = {}
    for number, entry in enumerate(e.strip() for e in re.split(r"[;\n]", raw)):
        if not entry:
            continue
        parts = entry.split(":", 2)
        if len(parts) != 3:
            raise ConfigError(f"STAFF_USERS entry {number + 1} is not username:Display Name:argon2-hash")
        username, name, password_hash = (part.strip() for part in parts)
        if not _USERNAME.match(username):
            raise ConfigError(f"STAFF_USERS entry {number + 1}: the username must be 1-64 of a-z 0-9 . _ -")
        if not 1 <= len(name) <= 64:
            raise ConfigError(f"STAFF_USERS entry {number + 1} ({username}): the display name must be 1-64 characters")
        if not password_hash.startswith("$argon2"):
            raise ConfigError(f"STAFF_USERS entry {number + 1} ({username}): the hash is not an argon2 hash "
                              "(python -m services.chat.manage hash-password prints one)")
        if username in users:
            raise ConfigError(f"STAFF_USERS names {username} twice")
        users[username] = StaffUser(username, name, password_hash)
    return users


def load_private_key(pem: str, variable: str = "STAFF_TOKEN_KEY") -> tuple[object, str]:
    """The signing key and its JWT algorithm (ES256 for EC P-256, RS256 for RSA of 2048 bits or more). Line breaks
    may be written as \\n (a Secret made from an env file holds one line per key)."""
    try:
        key = load_pem_private_key(pem.replace("\\n", "\n").encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{variable} is not an unencrypted PEM private key") from exc
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return key, "RS256"
    raise ConfigError(f"{variable} must be an EC P-256 key (ES256) or an RSA key of at least 2048 bits (RS256)")


def key_id(public_pem: bytes) -> str:
    """The key's id in the token header and the gateway's JWKS: a digest of the public key (gateway/envoy.py)."""
    return hashlib.sha256(public_pem).hexdigest()[:16]


@dataclass(frozen=True)
class StaffAuthConfig:
    """STAFF_* settings, parsed and checked at start; `ready` is False when the local login is not configured."""
    users: dict[str, StaffUser]
    key: object | None
    algorithm: str
    kid: str
    issuer: str
    audience: str
    ttl: dt.timedelta
    cookie_secure: bool

    @property
    def ready(self) -> bool:
        return self.key is not None and bool(self.users)

    @classmethod
    def parse(cls, key_pem: str, key_file: str, users: str, users_file: str, issuer: str, audience: str,
              ttl_min: int, cookie_secure: bool) -> StaffAuthConfig:
        if key_file:
            key_pem = _read(key_file, "STAFF_TOKEN_KEY_FILE")
        if users_file:
            users = _read(users_file, "STAFF_USERS_FILE")
        key, algorithm, kid = None, "", ""
        if key_pem:
            key, algorithm = load_private_key(key_pem)
            public = key.public_key().public_bytes(  # type: ignore[attr-defined]  # EC or RSA, both have it
                Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
            kid = key_id(public)
        return cls(parse_users(users), key, algorithm, kid, issuer, audience, dt.timedelta(minutes=ttl_min),
                   cookie_secure)


def _read(path: str, variable: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{variable}={path}: cannot read it ({exc.strerror})") from exc


class StaffAuth:
    """Password check, token issuing and revocation."""

    def __init__(self, config: StaffAuthConfig, db: Database):
        self.config = config
        self.db = db
        # A wrong username costs the same argon2 verification as a wrong password, so that timing does not tell
        # which usernames exist.
        self._decoy = hash_password(uuid.uuid4().hex)

    def login(self, username: str, password: str) -> tuple[StaffUser, str, dt.datetime] | None:
        """(the user, their token, its expiry) or None for a wrong username or password."""
        user = self.config.users.get(username)
        try:
            _HASHER.verify(user.password_hash if user else self._decoy, password)
        except (VerificationError, InvalidHashError):
            return None
        if user is None:
            return None
        now = utcnow().replace(microsecond=0)
        expires = now + self.config.ttl
        claims = {"iss": self.config.issuer, "aud": self.config.audience, "sub": user.username, "name": user.name,
                  "jti": uuid.uuid4().hex, "iat": now, "exp": expires}
        token = jwt.encode(claims, self.config.key, algorithm=self.config.algorithm,  # type: ignore[arg-type]
                           headers={"kid": self.config.kid})
        staff_store.record_action(self.db, user.username, "login")
        return user, token, expires

    def logout(self, agent: Agent) -> None:
        """The token stays refused until it would have expired anyway: its exp, as Envoy verified it (a token of
        the company's identity provider may live longer than ours), or at most our token lifetime from now."""
        staff_store.revoke(self.db, agent.token_id, agent.expires_at or utcnow() + self.config.ttl)
        staff_store.record_action(self.db, agent.username, "logout")

    def cookie(self, token: str, max_age_s: int) -> str:
        secure = "; Secure" if self.config.cookie_secure else ""
        return f"{COOKIE}={token}; Max-Age={max_age_s}; Path=/; HttpOnly; SameSite=Strict{secure}"


def verified_agent(context: grpc.ServicerContext) -> Agent:
    """The agent of an Inbox (or Logout) call, as Envoy verified it; StaffTokenInterceptor has already refused a
    call without these headers, so a servicer can rely on them."""
    metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
    username = metadata.get(AGENT_HEADER, "")
    exp = metadata.get(EXPIRY_HEADER, "")
    expires_at = dt.datetime.fromtimestamp(int(exp), dt.UTC) if exp.isdigit() and len(exp) <= 11 else None
    return Agent(username, metadata.get(NAME_HEADER, "") or username, metadata.get(TOKEN_ID_HEADER, ""), expires_at)


class StaffTokenInterceptor(ScopedInterceptor):
    """Defence in depth behind Envoy: an Inbox call (and Logout) needs the verified agent and token id that only
    Envoy's JWT filter sets, and a signed-out token is refused here (Envoy cannot know of a revocation)."""

    def __init__(self, db: Database):
        self.db = db

    @contextmanager
    def scope(self, method: str, context: grpc.ServicerContext) -> Iterator[None]:
        if method.startswith(INBOX_PREFIX) or method == LOGOUT:
            agent = verified_agent(context)
            if not agent.username or not agent.token_id:
                abort(context, code_pb2.UNAUTHENTICATED, "a staff token is required")
            if method != LOGOUT and staff_store.is_revoked(self.db, agent.token_id):
                abort(context, code_pb2.UNAUTHENTICATED, "this staff token was signed out")
        yield


class StaffAuthServicer(chat_pb2_grpc.StaffAuthServicer):
    def __init__(self, auth: StaffAuth):
        self.auth = auth

    def _require_ready(self, context: grpc.ServicerContext) -> None:
        if not self.auth.config.ready:
            abort(context, code_pb2.FAILED_PRECONDITION,
                  "the inbox login is not configured here (STAFF_TOKEN_KEY and STAFF_USERS)")

    def Login(self, request: chat_pb2.LoginRequest, context: grpc.ServicerContext) -> chat_pb2.LoginResponse:
        self._require_ready(context)
        if not request.username or not request.password:
            abort(context, code_pb2.INVALID_ARGUMENT, "username and password are required")
        if len(request.password) > MAX_PASSWORD_CHARS or len(request.username) > 64:
            abort(context, code_pb2.UNAUTHENTICATED, WRONG_LOGIN)
        signed_in = self.auth.login(request.username, request.password)
        if signed_in is None:
            abort(context, code_pb2.UNAUTHENTICATED, WRONG_LOGIN)
        user, token, expires = signed_in
        max_age = int(self.auth.config.ttl.total_seconds())
        context.send_initial_metadata((("set-cookie", self.auth.cookie(token, max_age)),))
        return chat_pb2.LoginResponse(token=token, expires_at=to_timestamp(expires), agent=user.name)

    def Logout(self, request: chat_pb2.LogoutRequest, context: grpc.ServicerContext) -> chat_pb2.LogoutResponse:
        self.auth.logout(verified_agent(context))
        context.send_initial_metadata((("set-cookie", self.auth.cookie("", 0)),))
        return chat_pb2.LogoutResponse()
