"""Hostile input through the public listener gets the error contract, never a 5xx, a reset, a hang or a traceback.

Thousands of REST requests (bad percent-encodings, invalid UTF-8 in path, query and body, huge headers and URLs, bad
JSON, wrong types, nested junk, path tricks) and undecodable protobuf on every public gRPC method go to the real
Envoy in front of the services on PostgreSQL. The randomness is seeded (HOSTILE_SEED reruns a printed seed).
"""
from __future__ import annotations

import json
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import grpc
import pytest
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message_factory
from google.protobuf.message import DecodeError

from novahouse.chat.v1 import chat_pb2
from novahouse.consent.v1 import consent_pb2
from novahouse.health.v1 import health_pb2
from testsupport.stack import postgres_platform

REST_REQUESTS = 2400
GRPC_MESSAGES = 1200
THREADS = 12
TIMEOUT_S = 20  # an answer later than this counts as a hang

PATH_PARAMS = ("/api/unsubscribe/status/", "/api/chatbot/conversations/")
JSON_ROUTES = ("/api/chatbot/chat", "/api/unsubscribe", "/api/revoke-consent", "/api/unsubscribe/status",
               "/api/export")
QUERY_ROUTES = ("/api/health", "/api/confirm", "/api/unsubscribe/one-click", "/api/chatbot/conversations/abc")
# Invalid UTF-8 as a client can put it in a URL: a lone byte, a surrogate, overlong forms, truncated sequences,
# code points past U+10FFFF.
BAD_UTF8 = ("%ff", "%FE", "%ED%A0%80", "%ED%BF%BF", "%C0%AE", "%C0%80", "%E0%80%AF", "%F0%80%80%AF", "%C3",
            "%E2%82", "%F4%90%80%80", "%F8%88%80%80%80", "%80", "%BF%BF", "a%ffb", "jan%C0%AE@example.com")
BAD_ESCAPES = ("%", "%%", "%z1", "%4", "%G0", "%%32%65", "%u0041", "%2", "%0")
PATH_TRICKS = ("..", "%2e%2e", "%2E%2E%2F%2E%2E", "%2F", "a%2Fb", "%00", "a%00b", "%0d%0aX-Injected:%201", "%20",
               "%09", "+", "~", ";x=1", "%3B", "%23", "%3F", "%5C", "..%2F..%2Fadmin", "%252e%252e")


def _random_text(rng: random.Random, n: int) -> str:
    pools = ("abcxyz@.-_", "ąćęłńóśźż€😀漢", "\u0000\u0001\u001f\u007f\u2028\ufeff", "<>\"'&\\{}[]%#?/;")
    return "".join(rng.choice(rng.choice(pools)) for _ in range(n))


