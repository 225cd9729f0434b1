"""The shared runtime every server stands on: health that tells the truth, draining, redaction, DB, config."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import signal
import subprocess
import sys
import threading
from concurrent import futures

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2
from sqlalchemy import text

from deploy.local.processes import free_port, grpc_serving
from services.runtime import logs, request_context
from services.runtime.clients import channel_to
from services.runtime.config import ConfigError, env_bool, env_int
from services.runtime.db import Database
from services.runtime.errors import ValidationError
from services.runtime.server import GrpcService, server_interceptors
from testsupport.probes import health_status
from testsupport.waiting import wait_for


def test_health_follows_the_dependencies_and_drains(monkeypatch):
    monkeypatch.setenv("GRPC_PORT", "0")
    monkeypatch.setenv("HEALTH_CHECK_INTERVAL_S", "0.05")
    monkeypatch.setenv("SHUTDOWN_GRACE_S", "1")
    database_up = threading.Event()

    def database():
        if not database_up.is_set():
            raise ConnectionError("down")

    service = GrpcService("probe", 0, readiness={"database": database})
    port = service.start()
    try:
        assert health_status(port) == health_pb2.HealthCheckResponse.NOT_SERVING
        database_up.set()
        wait_for(lambda: health_status(port) == health_pb2.HealthCheckResponse.SERVING, what="SERVING")
        database_up.clear()
        wait_for(lambda: health_status(port) == health_pb2.HealthCheckResponse.NOT_SERVING, what="NOT_SERVING")
        database_up.set()
        wait_for(lambda: health_status(port) == health_pb2.HealthCheckResponse.SERVING, what="SERVING")
    finally:
        service.stop()
    assert not grpc_serving(f"127.0.0.1:{port}")


def test_sigterm_stops_a_server_cleanly(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.ratelimit.server"],
                            env={"GRPC_PORT": str(port), "PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path)},
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: grpc_serving(f"127.0.0.1:{port}"), timeout=30, what="SERVING")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.stderr is not None
    messages = [json.loads(line)["msg"] for line in proc.stderr.read().splitlines() if line.startswith("{")]
    assert messages[-2:] == ["draining", "stopped"]


def test_logs_never_carry_personal_data_in_clear():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("test"))
    log = logging.getLogger("pii-test")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("lead jan.kowalski@example.com tel. +48 600 700 800 from 203.0.113.9 and 2001:db8::7",
                    extra={"visitor": {"email": "anna@example.pl", "phone": "600-700-800", "ip": "10.1.2.3"}})
    finally:
        log.removeHandler(handler)
    line = stream.getvalue()
    for secret in ("jan.kowalski", "example.com", "600 700 800", "203.0.113.9", "2001:db8::7",
                   "anna@example.pl", "600-700-800", "10.1.2.3"):
        assert secret not in line
    entry = json.loads(line)
    assert entry["msg"] == "lead [email] tel. [phone] from [ip] and [ip]"
    assert entry["visitor"] == {"email": "[email]", "phone": "[phone]", "ip": "[ip]"}


def test_bad_configuration_names_the_variable(monkeypatch):
    monkeypatch.setenv("DLQ_MAX_RETRIES", "five")
    with pytest.raises(ConfigError, match="DLQ_MAX_RETRIES"):
        env_int("DLQ_MAX_RETRIES", 5)
    monkeypatch.setenv("RATELIMIT_FAIL_CLOSED", "maybe")
    with pytest.raises(ConfigError, match="RATELIMIT_FAIL_CLOSED"):
        env_bool("RATELIMIT_FAIL_CLOSED", False)


def test_sqlite_by_default_in_the_data_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    db = Database("probe")
    db.ping()
    assert (tmp_path / "probe.db").exists()
    db.dispose()


@pytest.mark.postgres
def test_postgres_keeps_each_service_in_its_own_schema(monkeypatch, pg_url, pg_schema):
    monkeypatch.setenv("DATABASE_URL", pg_url)  # the plain postgresql:// form operators set
    monkeypatch.setenv("DB_SCHEMA", pg_schema)
    db = Database("probe")
    with db.engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{pg_schema}"'))
        conn.execute(text("CREATE TABLE marker (id int)"))
        where = conn.execute(text("SELECT table_schema FROM information_schema.tables WHERE table_name='marker'"
                                  " AND table_schema = :s"), {"s": pg_schema}).scalar()
    assert where == pg_schema
    db.dispose()


def _method(request, context):
    if request == b"bad":
        raise ValidationError("message must not be empty")
    if request == b"boom":
        raise RuntimeError("secret detail jan@example.com")
    if request == b"redis":
        raise redis.ConnectionError("Error 111 connecting to 10.1.2.3:6379. Connection refused.")
    if request == b"peer":  # a service this one calls is not there
        with grpc.insecure_channel(f"127.0.0.1:{free_port()}") as peer:
            peer_call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = peer.unary_unary("/peer.P/Call")
            peer_call(b"", timeout=5)
    return request_context.current_request_id().encode()


def _stream(request, context):
    yield b"first"
    _method(request, context)
    yield b"never"


@contextlib.contextmanager
def _served():
    """A bare grpc server with the runtime's interceptors and no error handling of its own in the methods."""
    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=server_interceptors())
    handler = grpc.method_handlers_generic_handler("t.T", {
        "Method": grpc.unary_unary_rpc_method_handler(_method),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
    })
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        server.stop(0)


