"""The sales inbox is for signed-in staff only, through the real Envoy: its JWT filter on both listeners, the login
that issues tokens, their expiry, another key's tokens, logout (chat's interceptor refuses a signed-out token),
forged x-staff-* headers, the login's rate limit, the server-sent events of the visitor's stream, and several chat
replicas behind one gateway."""
from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import jwt
import pytest
import requests
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.envoy import _public_jwk, envoy_binary, render
from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from testsupport import contracts
from testsupport.stack import (
    UNLIMITED,
    Gateway,
    extra_gateway,
    post_from,
    running_stack,
    staff_credentials,
    staff_login,
    staff_token,
)
from testsupport.waiting import wait_for

INBOX = "/novahouse.chat.v1.Inbox/"
LOGIN_BUDGET = 20  # above the other tests' own logins from 127.0.0.1


@pytest.fixture(scope="module")
def gw(tmp_path_factory) -> Iterator[Gateway]:
    """Two chat replicas (on one SQLite file) behind Envoy; heartbeats every second; a small login budget."""
    env = {**UNLIMITED, "STAFF_LOGIN_RATE_LIMIT": f"{LOGIN_BUDGET} per minute", "STREAM_HEARTBEAT_S": "1"}
    with running_stack(tmp_path_factory.mktemp("staff"), env=env, chat_replicas=2) as gateway:
        yield gateway


def _signed(gw: Gateway, key: object = None, **overrides: object) -> str:
    """A token signed with the stack's own key (or `key`), its claims changed by `overrides` (None drops one)."""
    staff = gw.stack.staff
    assert staff is not None
    now = dt.datetime.now(dt.UTC)
    claims: dict[str, object] = {"iss": "novahouse-staff", "aud": "novahouse-inbox", "sub": staff.username,
                                 "name": "Zespół sprzedaży", "jti": uuid.uuid4().hex, "iat": now,
                                 "exp": now + dt.timedelta(minutes=5), **overrides}
    return jwt.encode({k: v for k, v in claims.items() if v is not None},
                      key or staff.key_file.read_text(), algorithm="ES256")  # type: ignore[arg-type]


def _inbox_rest_calls() -> list[tuple[str, str]]:
    """(verb, path) of every Inbox REST route, path parameters filled in."""
    calls = []
    for route in contracts.http_routes():
        if route.rpc.startswith(INBOX):
            path = route.pattern.pattern.strip("^$").replace("[^/]+", "x1").replace("\\", "")
            calls.append((route.verb, path))
    assert len(calls) == len(chat_pb2.DESCRIPTOR.services_by_name["Inbox"].methods)
    return calls


