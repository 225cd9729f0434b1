"""Envoy's access log: one JSON line per request on both listeners, and nothing in it that names a person.

A status request with the email in its path, a REST call with the email in the query, an unrouted path holding it,
a chat message with a phone and a name in its body, a spoofed X-Forwarded-For and an admin call all go through the
real Envoy; each leaves a line with method, the gRPC method it reached, cluster, status, duration, request id and
bytes, and no line holds the email, the phone, the name or any IP address.
"""
from __future__ import annotations

import json
import re
import uuid

import pytest
import requests
import yaml

from gateway.envoy import ACCESS_LOG_FORMAT, render
from testsupport.stack import running_stack
from testsupport.waiting import wait_for

IPV4 = re.compile(r"\b\d{1,3}(\.\d{1,3}){3}\b")


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("access-log")) as gateway:
        yield gateway


def access_lines(gw) -> list[dict]:
    text = (gw.stack.log_dir / "envoy.log").read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"') and '"listener"' in line]


def line_for(gw, request_id: str) -> dict:
    """The access-log line of one request (Envoy flushes its log about once a second)."""
    return wait_for(lambda: next((line for line in access_lines(gw) if line["request_id"] == request_id), None),
                    30, f"the access-log line of {request_id}")


def test_both_listeners_log_a_format_without_path_header_value_or_address():
    """Checked on the rendered config, so a field added later cannot quietly log a URL or an address."""
    allowed = {"%START_TIME%", "%REQ(:METHOD)%", "%UPSTREAM_CLUSTER%", "%RESPONSE_CODE%", "%GRPC_STATUS%",
               "%RESPONSE_FLAGS%", "%DURATION%", "%REQ(X-REQUEST-ID)%", "%BYTES_RECEIVED%", "%BYTES_SENT%"}
    config = yaml.safe_load(render({}))
    logged = {}
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                for log in network_filter["typed_config"].get("access_log", []):
                    if log["name"] == "envoy.access_loggers.stats":  # counters by route and code, no line written
                        continue
                    logged[listener["name"]] = log["typed_config"]["log_format"]["json_format"]
    assert set(logged) == {"public", "admin"}
    for listener, fields in logged.items():
        assert fields["listener"] == listener
        for name, command in fields.items():
            if name not in ("listener", "rpc"):
                assert command in allowed, (name, command)
        assert fields["rpc"] == ACCESS_LOG_FORMAT["rpc"]
    assert ACCESS_LOG_FORMAT["rpc"].startswith("%CEL(request.path.matches('^/novahouse")


def test_requests_are_logged_without_the_email_phone_name_or_address(gw):
    email = f"access.{uuid.uuid4().hex[:10]}@example.org"
    phone, name = "601 702 803", f"Wieslawa Zdziebko{uuid.uuid4().hex[:6]}"
    spoofed = {"x-forwarded-for": "203.0.113.77"}
    status = gw.rest("GET", f"/api/unsubscribe/status/{email}", headers=spoofed)
    query = requests.get(f"{gw.public_url}/api/confirm?token={email}", timeout=10)
    unrouted = requests.get(f"{gw.public_url}/api/people/{email}?phone={phone}", timeout=10)
    chat = gw.rest("POST", "/api/chatbot/chat", json={"message": f"My name is {name}, phone {phone}"})
    admin = gw.rest("POST", "/api/admin/consent/export", admin=True, json={"email": email})
    assert unrouted.status_code == 404 and chat.status_code == 200 and admin.status_code == 200, admin.text

    lines = {what: line_for(gw, response.headers["x-request-id"])
             for what, response in [("status", status), ("query", query), ("unrouted", unrouted), ("chat", chat)]}
    # the admin listener does not hand its request id back: its line is found by the method
    lines["admin"] = wait_for(lambda: next((line for line in access_lines(gw) if line["listener"] == "admin"
                                            and line["rpc"].endswith("/ExportPerson")), None), 30, "the admin line")
    assert lines["status"]["rpc"] == "/novahouse.consent.v1.Consent/GetStatus"
    assert lines["status"]["listener"] == "public" and lines["status"]["cluster"] == "consent"
    assert lines["chat"]["rpc"] == "/novahouse.chat.v1.Chat/SendMessage" and lines["chat"]["status"] == 200
    assert int(lines["chat"]["bytes_received"]) > 0 and int(lines["chat"]["bytes_sent"]) > 0
    assert lines["unrouted"]["rpc"] == "-" and lines["unrouted"]["status"] == 404
    assert lines["admin"]["cluster"] == "consent" and lines["admin"]["request_id"]
    assert all(line["method"] and line["duration_ms"] is not None for line in lines.values())

    text = "\n".join(json.dumps(line) for line in access_lines(gw))
    for secret in (email, name, phone, phone.replace(" ", ""), "203.0.113.77"):
        assert secret not in text
    assert not IPV4.search(text), IPV4.search(text)
