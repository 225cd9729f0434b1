"""The whole platform, Envoy included, started for a test on free ports, and clients that go through Envoy."""
from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import requests

from deploy.local.database_roles import ServiceRoles
from deploy.local.processes import free_port
from deploy.local.stack import LocalStack, StackConfig
from services.chat.staff_auth import COOKIE as STAFF_COOKIE
from testsupport import backing, contracts
from testsupport.receivers import HttpReceiver, monday_graphql
from testsupport.smtp import SmtpReceiver


class _RecordingInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Notes each RPC that reached a service through Envoy (Envoy answers an unrouted call with UNIMPLEMENTED)."""

    def intercept_unary_unary(self, continuation, client_call_details, request):
        outcome = continuation(client_call_details, request)
        try:
            code = outcome.code()
        except Exception:  # noqa: BLE001 - a future that failed to start: nothing reached the service
            return outcome
        if code != grpc.StatusCode.UNIMPLEMENTED:
            contracts.RECORDED.add(client_call_details.method)
        return outcome


class Gateway:
    def __init__(self, stack: LocalStack):
        self.stack = stack
        cfg = stack.config
        self.public_url = f"http://127.0.0.1:{cfg.public_port}"
        self.admin_url = f"http://127.0.0.1:{cfg.admin_port}"
        self._channels: list[grpc.Channel] = []
        self.http = requests.Session()

    def rest(self, method: str, path: str, *, admin: bool = False, **kwargs) -> requests.Response:
        """A REST call through Envoy's public (or admin) listener; the RPC it maps to is recorded."""
        kwargs.setdefault("timeout", 30)
        response = self.http.request(method, (self.admin_url if admin else self.public_url) + path, **kwargs)
        rpc = contracts.rpc_for_rest(method, path)
        if rpc and not _unrouted(response):
            contracts.RECORDED.add(rpc)
        return response

    def channel(self, admin: bool = False) -> grpc.Channel:
        """A gRPC channel through Envoy; RPCs that reach a service are recorded."""
        port = self.stack.config.admin_port if admin else self.stack.config.public_port
        raw = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._channels.append(raw)
        return grpc.intercept_channel(raw, _RecordingInterceptor())

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self.http.close()


def _unrouted(response: requests.Response) -> bool:
    if response.status_code != 404:
        return False
    try:
        return response.json().get("error") == "not_found"
    except ValueError:
        return True


@contextlib.contextmanager
def running_stack(
    data_dir: Path,
    env: dict[str, str] | None = None,
    service_env: dict[str, dict[str, str]] | None = None,
    gateway: bool = True,
    chat_replicas: int = 1,
    replicas: dict[str, int] | None = None,
) -> Iterator[Gateway]:
    """Start chat (chat_replicas servers, taken in turn by Envoy), consent, notifier, the rate limiter (replicas
    servers each, default 1) and Envoy on free ports; stop them all afterwards. The inbox sign-in is the data dir's
    dev agent (staff_credentials)."""
    config = StackConfig.on_free_ports(Path(data_dir), env=dict(env or {}), service_env=dict(service_env or {}),
                                       gateway=gateway, chat_replicas=chat_replicas, replicas=dict(replicas or {}))
    stack = LocalStack(config).start()
    gw = Gateway(stack)
    try:
        yield gw
    finally:
        gw.close()
        stack.stop()


@contextlib.contextmanager
def extra_gateway(gw: Gateway, data_dir: Path, env: dict[str, str] | None = None,
                  ratelimit_port: int | None = None) -> Iterator[Gateway]:
    """Another Envoy (and, unless ratelimit_port names an existing one, its own rate-limit service) in front of
    the same services: for limiter outages, fail modes and several gateways sharing one budget."""
    base = gw.stack.config
    config = dataclasses.replace(
        base,
        data_dir=Path(data_dir),
        public_port=free_port(),
        admin_port=free_port(),
        envoy_admin_port=free_port(),
        base_id=free_port(),
        ports={**base.ports, "ratelimit": ratelimit_port or free_port()},
        # its own limiter is one server; a shared one keeps every server of the first stack's
        extra_ports={k: v for k, v in base.extra_ports.items() if k != "ratelimit" or ratelimit_port},
        env={**base.env, **(env or {})},
    )
    extra = LocalStack(config)
    try:
        if ratelimit_port is None:
            extra.start_ratelimit()
        extra.start_gateway()
        other = Gateway(extra)
        yield other
        other.close()
    finally:
        extra.stop()