def _grpc_inbox_calls(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> dict[str, grpc.StatusCode]:
    """The status of every Inbox method called with an empty request over native gRPC."""
    codes = {}
    for method in chat_pb2.DESCRIPTOR.services_by_name["Inbox"].methods:
        request = getattr(chat_pb2, method.input_type.name)()
        path = f"{INBOX}{method.name}"
        kwargs = {"request_serializer": type(request).SerializeToString, "response_deserializer": lambda b: b}
        try:
            if method.server_streaming:
                for _event in channel.unary_stream(path, **kwargs)(request, metadata=metadata, timeout=10):
                    break
            else:
                channel.unary_unary(path, **kwargs)(request, metadata=metadata, timeout=10)
            codes[method.name] = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            codes[method.name] = exc.code()
    return codes


@pytest.mark.parametrize("admin", [False, True], ids=["public", "admin"])
def test_without_a_token_every_inbox_route_and_rpc_is_refused(gw, admin):
    base = gw.admin_url if admin else gw.public_url
    forged = {"x-staff-agent": "sales", "x-staff-token-id": "x", "x-staff-name": "Boss"}
    for headers in ({}, forged, {"authorization": "Bearer not.a.token"}):
        for verb, path in _inbox_rest_calls():
            response = requests.request(verb, base + path, headers=headers, json={} if verb == "POST" else None,
                                        timeout=10)
            assert response.status_code == 401, (verb, path, response.text)
            body = response.json()
            assert body["code"] == 16 and set(body) == {"code", "message", "details"}
        logout = requests.post(base + "/api/staff/logout", json={}, headers=headers, timeout=10)
        assert logout.status_code == 401 and "set-cookie" not in logout.headers
    channel = gw.channel(admin=admin)
    for metadata in ((), tuple(forged.items()), (("authorization", "Bearer not.a.token"),)):
        codes = _grpc_inbox_calls(channel, metadata)
        assert set(codes.values()) == {grpc.StatusCode.UNAUTHENTICATED}, codes


def test_a_browser_without_a_token_is_sent_to_the_login_page(gw):
    page = requests.get(gw.public_url + "/inbox/", timeout=10)
    assert page.status_code == 401
    assert page.headers["content-type"].startswith("text/html")
    assert 'href="/inbox/login"' in page.text
    login = requests.get(gw.public_url + "/inbox/login", timeout=10)
    assert login.status_code == 200 and "<form" in login.text
    assert login.headers["cache-control"] == "no-store"
    script = next(line for line in login.text.splitlines() if "<script" in line).split('"')[1]
    assert requests.get(gw.public_url + script, timeout=10).status_code == 200  # public, like the widget
    bare = requests.get(gw.public_url + "/inbox", allow_redirects=False, timeout=10)
    assert bare.status_code == 301 and bare.headers["location"].endswith("/inbox/")


def test_login_sets_a_cookie_that_opens_the_inbox_on_both_listeners(gw):
    response = staff_login(gw)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["agent"] == "Zespół sprzedaży" and body["expires_at"]
    cookie = response.headers["set-cookie"]
    attributes = [part.strip() for part in cookie.split(";")]
    assert attributes[0] == f"nh_staff={body['token']}"
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attributes)
    assert "Secure" not in attributes  # the local stack is plain http (STAFF_COOKIE_SECURE=false)
    with requests.Session() as browser:
        browser.cookies.set("nh_staff", body["token"])
        page = browser.get(gw.public_url + "/inbox/", timeout=10)
        assert page.status_code == 200 and "<html" in page.text
        for base in (gw.public_url, gw.admin_url):
            listed = browser.get(base + "/api/inbox/conversations", timeout=10)
            assert listed.status_code == 200, listed.text
            assert set(listed.json()) >= {"waiting", "live"}
            contracts.RECORDED.add(INBOX + "ListConversations")
    bearer = requests.get(gw.public_url + "/api/inbox/stats",
                          headers={"authorization": f"Bearer {body['token']}"}, timeout=10)
    assert bearer.status_code == 200, bearer.text


def test_native_grpc_inbox_calls_work_with_a_bearer_token(gw):
    token = staff_token(gw)
    stub = chat_pb2_grpc.InboxStub(gw.channel())
    stats = stub.GetStats(chat_pb2.GetStatsRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=10)
    assert stats.HasField("today")


def test_wrong_username_or_password_is_refused_alike(gw):
    username, password = staff_credentials(gw)
    refusals = [
        post_from("127.0.0.21", gw.stack.config.public_port, "/api/staff/login", body)
        for body in ({"username": username, "password": password + "x"},
                     {"username": "nobody", "password": password})
    ]
    assert [status for status, _, _ in refusals] == [401, 401]
    assert refusals[0][2] == refusals[1][2]  # the same body: nothing tells which usernames exist
    assert "set-cookie" not in refusals[0][1]
    assert json.loads(refusals[0][2])["code"] == 16


def test_login_attempts_are_rate_limited_per_address(gw):
    username, password = staff_credentials(gw)
    port = gw.stack.config.public_port
    statuses = [post_from("127.0.0.31", port, "/api/staff/login", {"username": username, "password": "guess"})[0]
                for _ in range(LOGIN_BUDGET)]
    assert statuses == [401] * LOGIN_BUDGET
    status, headers, body = post_from("127.0.0.31", port, "/api/staff/login",
                                      {"username": username, "password": password})
    assert status == 429, body  # even the right password, once the address's budget is spent
    assert headers.get("retry-after")
    other, _, _ = post_from("127.0.0.32", port, "/api/staff/login", {"username": username, "password": password})
    assert other == 200


def test_an_expired_token_is_refused(gw):
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    token = _signed(gw, iat=past - dt.timedelta(minutes=5), exp=past)
    response = requests.get(gw.public_url + "/api/inbox/conversations", cookies={"nh_staff": token}, timeout=10)
    assert response.status_code == 401 and "expired" in response.json()["message"].lower()
    page = requests.get(gw.public_url + "/inbox/", cookies={"nh_staff": token}, timeout=10)
    assert page.status_code == 401 and "/inbox/login" in page.text


