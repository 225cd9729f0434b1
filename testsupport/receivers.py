"""Real HTTP servers on 127.0.0.1 that stand in for Slack and Monday.com, and fail on command."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from testsupport.serving import ServedInBackground


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Behaviour:
    status: int = 200
    delay_s: float = 0.0
    retry_after: str | None = None
    times: int | None = None  # how many requests get this behaviour; None: until changed


class HttpReceiver(ServedInBackground):
    """Records every request; answers 200 (or what `respond` builds) unless told to fail.

    fail(500, times=5) answers five 500s, then goes back to normal; hang(30) delays every answer 30 s;
    rate_limit(2, times=1) answers one 429 with Retry-After: 2.
    """

    def __init__(self, respond: Callable[[Received, int], tuple[int, dict]] | None = None):
        self.requests: list[Received] = []
        self.attempts = 0  # every request, including failed ones
        self._respond = respond
        self._behaviours: list[Behaviour] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: avoid 40 ms delayed-ACK stalls

            def log_message(self, *_args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    self.close_connection = True  # the sender died mid-request: a real server drops it too
                    return
                receiver._handle(self, Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._serve(server, "http")

    def fail(self, status: int = 500, times: int | None = None, retry_after: str | None = None) -> None:
        with self._lock:
            self._behaviours.append(Behaviour(status=status, times=times, retry_after=retry_after))

    def hang(self, seconds: float, times: int | None = None) -> None:
        with self._lock:
            self._behaviours.append(Behaviour(delay_s=seconds, times=times))

    def rate_limit(self, retry_after_s: int, times: int = 1) -> None:
        self.fail(429, times=times, retry_after=str(retry_after_s))

    def recover(self) -> None:
        with self._lock:
            self._behaviours.clear()

    def _next_behaviour(self) -> Behaviour:
        with self._lock:
            self.attempts += 1
            while self._behaviours:
                current = self._behaviours[0]
                if current.times is None:
                    return current
                if current.times > 0:
                    current.times -= 1
                    if current.times == 0:
                        self._behaviours.pop(0)
                    return current
                self._behaviours.pop(0)
            return Behaviour()

    def _handle(self, handler: BaseHTTPRequestHandler, received: Received) -> None:
        behaviour = self._next_behaviour()
        if behaviour.delay_s:
            time.sleep(behaviour.delay_s)
        status, payload = behaviour.status, {"ok": behaviour.status < 400}
        if status < 400:
            with self._lock:
                self.requests.append(received)
                count = len(self.requests)
            if self._respond:
                status, payload = self._respond(received, count)
        body = json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            if behaviour.retry_after:
                handler.send_header("Retry-After", behaviour.retry_after)
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass  # the client gave up (timeout); that is the point of hang()


def monday_graphql(received: Received, count: int) -> tuple[int, dict]:
    """Answer a Monday.com create_item mutation the way the real API does, with a new item id."""
    return 200, {"data": {"create_item": {"id": str(1000 + count)}}, "account_id": 1}
