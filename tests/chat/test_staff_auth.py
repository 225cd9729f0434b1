"""Staff sign-in in the chat service itself: the settings it refuses at start, Login and Logout over gRPC with the
interceptor that guards Inbox calls behind Envoy, the audit of both, and the hash-password command. The gateway's
side (JWT filter, cookies through the transcoder, expiry) is tests/gateway/test_staff_auth.py."""
from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures

import grpc
import jwt
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from sqlalchemy import select

from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from services.chat.staff_auth import (
    StaffAuthConfig,
    StaffAuthServicer,
    StaffTokenInterceptor,
    hash_password,
    parse_users,
)
from services.chat.storage import AgentAction, StaffRevokedToken
from services.runtime.config import ConfigError
from tests.chat.conftest import build_world
from testsupport.peers import PeerServer

PASSWORD = "correct horse battery"


def _pem(key: object) -> str:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@contextlib.contextmanager
def serving(app) -> Iterator[grpc.Channel]:
    """StaffAuth and the interceptor on an in-process server."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[StaffTokenInterceptor(app.db)])
    chat_pb2_grpc.add_StaffAuthServicer_to_server(StaffAuthServicer(app.staff), server)
    # One Inbox method answering empty numbers: what the interceptor lets through (the Inbox itself is inbox.py's).
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("novahouse.chat.v1.Inbox", {
        "GetStats": grpc.unary_unary_rpc_method_handler(
            lambda _request, _context: chat_pb2.InboxStats(),
            request_deserializer=chat_pb2.GetStatsRequest.FromString,
            response_serializer=chat_pb2.InboxStats.SerializeToString)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        channel.close()
        server.stop(None)


@pytest.fixture
def staffed(tmp_path, signing_key):
    """Chat with a signing key and one agent, Anna, on a fresh SQLite file."""
    users = f"anna:Anna Kowalska:{hash_password(PASSWORD)}"
    with PeerServer() as peers:
        world = build_world(f"sqlite:///{tmp_path / 'chat.db'}", peers, staff_token_key=_pem(signing_key),
                            staff_users=users, staff_token_ttl_min=60)
        with serving(world.app) as channel:
            yield world, chat_pb2_grpc.StaffAuthStub(channel), channel
        world.db.dispose()


def test_login_answers_a_signed_token_and_a_secure_http_only_cookie(staffed, signing_key):
    world, stub, _channel = staffed
    response, call = stub.Login.with_call(chat_pb2.LoginRequest(username="anna", password=PASSWORD), timeout=10)
    claims = jwt.decode(response.token, signing_key.public_key(), algorithms=["ES256"], audience="novahouse-inbox",
                        issuer="novahouse-staff")
    assert (claims["sub"], claims["name"], response.agent) == ("anna", "Anna Kowalska", "Anna Kowalska")
    assert claims["exp"] - claims["iat"] == 3600 and claims["jti"]
    assert response.expires_at.seconds == claims["exp"]
    cookie = dict(call.initial_metadata())["set-cookie"]
    assert cookie.startswith(f"nh_staff={response.token};")
    assert {"HttpOnly", "SameSite=Strict", "Path=/", "Secure", "Max-Age=3600"} <= {
        part.strip() for part in cookie.split(";")}
    with world.db.session() as session:
        audit = session.execute(select(AgentAction.agent, AgentAction.action, AgentAction.detail)).all()
    assert [tuple(row) for row in audit] == [("anna", "login", "")]


def test_a_wrong_password_and_an_unknown_user_are_refused_alike(staffed):
    _world, stub, _channel = staffed
    details = []
    for username, password in (("anna", "wrong"), ("nobody", PASSWORD), ("anna", "x" * 5000)):
        with pytest.raises(grpc.RpcError) as refused:
            stub.Login(chat_pb2.LoginRequest(username=username, password=password), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        details.append(refused.value.details())
    assert len(set(details)) == 1
    with pytest.raises(grpc.RpcError) as empty:
        stub.Login(chat_pb2.LoginRequest(username="anna"), timeout=10)
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_logout_needs_the_verified_headers_and_revokes_the_token_id(staffed):
    world, stub, _channel = staffed
    with pytest.raises(grpc.RpcError) as anonymous:
        stub.Logout(chat_pb2.LogoutRequest(), timeout=10)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    verified = (("x-staff-agent", "anna"), ("x-staff-token-id", "abc123"), ("x-staff-name", "Anna Kowalska"),
                ("x-staff-token-exp", "4102444800"))  # an identity provider's token may outlive ours
    _reply, call = stub.Logout.with_call(chat_pb2.LogoutRequest(), metadata=verified, timeout=10)
    assert "Max-Age=0" in dict(call.initial_metadata())["set-cookie"]
    with world.db.session() as session:
        revoked = session.execute(select(StaffRevokedToken.token_id, StaffRevokedToken.expires_at)).all()
        assert [(token_id, until.year) for token_id, until in revoked] == [("abc123", 2100)]
        assert session.execute(select(AgentAction.action)).scalars().all() == ["logout"]


def test_an_inbox_call_without_verified_headers_or_with_a_revoked_token_is_refused(staffed):
    _world, stub, channel = staffed
    verified = (("x-staff-agent", "anna"), ("x-staff-token-id", "t-1"), ("x-staff-name", "Anna Kowalska"))
    stub.Logout(chat_pb2.LogoutRequest(), metadata=verified, timeout=10)
    get_stats = channel.unary_unary("/novahouse.chat.v1.Inbox/GetStats",
                                             request_serializer=chat_pb2.GetStatsRequest.SerializeToString,
                                             response_deserializer=chat_pb2.InboxStats.FromString)
    for metadata in ((), verified, (("x-staff-agent", "anna"),)):
        with pytest.raises(grpc.RpcError) as refused:
            get_stats(chat_pb2.GetStatsRequest(), metadata=metadata, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    fresh = (("x-staff-agent", "anna"), ("x-staff-token-id", "t-2"))
    assert get_stats(chat_pb2.GetStatsRequest(), metadata=fresh, timeout=10) == chat_pb2.InboxStats()


def test_without_key_and_users_the_login_says_it_is_not_configured(world):
    with serving(world.app) as channel, pytest.raises(grpc.RpcError) as refused:
        chat_pb2_grpc.StaffAuthStub(channel).Login(chat_pb2.LoginRequest(username="a", password="b"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "STAFF_TOKEN_KEY" in (refused.value.details() or "")


@pytest.mark.parametrize("users, problem", [
    ("anna:Anna", "entry 1 is not"),
    ("Anna!:Anna:$argon2id$x", "username"),
    ("anna:Anna:plaintext", "not an argon2 hash"),
    ("anna:Anna:$argon2id$x;anna:Anna 2:$argon2id$y", "twice"),
])
def test_bad_staff_users_stop_the_start_naming_the_variable(users, problem):
    with pytest.raises(ConfigError, match="STAFF_USERS") as refused:
        parse_users(users)
    assert problem in str(refused.value)


def test_the_signing_key_must_be_one_envoy_can_verify(signing_key):
    def parse(pem: str) -> StaffAuthConfig:
        return StaffAuthConfig.parse(pem, "", "", "", "iss", "aud", 60, True)

    assert parse(_pem(signing_key)).algorithm == "ES256"
    assert parse(_pem(signing_key).replace("\n", "\\n")).algorithm == "ES256"  # one line, as in an env file
    assert parse(_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))).algorithm == "RS256"
    for bad in ("not a key", _pem(ec.generate_private_key(ec.SECP384R1()))):
        with pytest.raises(ConfigError, match="STAFF_TOKEN_KEY"):
            parse(bad)
    with pytest.raises(ConfigError, match="STAFF_TOKEN_KEY_FILE"):
        StaffAuthConfig.parse("", "/nonexistent/key.pem", "", "", "iss", "aud", 60, True)


def test_hash_password_prints_an_argon2_hash_of_stdin():
    done = subprocess.run([sys.executable, "-m", "services.chat.manage", "hash-password"], input=PASSWORD + "\n",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip()
    assert printed.startswith("$argon2id$") and PASSWORD not in done.stdout
    assert PasswordHasher().verify(printed, PASSWORD)
    assert parse_users(f"anna:Anna:{printed}")["anna"].password_hash == printed