def test_tokens_of_another_key_issuer_or_audience_are_refused(gw):
    other_key = ec.generate_private_key(ec.SECP256R1())
    for token in (_signed(gw, key=other_key), _signed(gw, iss="someone-else"), _signed(gw, aud="another-app"),
                  _signed(gw, exp=None)):
        response = requests.get(gw.public_url + "/api/inbox/stats", cookies={"nh_staff": token}, timeout=10)
        assert response.status_code in (401, 403), response.text
    assert requests.get(gw.public_url + "/api/inbox/stats", cookies={"nh_staff": _signed(gw)},
                        timeout=10).status_code == 200


def test_logout_revokes_the_token_and_clears_the_cookie(gw):
    token = staff_token(gw)
    cookies = {"nh_staff": token}
    assert requests.get(gw.public_url + "/api/inbox/stats", cookies=cookies, timeout=10).status_code == 200
    logout = requests.post(gw.public_url + "/api/staff/logout", json={}, cookies=cookies, timeout=10)
    assert logout.status_code == 200, logout.text
    contracts.RECORDED.add("/novahouse.chat.v1.StaffAuth/Logout")
    assert logout.headers["set-cookie"].startswith("nh_staff=;") and "Max-Age=0" in logout.headers["set-cookie"]
    # Envoy still finds the token valid (signed, not expired); chat's interceptor refuses it, on every replica.
    for _ in range(4):
        again = requests.get(gw.public_url + "/api/inbox/stats", cookies=cookies, timeout=10)
        assert again.status_code == 401 and "signed out" in again.json()["message"]
    stub = chat_pb2_grpc.InboxStub(gw.channel(admin=True))
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetStats(chat_pb2.GetStatsRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    claims = jwt.decode(token, options={"verify_signature": False})
    with sqlite3.connect(gw.stack.config.data_dir / "chat.db") as db:  # both replicas' database
        (until,) = db.execute("SELECT expires_at FROM staff_revoked_token WHERE token_id = ?",
                              (claims["jti"],)).fetchone()
    assert dt.datetime.fromisoformat(until).replace(tzinfo=dt.UTC).timestamp() == claims["exp"]  # refused till exp


def test_forged_staff_headers_never_reach_the_service(gw):
    """A signed-in agent's own x-staff-* headers are replaced by the token's claims: logging out with another
    token's id in x-staff-token-id revokes the caller's token, not the other one."""
    mine, theirs = staff_token(gw), staff_token(gw)
    their_id = jwt.decode(theirs, options={"verify_signature": False})["jti"]
    forged = {"x-staff-token-id": their_id, "x-staff-agent": "mallory", "x-staff-name": "Mallory"}
    logout = requests.post(gw.public_url + "/api/staff/logout", json={}, headers=forged,
                           cookies={"nh_staff": mine}, timeout=10)
    assert logout.status_code == 200
    assert requests.get(gw.public_url + "/api/inbox/stats", cookies={"nh_staff": theirs},
                        timeout=10).status_code == 200
    assert requests.get(gw.public_url + "/api/inbox/stats", cookies={"nh_staff": mine},
                        timeout=10).status_code == 401


def test_an_agent_reply_reaches_the_visitors_event_stream(gw):
    """The visitor's stream as server-sent events through Envoy (GET with x-session-secret), and the agent's
    message on it as it is sent, whichever replica each call reaches."""
    first = gw.rest("POST", "/api/chatbot/chat", json={"session_id": "", "message": "Dzień dobry"})
    assert first.status_code == 200, first.text
    session, secret = first.json()["session_id"], first.json()["session_secret"]
    contracts.RECORDED.add("/novahouse.chat.v1.Chat/WatchConversation")
    with requests.get(f"{gw.public_url}/api/chatbot/conversations/{session}/events",
                      headers={"x-session-secret": secret}, stream=True, timeout=30) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        stream.encoding = "utf-8"  # what server-sent events always are
        lines = stream.iter_lines(decode_unicode=True)
        events = (json.loads(line.removeprefix("data: ")) for line in lines if line)
        assert next(event for event in events if "heartbeat" in event)  # it stays live while nothing happens
        auth = {"authorization": f"Bearer {staff_token(gw)}"}
        base = f"{gw.public_url}/api/inbox/conversations/{session}"
        assert requests.post(base + "/take", json={}, headers=auth, timeout=10).status_code == 200
        reply = requests.post(base + "/reply", json={"text": "Tu Anna, w czym pomóc?"}, headers=auth, timeout=10)
        assert reply.status_code == 200, reply.text
        messages = (event["message"] for event in events if "message" in event)
        message = next(messages)
        assert message["text"] == "Tu Anna, w czym pomóc?" and message["role"] == "agent"
        assert message["author"] == "Zespół sprzedaży"  # the token's name claim, through Envoy's header, intact
    bad = requests.get(f"{gw.public_url}/api/chatbot/conversations/{session}/events",
                       headers={"x-session-secret": "wrong"}, stream=True, timeout=30)
    assert bad.status_code == 404
    bad.close()


def test_the_inbox_stream_outlives_the_listeners_request_and_idle_limits(gw):
    """The chat routes' 15 s timeout and the listener's 30 s request and stream idle limits do not apply to a stream:
    it is still open, with a heartbeat each second, 35 s after it started (it ends at STREAM_MAX_S, 300 s)."""
    contracts.RECORDED.add(INBOX + "WatchInbox")
    with requests.get(gw.public_url + "/api/inbox/events", cookies={"nh_staff": staff_token(gw)}, stream=True,
                      timeout=30) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        started = time.monotonic()
        heartbeats = 0
        for line in stream.iter_lines():
            if line.startswith(b"data: ") and b"heartbeat" in line:
                heartbeats += 1
            if time.monotonic() - started > 35:
                break
        else:
            pytest.fail(f"the stream ended after {time.monotonic() - started:.0f} s")
    assert heartbeats > 1  # it was alive, not merely unanswered


def test_the_inbox_is_same_origin_only_while_the_visitor_stream_allows_the_widgets_sites(gw):
    site = f"http://localhost:{gw.stack.config.public_port}"  # in ALLOWED_ORIGINS: a site embedding the widget
    for path, method in (("/api/inbox/conversations", "GET"), ("/api/staff/login", "POST"),
                         ("/api/staff/logout", "POST")):
        preflight = requests.options(gw.public_url + path, timeout=10, headers={
            "origin": site, "access-control-request-method": method, "access-control-request-headers": "content-type"})
        assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers, path
    answered = requests.get(gw.public_url + "/api/inbox/stats", cookies={"nh_staff": _signed(gw)},
                            headers={"origin": site}, timeout=10)
    assert answered.status_code == 200 and "access-control-allow-origin" not in answered.headers
    stream = requests.options(gw.public_url + "/api/chatbot/conversations/abc/events", timeout=10, headers={
        "origin": site, "access-control-request-method": "GET", "access-control-request-headers": "x-session-secret"})
    assert stream.status_code == 200 and stream.headers["access-control-allow-origin"] == site


def test_chat_addrs_spreads_calls_over_every_replica(gw):
    def per_host() -> dict[str, int]:
        clusters = requests.get(f"http://127.0.0.1:{gw.stack.config.envoy_admin_port}/clusters?format=json",
                                timeout=10).json()
        chat = next(c for c in clusters["cluster_statuses"] if c["name"] == "chat")
        return {f"{h['address']['socket_address']['port_value']}": next(
            int(s.get("value", 0)) for s in h["stats"] if s["name"] == "rq_total") for h in chat["host_statuses"]}

    before = per_host()
    assert set(before) == {str(port) for port in [gw.stack.config.ports["chat"], *gw.stack.config.replica_ports]}
    for _ in range(6):
        assert gw.rest("POST", "/api/chatbot/chat", json={"session_id": "", "message": "Cześć"}).status_code == 200
    wait_for(lambda: all(per_host()[port] > before[port] for port in before), timeout=10,
             what="calls on both chat replicas")


class _Jwks(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_args):
        pass


def test_a_remote_identity_providers_tokens_are_verified_with_the_same_filter(gw, tmp_path):
    """Production's OIDC set-up: only the issuer and the JWKS URI change; Envoy fetches the provider's keys."""
    provider_key = ec.generate_private_key(ec.SECP256R1())
    public = provider_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    _Jwks.body = json.dumps({"keys": [_public_jwk(public)]}).encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"STAFF_JWKS_URI": f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json",
           "STAFF_TOKEN_ISSUER": "https://login.example.pl/"}
    try:
        with extra_gateway(gw, tmp_path, env=env) as oidc:
            kid = _public_jwk(public)["kid"]
            now = dt.datetime.now(dt.UTC)
            claims = {"iss": "https://login.example.pl/", "aud": "novahouse-inbox", "sub": "anna", "name": "Anna",
                      "jti": uuid.uuid4().hex, "iat": now, "exp": now + dt.timedelta(minutes=5)}
            token = jwt.encode(claims, provider_key, algorithm="ES256", headers={"kid": kid})

            def status(tok: str) -> int:
                return requests.get(oidc.public_url + "/api/inbox/stats", cookies={"nh_staff": tok},
                                    timeout=10).status_code

            wait_for(lambda: status(token) == 200, timeout=15, what="the provider's keys fetched")
            assert status(_signed(gw)) == 401  # the local login's tokens mean nothing there
    finally:
        server.shutdown()
        server.server_close()