@pytest.mark.parametrize("method", ["Method", "Stream"])
@pytest.mark.parametrize("payload, lost", [(b"redis", "Redis"), (b"peer", "a peer service")])
def test_a_lost_dependency_is_unavailable_with_retry_after(method, payload, lost, caplog):
    with _served() as channel, pytest.raises(grpc.RpcError) as err:
        call = channel.unary_unary if method == "Method" else channel.unary_stream
        result = call(f"/t.T/{method}")(payload, timeout=10)
        if method == "Stream":
            list(result)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert err.value.details() == f"{lost} is unavailable; retry shortly"  # no address, no driver text
    assert ("retry-after", "5") in err.value.trailing_metadata()
    assert not [r for r in caplog.records if r.getMessage().startswith("unhandled error")]


@pytest.mark.parametrize("method", ["Method", "Stream"])
@pytest.mark.parametrize("payload, code, detail", [
    (b"bad", grpc.StatusCode.INVALID_ARGUMENT, "message must not be empty"),
    (b"boom", grpc.StatusCode.INTERNAL, "internal error"),
])
def test_domain_errors_become_status_codes_and_internals_stay_hidden(method, payload, code, detail, caplog):
    with _served() as channel, pytest.raises(grpc.RpcError) as err:
        call = channel.unary_unary if method == "Method" else channel.unary_stream
        result = call(f"/t.T/{method}")(payload, timeout=5)
        if method == "Stream":
            list(result)
    assert err.value.code() == code and err.value.details() == detail
    unhandled = [r for r in caplog.records if r.getMessage().startswith("unhandled error")]
    assert len(unhandled) == (1 if code == grpc.StatusCode.INTERNAL else 0)


def test_a_valid_request_id_is_kept_and_a_forged_one_replaced():
    with _served() as channel:
        method = channel.unary_unary("/t.T/Method")
        kept = method(b"ok", metadata=(("x-request-id", "edge-assigned-0001"),), timeout=5)
        replaced = method(b"ok", metadata=(("x-request-id", 'x" injected\\n'),), timeout=5)
        minted = method(b"ok", timeout=5)
    assert kept == b"edge-assigned-0001"
    assert request_context.valid_request_id(replaced.decode()) and b"injected" not in replaced
    assert request_context.valid_request_id(minted.decode())


def test_calls_made_while_handling_a_request_carry_its_id():
    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=server_interceptors())
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "t.T", {"Method": grpc.unary_unary_rpc_method_handler(_method)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        method = "/t.T/Method"
        outgoing: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel_to(f"127.0.0.1:{port}").unary_unary(method)
        with request_context.request_scope("visitor-request-0042"):
            seen = outgoing(b"ok", timeout=5)
        assert seen == b"visitor-request-0042"
    finally:
        server.stop(0)


@pytest.mark.parametrize("payload", [b"\x0a\x01\xff", b"\x0a\x03\xed\xa0\x80", b"\xff\xff\xff", b"\x0a\x05ab"])
def test_undecodable_bytes_are_invalid_argument_logged_once_without_a_traceback(monkeypatch, payload, caplog):
    """A string field that is not UTF-8 (what the transcoder passes on from `/api/unsubscribe/status/%ff`) or a
    corrupt message is the caller's bad input: INVALID_ARGUMENT, and the log stays small and without the bytes."""
    monkeypatch.setenv("GRPC_PORT", "0")
    service = GrpcService("probe", 0)
    port = service.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            check: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/grpc.health.v1.Health/Check")
            codes = []
            for _ in range(20):
                with pytest.raises(grpc.RpcError) as err:
                    check(payload, timeout=5)
                codes.append((err.value.code(), (err.value.details() or "").startswith("malformed request: ")))
            assert check(health_pb2.HealthCheckRequest(service="").SerializeToString(), timeout=5)
    finally:
        service.stop()
    assert set(codes) == {(grpc.StatusCode.INVALID_ARGUMENT, True)}
    lines = [r for r in caplog.records if r.getMessage() == "undecodable request"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING and not lines[0].exc_info
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