def _percent_junk(rng: random.Random) -> str:
    parts = [rng.choice(BAD_UTF8 + BAD_ESCAPES + PATH_TRICKS) for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.3:
        parts.append("".join(f"%{rng.randrange(256):02X}" for _ in range(rng.randint(1, 12))))
    return "".join(parts)


def _nested(rng: random.Random, depth: int) -> object:
    if depth == 0:
        return rng.choice([None, True, 1e308, -1, 2**70, "x", [], {}])
    if rng.random() < 0.5:
        return [_nested(rng, depth - 1)]
    return {rng.choice(["message", "session_id", "a", ""]): _nested(rng, depth - 1)}


@dataclass
class Request:
    kind: str
    raw: bytes
    exact: int | None = None  # the status this crafted request must get; None: any non-5xx


def _http(method: str, target: bytes, headers: dict[str, bytes] | None = None, body: bytes | None = None) -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"host: novahouse.test", b"connection: close"]
    for name, value in (headers or {}).items():
        lines.append(name.encode() + b": " + value)
    if body is not None:
        lines.append(b"content-length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def _json_post(route: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return _http("POST", route.encode(), {"content-type": content_type}, body)


def crafted_rest() -> Iterator[Request]:
    """The issue's own findings and each limit, with the status each must get."""
    for prefix in PATH_PARAMS:
        for bad in BAD_UTF8:
            yield Request("bad-utf8-path", _http("GET", (prefix + bad).encode()), 400)
    for bad in BAD_UTF8:
        yield Request("bad-utf8-query", _http("GET", b"/api/confirm?token=" + bad.encode()), 400)
        raw = unquote_to_bytes(bad)  # the same bytes, unescaped, in a JSON body
        yield Request("bad-utf8-json", _json_post("/api/chatbot/chat", b'{"message": "' + raw + b'"}'), 400)
        yield Request("bad-utf8-json", _json_post("/api/unsubscribe", b'{"email": "' + raw + b'"}'), 400)
    long_path = ("%C4%85" * 2001).encode()  # the 2,001 "ą": 12 KB of URL
    for prefix in PATH_PARAMS:
        yield Request("long-url", _http("GET", prefix.encode() + long_path), 431)
        yield Request("long-url", _http("GET", prefix.encode() + b"a" * 20000), 431)
    yield Request("long-query", _http("GET", b"/api/confirm?token=" + b"t" * 9000), 431)
    for prefix in PATH_PARAMS:  # just under the limit: the service's own answer, never its metadata limit's 429
        yield Request("long-url", _http("GET", prefix.encode() + ("%C4%85" * 1300).encode()), 400)
    yield Request("huge-header", _http("GET", b"/api/health", {"x-filler": b"a" * 9000}), 431)
    yield Request("huge-header", _http("GET", b"/api/health", {f"x-h{i}": b"v" * 90 for i in range(120)}), 431)
    yield Request("big-body", _json_post("/api/chatbot/chat", b'{"message": "' + b"a" * 70000 + b'"}'), 413)
    yield Request("big-body", _json_post("/api/unsubscribe", b"[" * 100000), 413)
    yield Request("bad-json", _json_post("/api/chatbot/chat", b'{"message": 5}'), 400)
    yield Request("bad-json", _json_post("/api/chatbot/chat", b'{"message": "\\ud800"}'), 400)
    yield Request("bad-json", _json_post("/api/chatbot/chat", b'{"message":'), 400)
    yield Request("bad-query", _http("GET", b"/api/health?unknown=1"), 400)


def random_rest(rng: random.Random, n: int) -> Iterator[Request]:
    for _ in range(n):
        roll = rng.random()
        if roll < 0.25:
            prefix = rng.choice(PATH_PARAMS)
            value = _percent_junk(rng) if rng.random() < 0.7 else _random_text(rng, rng.randint(0, 40))
            target = prefix.encode() + value.encode("utf-8", "surrogatepass")
            yield Request("path", _http(rng.choice(["GET", "GET", "POST", "DELETE"]), target))
        elif roll < 0.40:
            route = rng.choice(QUERY_ROUTES)
            name = rng.choice(["token", "session_id", "x", "token[]", "", "%ff", "a.b"])
            query = f"{name}={_percent_junk(rng)}"
            if rng.random() < 0.3:
                query += "&" + query + "&" + rng.choice(["=", "&&", "token", "%", "a=b=c"])
            yield Request("query", _http("GET", (route + "?" + query).encode()))
        elif roll < 0.70:
            route = rng.choice(JSON_ROUTES)
            field = rng.choice(["message", "session_id", "email", "reason", "processing_consent", "junk", ""])
            value = rng.choice([
                lambda: _random_text(rng, rng.randint(0, 300)),
                lambda: rng.randint(-2**70, 2**70),
                lambda: rng.random() * 10 ** rng.randint(-300, 300),
                lambda: _nested(rng, rng.randint(1, 60)),
                lambda: [_random_text(rng, 5)] * rng.randint(0, 50),
                lambda: None,
                lambda: rng.choice([True, False]),
            ])()
            body = json.dumps({field: value, **({"message": "x"} if rng.random() < 0.3 else {})}).encode()
            if rng.random() < 0.3:  # break it: cut, splice in raw bytes, lone surrogates, trailing junk
                cut = rng.randrange(len(body) + 1)
                body = body[:cut] + rng.choice([b"", b"\xff", b"\xed\xa0\x80", b'\\ud800"', b"}}", b"\x00",
                                                bytes(rng.randrange(256) for _ in range(8))]) + body[cut:]
            content_type = rng.choice([b"application/json"] * 4 + [b"text/plain", b"application/x-www-form-urlencoded",
                                                                   b"application/grpc", b"\xff/\xfe"])
            yield Request("json", _json_post(route, body, content_type))
        elif roll < 0.82:
            headers = {}
            for i in range(rng.randint(1, 5)):
                name = rng.choice(["x-session-secret", "x-request-id", "x-forwarded-for", "origin", "cookie",
                                   "content-type", f"x-junk-{i}", "x_under_score", "te", "grpc-timeout"])
                headers[name] = rng.choice([
                    b"a" * rng.choice([10, 4000, 8000, 9000, 30000]),
                    bytes(rng.randrange(0x20, 0x7f) for _ in range(40)),
                    "ąę".encode() * rng.randint(1, 500),
                    b"\xff\xfe\x80",
                    b"1.2.3.4, " * rng.randint(1, 400),
                ])
            target = rng.choice([b"/api/health", b"/api/chatbot/conversations/abc", b"/api/confirm?token=x"])
            yield Request("headers", _http("GET", target, headers))
        else:
            method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO", "get"])
            target = rng.choice([
                b"/api/../api/health", b"//api/health", b"/api/health/", b"/API/HEALTH", b"/api/%2e%2e/admin",
                b"/api/health/deep", b"/api/./health", b"/api/admin/cache/purge", b"/api/dlq/stats",
                b"/novahouse.chat.v1.ChatAdmin/PurgeCache", b"/novahouse.health.v1.PlatformHealth/Deep",
                b"/api/unsubscribe/status/a/b", b"/api/chatbot/conversations/", b"/api/chatbot/chat?x=1",
                b"*", b"http://evil.test/api/health", b"/\xff", b"/api/\x01", b"/api/health#frag",
                b"/widget/v1/widget.js/../../api/health", b"/api/unsubscribe/status/%2F%2E%2E%2Fadmin",
            ])
            bodies: list[bytes | None] = [None, b"", b"{}", b"\xff\x00"]
            yield Request("method-path", _http(method, target, body=rng.choice(bodies)))


@dataclass
class Answer:
    status: int | None  # None: no answer (reset or closed before a status line)
    body: bytes
    error: str = ""


def _complete(received: bytes) -> bool:
    """Whether a whole answer is in: its declared length, or the last chunk (Envoy keeps the connection open a
    moment after an answer, until the client closes it)."""
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.lower().split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name == b"content-length":
            return len(body) >= int(value)
        if name == b"transfer-encoding" and b"chunked" in value:
            return body.endswith(b"0\r\n\r\n")
    return False


def send(port: int, raw: bytes) -> Answer:
    """One request on its own connection; the answer is read until complete or until Envoy closes."""
    received = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
            sock.sendall(raw)
            while not _complete(received):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
    except TimeoutError:
        return Answer(None, received, "hang")
    except OSError as exc:  # a reset while sending or reading, unless a whole answer came first
        if not received.startswith(b"HTTP/1.1 "):
            return Answer(None, received, f"reset: {exc!r}")
    head, _, body = received.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        return Answer(None, received, "no status line")
    return Answer(int(head.split(b" ", 2)[1]), body)


def _json_error_shape(body: bytes) -> bool:
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return parsed.get("code") == 3 and isinstance(parsed.get("message"), str) and parsed.get("details") == []


PUBLIC_SERVICES = (
    chat_pb2.DESCRIPTOR.services_by_name["Chat"],
    consent_pb2.DESCRIPTOR.services_by_name["Consent"],
    health_pb2.DESCRIPTOR.services_by_name["PlatformHealth"],
)


def _public_methods() -> list[tuple[str, pb_descriptor.Descriptor]]:
    methods = []
    for service in PUBLIC_SERVICES:
        for method in service.methods:
            if (service.name, method.name) != ("PlatformHealth", "Deep"):  # admin listener only
                methods.append((f"/{service.full_name}/{method.name}", method.input_type))
    return methods


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes([*out, n])


def _undecodable(rng: random.Random, message_type: pb_descriptor.Descriptor) -> bytes:
    """Bytes that do not decode as message_type: invalid UTF-8 in one of its string fields, a wire type that does
    not exist, a truncated varint or length, a tag 0, or random bytes that happen not to decode."""
    cls = message_factory.GetMessageClass(message_type)
    strings = [f.number for f in message_type.fields if f.type == pb_descriptor.FieldDescriptor.TYPE_STRING]
    while True:
        roll = rng.random()
        if roll < 0.35 and strings:
            bad = rng.choice([b"\xff", b"\xed\xa0\x80", b"\xc0\xae", b"\xf8\x88\x80\x80\x80", b"ok\xe2\x82"])
            value = _random_text(rng, rng.randint(0, 8)).encode() + bad
            data = _varint(rng.choice(strings) << 3 | 2) + _varint(len(value)) + value
        elif roll < 0.5:
            data = bytes([rng.randint(1, 15) << 3 | rng.choice([6, 7])]) + rng.randbytes(rng.randint(0, 6))
        elif roll < 0.6:
            data = bytes([1 << 3]) + b"\xff" * rng.randint(1, 12)  # varint without its last byte
        elif roll < 0.7:
            data = bytes([1 << 3 | 2]) + b"\xff\xff\xff\x0f" + rng.randbytes(rng.randint(0, 20))  # length past end
        elif roll < 0.75:
            data = b"\x00" + rng.randbytes(rng.randint(0, 4))  # field number 0
        else:
            data = rng.randbytes(rng.randint(1, 64))
        try:
            cls.FromString(data)
        except DecodeError:
            return data


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with postgres_platform(tmp_path_factory.mktemp("hostile"), "hostile") as running:
        yield running


@pytest.fixture(scope="module")
def seed() -> int:
    value = int(os.environ.get("HOSTILE_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nhostile input seed: {value} (HOSTILE_SEED={value} reruns it)")
    return value


def test_hostile_rest_requests_get_the_error_contract(platform, seed):
    port = platform.gw.stack.config.public_port
    rng = random.Random(seed)
    requests = [*crafted_rest(), *random_rest(rng, REST_REQUESTS)]
    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(lambda r: send(port, r.raw), requests))
    elapsed = time.monotonic() - started
    statuses = Counter(a.status for a in answers)
    print(f"{len(requests)} hostile REST requests in {elapsed:.1f} s: {dict(sorted(statuses.items(), key=str))}")
    failures = [(r.kind, r.raw[:120], a.status, a.error, a.body[:200]) for r, a in zip(requests, answers, strict=True)
                if a.status is None or a.status >= 500 or (r.exact is not None and a.status != r.exact)]
    assert not failures, failures[:20]
    # Every refusal of bad input, by a service or by Envoy itself, has the one JSON body of validation errors.
    shapeless = [(r.kind, r.raw[:120], a.body[:200]) for r, a in zip(requests, answers, strict=True)
                 if a.status in (400, 413, 431) and not _json_error_shape(a.body)]
    assert not shapeless, shapeless[:20]
    assert len(requests) >= 2000


def test_undecodable_grpc_messages_are_invalid_argument(platform, seed):
    rng = random.Random(seed + 1)
    methods = _public_methods()
    calls = [(path, _undecodable(rng, message_type))
             for path, message_type in (rng.choice(methods) for _ in range(GRPC_MESSAGES))]
    with grpc.insecure_channel(f"127.0.0.1:{platform.gw.stack.config.public_port}") as channel:
        # No serializers: the bytes go out as they are.
        stubs: dict[str, grpc.UnaryUnaryMultiCallable[bytes, bytes]] = {
            path: channel.unary_unary(path) for path, _ in methods}

        def call(path: str, data: bytes) -> tuple[grpc.StatusCode, str]:
            try:
                stubs[path](data, timeout=TIMEOUT_S)
            except grpc.RpcError as err:
                return err.code(), err.details() or ""
            return grpc.StatusCode.OK, ""

        started = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            outcomes = list(pool.map(lambda c: call(*c), calls))
    print(f"{len(calls)} undecodable gRPC messages on {len(methods)} methods in {time.monotonic() - started:.1f} s: "
          f"{dict(Counter(code.name for code, _ in outcomes))}")
    wrong = [(path, data[:40], code.name, details) for (path, data), (code, details) in
             zip(calls, outcomes, strict=True)
             if code != grpc.StatusCode.INVALID_ARGUMENT or not details.startswith("malformed request")]
    assert not wrong, wrong[:20]
    assert len(calls) >= 1000


def test_the_services_logged_no_traceback_and_few_lines_about_junk(platform):
    """Runs after the two floods above (pytest keeps a module's order)."""
    logs = {path.stem: path.read_text(errors="replace") for path in platform.gw.stack.log_dir.glob("*.log")
            if path.stem in ("chat", "consent", "notifier")}
    assert set(logs) == {"chat", "consent", "notifier"}
    for service, text in logs.items():
        assert "Traceback" not in text and '"exc":' not in text, service
        assert "Exception deserializing" not in text, service
        undecodable = [line for line in text.splitlines() if '"undecodable request"' in line]
        # One line per UNDECODABLE_LOG_INTERVAL_S at most, each counting those it left out.
        assert len(undecodable) <= 12, (service, len(undecodable))
    assert '"undecodable request"' in logs["chat"] and '"undecodable request"' in logs["consent"]