def test_rendered_config_strips_staff_headers_first_and_gives_streams_their_own_timeouts():
    config = yaml.safe_load(render({"STREAM_HEARTBEAT_S": "15", "STREAM_MAX_S": "300",
                                    "CHAT_ADDRS": "10.0.0.1:50051,10.0.0.2:50051"}))
    for listener in config["static_resources"]["listeners"]:
        if listener["name"] not in ("public", "admin"):
            continue
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        names = [f["name"] for f in hcm["http_filters"]]
        assert names[0] == "envoy.filters.http.header_mutation"
        assert names.index("envoy.filters.http.jwt_authn") > names.index("envoy.filters.http.grpc_json_transcoder")
        routes = {json.dumps(r["match"], sort_keys=True): r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
        for path in ("/novahouse.chat.v1.Chat/WatchConversation", "/novahouse.chat.v1.Inbox/WatchInbox"):
            route = routes[json.dumps({"path": path})]["route"]
            assert route["timeout"] == "0s" and route["idle_timeout"] == "45.000s"
            assert route["max_stream_duration"]["max_stream_duration"] == "360.000s"
    chat = next(c for c in config["static_resources"]["clusters"] if c["name"] == "chat")
    hosts = [e["endpoint"]["address"]["socket_address"]["address"]
             for group in chat["load_assignment"]["endpoints"] for e in group["lb_endpoints"]]
    assert hosts == ["10.0.0.1", "10.0.0.2"] and chat["lb_policy"] == "ROUND_ROBIN"


@pytest.mark.parametrize("env", [
    {},
    {"STAFF_JWKS_URI": "https://login.example.pl/.well-known/jwks.json", "STAFF_TOKEN_ISSUER": "https://login.example.pl/"},
], ids=["local-jwks", "remote-jwks"])
def test_the_staff_provider_renders_to_a_config_envoy_accepts(env, tmp_path):
    config = yaml.safe_load(render(env))
    jwt_filter = next(f for f in config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
                      ["typed_config"]["http_filters"] if f["name"] == "envoy.filters.http.jwt_authn")
    provider = jwt_filter["typed_config"]["providers"]["staff"]
    assert provider["from_cookies"] == ["nh_staff"]
    claimed = {h["header_name"] for h in provider["claim_to_headers"]}
    assert claimed == {"x-staff-agent", "x-staff-token-id", "x-staff-name", "x-staff-token-exp"}
    for listener in config["static_resources"]["listeners"][:2]:  # public, admin: a client's own are dropped
        strip = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]["typed_config"]
        assert {m["remove"] for m in strip["mutations"]["request_mutations"]} == claimed
    if env:
        assert provider["remote_jwks"]["http_uri"]["uri"] == env["STAFF_JWKS_URI"]
        cluster = next(c for c in config["static_resources"]["clusters"] if c["name"] == "staff_jwks")
        assert cluster["transport_socket"]["typed_config"]["sni"] == "login.example.pl"
    else:  # no key configured: a throwaway key nobody holds, so every token is refused
        assert len(json.loads(provider["local_jwks"]["inline_string"])["keys"]) == 1
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    checked = subprocess.run([envoy_binary(), "--mode", "validate", "--config-path", str(path)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
