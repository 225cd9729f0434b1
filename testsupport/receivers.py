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


Responder = Callable[[Received, int], tuple[int, dict]]


class Hold:
    """One request held open on command (see HttpReceiver.hold): `held` is set once it arrived and waits;
    `release()` lets the receiver answer it as usual, whether or not its sender is still there."""

    def __init__(self, matching: Callable[[Received], bool], after: int):
        self.matching = matching
        self.remaining = after  # matching requests let through before the one held
        self.held = threading.Event()
        self.released = threading.Event()
        self.request: Received | None = None

    def release(self) -> None:
        self.released.set()


class HttpReceiver(ServedInBackground):
    """Records every request; answers 200 (or what `respond` builds) unless told to fail.

    fail(500, times=5) answers five 500s, then goes back to normal; hang(30) delays every answer 30 s;
    rate_limit(2, times=1) answers one 429 with Retry-After: 2; hold(matching, after=n) holds the (n+1)-th matching
    request open until the test releases it (a sender killed while its call is in flight).
    """

    def __init__(self, respond: Responder | type | None = None):
        self.requests: list[Received] = []
        self.attempts = 0  # every request, including failed ones
        # A class (MondayBoard, SlackWorkspace) is instantiated: each receiver keeps its own items or messages.
        self.responder = respond() if isinstance(respond, type) else respond
        self._respond = self.responder
        self._behaviours: list[Behaviour] = []
        self._holds: list[Hold] = []
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
                received = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                receiver._wait_if_held(received)
                receiver._handle(self, received)

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

    def hold(self, matching: Callable[[Received], bool] = lambda _: True, after: int = 0) -> Hold:
        """Hold the (after+1)-th request for which matching() is true, once it has fully arrived, until released."""
        hold = Hold(matching, after)
        with self._lock:
            self._holds.append(hold)
        return hold

    def _wait_if_held(self, received: Received) -> None:
        with self._lock:
            hold = next((h for h in self._holds if h.matching(received)), None)
            if hold is None:
                return
            if hold.remaining > 0:
                hold.remaining -= 1
                return
            self._holds.remove(hold)
        hold.request = received
        hold.held.set()
        if not hold.released.wait(120):
            raise AssertionError("a held request was never released")

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


class MondayBoard:
    """Monday.com's GraphQL API over one board that keeps its items: create_item, change_multiple_column_values,
    delete_item and items_page_by_column_values answer as the real API does (application errors are HTTP 200 with an
    `errors` array). `HttpReceiver(respond=MondayBoard)`; the receiver's `responder` is the board."""

    def __init__(self) -> None:
        self.items: dict[str, dict] = {}  # id -> {"name", "group", "column_values"}
        self.deleted: list[str] = []      # ids of the items delete_item removed, in order
        self._next_id = 1000
        self._lock = threading.Lock()

    def __call__(self, received: Received, count: int) -> tuple[int, dict]:
        body = received.json()
        query: str = body.get("query", "")
        variables: dict = body.get("variables") or {}
        with self._lock:
            if "items_page_by_column_values" in query:
                return 200, self._find(variables)
            if "create_item" in query:
                self._next_id += 1
                item_id = str(self._next_id)
                columns = json.loads(variables.get("columns") or "{}")
                self.items[item_id] = {"name": variables["name"], "group": variables.get("group"),
                                       "column_values": columns}
                return 200, {"data": {"create_item": {"id": item_id}}, "account_id": 1}
            if "change_multiple_column_values" in query:
                item = self.items.get(str(variables["item"]))
                if item is None:
                    return 200, _monday_not_found(variables["item"])
                columns = json.loads(variables.get("columns") or "{}")
                if "name" in columns:
                    item["name"] = columns.pop("name")
                item["column_values"].update(columns)
                return 200, {"data": {"change_multiple_column_values": {"id": str(variables["item"])}}}
            if "delete_item" in query:
                if self.items.pop(str(variables["item"]), None) is None:
                    return 200, _monday_not_found(variables["item"])
                self.deleted.append(str(variables["item"]))
                return 200, {"data": {"delete_item": {"id": str(variables["item"])}}, "account_id": 1}
        return 200, {"errors": [{"message": "Unsupported query", "extensions": {"code": "GraphQLValidationError"}}]}

    def _find(self, variables: dict) -> dict:
        [wanted] = variables["columns"]
        column, values = wanted["column_id"], set(wanted["column_values"])
        found = [{"id": i} for i, item in self.items.items() if item["column_values"].get(column) in values]
        return {"data": {"items_page_by_column_values": {"cursor": None, "items": found[:1]}}, "account_id": 1}

    def add(self, name: str, columns: dict) -> str:
        """An item put on the board behind the notifier's back (e.g. by a create whose answer was lost)."""
        with self._lock:
            self._next_id += 1
            self.items[str(self._next_id)] = {"name": name, "group": None, "column_values": dict(columns)}
            return str(self._next_id)


def monday_create(received: Received) -> bool:
    """A create_item call (for HttpReceiver.hold)."""
    return "create_item" in received.json().get("query", "")


def _monday_not_found(item_id: object) -> dict:
    error = {"message": "Item not found in board", "extensions": {
        "code": "InvalidItemIdException", "status_code": 404, "error_data": {"item_id": item_id}}}
    return {"data": None, "errors": [error], "account_id": 1}


# The receiver every existing caller knows: `HttpReceiver(respond=monday_graphql)` gets a board of its own.
monday_graphql = MondayBoard

SLACK_BOT_TOKEN = "xoxb-test-bot-token"


class SlackWorkspace:
    """Slack's Web API (chat.postMessage, chat.delete, bearer token checked, errors as HTTP 200 with ok:false) and
    any other path as an incoming webhook. `HttpReceiver(respond=SlackWorkspace)`; `responder` is the workspace.
    `refuse("ratelimited", times=1)` answers the next Web API calls with that error."""

    def __init__(self, token: str = SLACK_BOT_TOKEN) -> None:
        self.token = token
        self.messages: dict[str, dict] = {}  # "channel/ts" -> the posted body
        self.deleted: list[str] = []         # "channel/ts" of every deleted message
        self._refusals: list[str] = []
        self._ts = 1_700_000_000
        self._lock = threading.Lock()

    def refuse(self, error: str, times: int = 1) -> None:
        with self._lock:
            self._refusals.extend([error] * times)

    def __call__(self, received: Received, count: int) -> tuple[int, dict]:
        method = received.path.rstrip("/").rsplit("/", 1)[-1]
        if method not in ("chat.postMessage", "chat.delete"):
            return 200, {"ok": True}  # an incoming webhook
        with self._lock:
            if received.headers.get("authorization") != f"Bearer {self.token}":
                return 200, {"ok": False, "error": "invalid_auth"}
            if self._refusals:
                return 200, {"ok": False, "error": self._refusals.pop(0)}
            body = received.json()
            channel = body.get("channel", "")
            if method == "chat.postMessage":
                self._ts += 1
                ts = f"{self._ts}.000100"
                self.messages[f"{channel}/{ts}"] = body
                return 200, {"ok": True, "channel": channel, "ts": ts, "message": {"text": body.get("text", "")}}
            reference = f"{channel}/{body.get('ts', '')}"
            if self.messages.pop(reference, None) is None:
                return 200, {"ok": False, "error": "message_not_found"}
            self.deleted.append(reference)
            return 200, {"ok": True, "channel": channel, "ts": body.get("ts")}
