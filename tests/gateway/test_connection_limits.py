"""Only the public needs go public: no route from the public listener reaches a Diagnose, and Envoy's limits fit the
machine (idle connections are closed, active ones are capped, header blocks and REST bodies are bounded), each
rendered from its environment variable and accepted by Envoy itself."""
from __future__ import annotations

import socket
import subprocess

import grpc
import pytest
import requests
import yaml
from google.protobuf import empty_pb2

from gateway.envoy import envoy_binary, render
from testsupport.stack import running_stack

IDLE_TIMEOUT_S = 1
MAX_CONNECTIONS = 24
GRACE_S = 30  # far below the 60 s default: a connection still open after this was not closed by the setting


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    env = {"DOWNSTREAM_IDLE_TIMEOUT_S": str(IDLE_TIMEOUT_S), "MAX_DOWNSTREAM_CONNECTIONS": str(MAX_CONNECTIONS)}
    with running_stack(tmp_path_factory.mktemp("limits"), env=env) as gateway:
        yield gateway


def _listener(config: dict, name: str) -> dict:
    return next(listener for listener in config["static_resources"]["listeners"] if listener["name"] == name)


def _hcm(listener: dict) -> dict:
    typed_config: dict = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return typed_config


def test_the_limits_are_rendered_from_the_environment_and_envoy_accepts_them(tmp_path):
    env = {"MAX_REQUEST_HEADERS_KB": "6", "MAX_REQUEST_BODY_BYTES": "32768", "DOWNSTREAM_IDLE_TIMEOUT_S": "45",
           "MAX_DOWNSTREAM_CONNECTIONS": "2000"}
    text = render(env)
    config = yaml.safe_load(text)
    monitor = config["overload_manager"]["resource_monitors"][0]
    assert monitor["typed_config"]["max_active_downstream_connections"] == 2000
    public, admin = _listener(config, "public"), _listener(config, "admin")
    assert admin["ignore_global_conn_limit"] is True and not public.get("ignore_global_conn_limit")
    for listener in (public, admin):
        hcm = _hcm(listener)
        assert hcm["max_request_headers_kb"] == 6
        assert hcm["common_http_protocol_options"]["idle_timeout"] == "45s"
        assert hcm["request_headers_timeout"]
    buffer = next(f for f in _hcm(public)["http_filters"] if f["name"] == "envoy.filters.http.buffer")
    assert buffer["typed_config"]["max_request_bytes"] == 32768
    routes = _hcm(public)["route_config"]["virtual_hosts"][0]["routes"]
    assert not [r for r in routes if "PlatformHealth/Deep" in str(r["match"]) or
                r["match"].get("prefix", "").startswith("/novahouse.health.v1.")]
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    checked = subprocess.run([envoy_binary(), "--mode", "validate", "--config-path", str(path)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("name, value", [
    ("MAX_REQUEST_HEADERS_KB", "64"), ("MAX_REQUEST_HEADERS_KB", "0"), ("DOWNSTREAM_IDLE_TIMEOUT_S", "0"),
    ("MAX_DOWNSTREAM_CONNECTIONS", "many"), ("MAX_REQUEST_BODY_BYTES", "10"),
])
def test_a_limit_out_of_its_range_stops_the_render(name, value):
    with pytest.raises(ValueError, match=name):
        render({name: value})


def _closed_by_envoy(sock: socket.socket) -> bool:
    """True once Envoy closes the connection (EOF or reset), False if it is still open after GRACE_S."""
    sock.settimeout(GRACE_S)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_idle_connections_are_closed(gw):
    port = gw.stack.config.public_port
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    kept_alive = []
    for _ in range(4):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /api/health HTTP/1.1\r\nhost: novahouse.test\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        kept_alive.append(sock)
    try:
        assert all(_closed_by_envoy(sock) for sock in silent + kept_alive)
    finally:
        for sock in silent + kept_alive:
            sock.close()


def test_connections_past_the_cap_are_refused_and_the_admin_listener_still_answers(gw):
    port = gw.stack.config.public_port
    opened = []
    try:
        for _ in range(MAX_CONNECTIONS * 2):
            opened.append(socket.create_connection(("127.0.0.1", port)))
        answered = 0
        for sock in opened:
            sock.settimeout(GRACE_S)
            try:
                sock.sendall(b"GET /api/health HTTP/1.1\r\nhost: novahouse.test\r\n\r\n")
                answered += sock.recv(65536).startswith(b"HTTP/1.1 200")
            except OSError:
                pass  # closed by Envoy on accept
        assert 0 < answered <= MAX_CONNECTIONS
        admin = requests.get(gw.admin_url + "/api/health/deep", timeout=30)
        assert admin.status_code == 200 and admin.json()["services"]
    finally:
        for sock in opened:
            sock.close()


DIAGNOSE_RPCS = ("/novahouse.health.v1.PlatformHealth/Deep", "/novahouse.chat.v1.ChatAdmin/Diagnose",
                 "/novahouse.consent.v1.ConsentAdmin/Diagnose", "/novahouse.notifier.v1.NotifierAdmin/Diagnose")


def test_nothing_on_the_public_listener_reaches_a_diagnose(gw):
    """The deep report fans out to every Diagnose, consent's verifying the whole ledger: operators' work only."""
    for path in ("/api/health/deep", "/api/admin/chat/diagnostics", "/api/admin/consent/diagnostics",
                 "/api/admin/consent/ledger/verify"):
        response = requests.get(gw.public_url + path, timeout=30)
        assert response.status_code == 404 and response.json()["error"] == "not_found", path
    with grpc.insecure_channel(f"127.0.0.1:{gw.stack.config.public_port}") as channel:
        for rpc in DIAGNOSE_RPCS:
            # An empty message is every one of these requests, whatever its type.
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(rpc)
            with pytest.raises(grpc.RpcError) as refused:
                call(empty_pb2.Empty().SerializeToString(), timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED, rpc
    live = requests.get(gw.public_url + "/api/health", timeout=30)
    assert live.status_code == 200 and live.json()["status"] == "ok"