def post_from(source_ip: str, port: int, path: str, body: dict, headers: dict[str, str] | None = None):
    """A REST POST whose connection comes from source_ip (any 127.0.0.0/8 address), as a different visitor."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source_ip, 0))
    try:
        conn.request("POST", path, body=json.dumps(body),
                     headers={"content-type": "application/json", **(headers or {})})
        response = conn.getresponse()
        payload = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, payload
    finally:
        conn.close()


@dataclasses.dataclass
class Platform:
    """The whole stack on PostgreSQL with local Slack, Monday.com and SMTP receivers."""

    gw: Gateway
    slack: HttpReceiver
    monday: HttpReceiver
    smtp: SmtpReceiver
    schemas: dict[str, str]  # each service's own schema, dropped afterwards
    roles: dict[str, ServiceRoles]  # each service's service and migration roles, dropped afterwards

    def chat(self, messages: list[str], consent: bool) -> str:
        """A visitor's conversation through the public REST route; with consent, both consents given at the end
        and the lead stored. Returns the session id."""
        session = ""
        for text in messages:
            response = self.gw.rest("POST", "/api/chatbot/chat", json={"session_id": session, "message": text})
            assert response.status_code == 200, response.text
            session = response.json()["session_id"]
        if consent:
            answer = {"session_id": session, "message": "", "processing_consent": True, "marketing_consent": True}
            response = self.gw.rest("POST", "/api/chatbot/chat", json=answer)
            assert response.status_code == 200 and response.json()["intent"] == "lead_stored", response.text
        return session


def sales_env(slack: HttpReceiver, monday: HttpReceiver) -> dict[str, str]:
    """The notifier's Slack webhook and Monday.com board at these local receivers."""
    return {"SLACK_WEBHOOK_URL": f"{slack.url}/hooks/test", "MONDAY_API_URL": f"{monday.url}/v2",
            "MONDAY_API_KEY": "test-key", "MONDAY_BOARD_ID": "4242"}


# Limits high enough that a test's own traffic is never refused (the limiter has its own tests).
UNLIMITED = {
    "CHAT_RATE_LIMIT": "100000 per minute",
    "API_RATE_LIMIT_MINUTE": "100000 per minute",
    "API_RATE_LIMIT_HOUR": "100000 per hour",
    "STAFF_LOGIN_RATE_LIMIT": "100000 per minute",
    "INBOX_RATE_LIMIT": "100000 per minute",
    "SHIELD_BURST": "100000",
    "SHIELD_PER_SECOND": "100000",
}


@contextlib.contextmanager
def postgres_platform(data_dir: Path, name: str, service_env: dict[str, dict[str, str]] | None = None,
                      chat_replicas: int = 1, replicas: dict[str, int] | None = None) -> Iterator[Platform]:
    """Chat, consent and the notifier each in a fresh PostgreSQL schema (named after `name`), connected as its own
    service role that owns nothing and migrated by its own migration role, behind Envoy, with Slack, Monday.com and
    SMTP at local receivers; the roles and what they own (the schemas) are dropped afterwards."""
    backing.postgres_connect().close()  # fail here, clearly, when PostgreSQL is not there
    with backing.service_roles(name) as roles, HttpReceiver() as slack, \
            HttpReceiver(respond=monday_graphql) as monday, SmtpReceiver() as smtp:
        env = {**sales_env(slack, monday), "SMTP_URL": f"smtp://127.0.0.1:{smtp.port}", **UNLIMITED}
        per_service = {**(service_env or {}),  # the rate-limit service's and Envoy's as given
                       **{svc: {**svc_roles.env(backing.TEST_DATABASE_URL), **(service_env or {}).get(svc, {})}
                          for svc, svc_roles in roles.items()}}
        with running_stack(data_dir, env=env, service_env=per_service, chat_replicas=chat_replicas,
                           replicas=replicas) as gw:
            yield Platform(gw, slack, monday, smtp, {svc: r.schema for svc, r in roles.items()}, roles)


def staff_credentials(gw: Gateway) -> tuple[str, str]:
    """The username and password of the stack's dev agent (deploy/local/staff_login.py)."""
    staff = gw.stack.staff
    assert staff is not None, "this stack's STAFF_* were set by the test, not made by the stack"
    return staff.username, staff.password


def staff_login(gw: Gateway, *, admin: bool = False) -> requests.Response:
    """StaffAuth.Login of the dev agent over REST, in a session of its own (gw.http keeps no staff cookie); the
    response's cookie and body token are what a browser and a gRPC client would use."""
    username, password = staff_credentials(gw)
    url = (gw.admin_url if admin else gw.public_url) + "/api/staff/login"
    with requests.Session() as session:
        response = session.post(url, json={"username": username, "password": password}, timeout=30)
    if response.status_code == 200:
        contracts.RECORDED.add("/novahouse.chat.v1.StaffAuth/Login")
    return response


def staff_token(gw: Gateway) -> str:
    """A fresh staff token of the dev agent, for `Authorization: Bearer` or gRPC `authorization` metadata."""
    response = staff_login(gw)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def staff_cookie(gw: Gateway) -> dict[str, object]:
    """The signed-in cookie for a Playwright browser context (context.add_cookies([staff_cookie(gw)])), as the
    login page would have set it."""
    return {"name": STAFF_COOKIE, "value": staff_token(gw), "url": gw.public_url, "httpOnly": True,
            "sameSite": "Strict"}
