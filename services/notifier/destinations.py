"""Sending one message to Slack, Monday.com or an SMTP server, and saying precisely how an attempt failed.

Every failure is a DeliveryError that tells the dispatcher whether retrying can help (a 4xx other than 408/429 cannot)
and whether it is the destination's fault (5xx, connection errors, timeouts), which is what the breaker counts.
"""
from __future__ import annotations

import json
import smtplib
import threading
import time
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import requests

from services.notifier.settings import Settings

# A message as the outbox stores it: the JSON object of one Slack alert, Monday.com item or email. Its fields were
# checked by deliveries.validate before it was stored; each sender reads the ones its destination needs.
Payload = dict[str, Any]  # Any: decoded JSON, whose value types depend on the destination


class DeliveryError(Exception):
    def __init__(
        self,
        reason: str,
        *,
        permanent: bool = False,
        counts_for_breaker: bool = False,
        retry_after_s: float | None = None,
    ):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.counts_for_breaker = counts_for_breaker
        self.retry_after_s = retry_after_s


class Pacer:
    """Spaces calls to one destination at least `min_interval_s` apart, and holds them during a Retry-After pause."""

    def __init__(self, min_interval_s: float = 0.0):
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._next_at = 0.0

    def wait_turn(self) -> None:
        with self._lock:
            start = max(time.monotonic(), self._next_at)
            self._next_at = start + self.min_interval_s
        delay = start - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._next_at = max(self._next_at, time.monotonic() + seconds)


def _retry_after(response: requests.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


def _check_http(response: requests.Response, what: str) -> None:
    status = response.status_code
    if status < 300:
        return
    detail = f"{what} answered HTTP {status}: {response.text[:200]}"
    if status >= 500:
        raise DeliveryError(detail, counts_for_breaker=True)
    if status in (408, 429):
        raise DeliveryError(detail, retry_after_s=_retry_after(response))
    raise DeliveryError(detail, permanent=True)


def _post(
    session: requests.Session, url: str, what: str, timeout: float, body: Payload,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    try:
        response = session.post(url, timeout=timeout, json=body, headers=headers)
    except requests.Timeout:
        raise DeliveryError(f"{what} timed out after {timeout:g}s", counts_for_breaker=True) from None
    except requests.RequestException as exc:
        raise DeliveryError(f"{what} unreachable: {type(exc).__name__}", counts_for_breaker=True) from None
    _check_http(response, what)
    return response


def slack_message(alert: Payload) -> Payload:
    """Incoming-webhook JSON: a header, the text, and the fields ten to a section (Slack's limit)."""
    title: str = alert.get("title", "")
    text: str = alert.get("text", "")
    fields: dict[str, str] = alert.get("fields", {})
    blocks: list[Payload] = []
    if title:
        blocks.append({"type": "header", "text": {"type": "plain_text", "text": title[:150]}})
    if text:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}})
    items = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]} for k, v in fields.items()]
    for start in range(0, len(items), 10):
        blocks.append({"type": "section", "fields": items[start:start + 10]})
    fallback = f"{title}: {text}" if title and text else title or text
    return {"text": fallback[:3000], "blocks": blocks}


# Slack Web API errors (HTTP 200, ok:false) that a later attempt can get past; every other one is permanent.
_SLACK_RETRYABLE = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
_SLACK_GONE = {"message_not_found"}  # chat.delete of a message that is no longer there: the delete is done


def slack_reference(channel: str, ts: str) -> str:
    """The external id of a message posted by the bot: what chat.delete needs to remove it."""
    return f"{channel}/{ts}"


class SlackSender:
    """An alert through the bot (chat.postMessage: its reference is kept, so it can be deleted) when SLACK_BOT_TOKEN and
    SLACK_CHANNEL are set, else through the incoming webhook (no reference); a delete always through the bot."""

    def __init__(self, settings: Settings):
        self.webhook_url = settings.slack_webhook_url
        self.bot_token = settings.slack_bot_token
        self.channel = settings.slack_channel if settings.slack_bot else ""
        self.api_url = settings.slack_api_url
        self.timeout = settings.http_timeout_s
        self.max_retry_after_s = settings.max_retry_after_s
        self.pacer = Pacer(settings.slack_min_interval_s)
        self._local = threading.local()

    def send(self, payload: Payload) -> str:
        if payload.get("operation") == "delete":
            return self._delete(payload["message"])
        if self.channel:
            answer = self._web_api("chat.postMessage", {"channel": self.channel, **slack_message(payload)})
            return slack_reference(str(answer.get("channel") or self.channel), str(answer.get("ts") or ""))
        if not self.webhook_url:
            raise DeliveryError("SLACK_WEBHOOK_URL (or SLACK_BOT_TOKEN and SLACK_CHANNEL) is not set; "
                                "the alert waits in the queue")
        self.pacer.wait_turn()
        _post(_session(self._local), self.webhook_url, "Slack", self.timeout, slack_message(payload))
        return ""

    def _delete(self, reference: str) -> str:
        """chat.delete of a message the bot posted; one that is already gone counts as deleted."""
        channel, _, ts = reference.partition("/")
        try:
            self._web_api("chat.delete", {"channel": channel, "ts": ts})
        except SlackRefused as exc:
            if exc.error not in _SLACK_GONE:
                raise
        return reference

    def _web_api(self, method: str, body: Payload) -> Payload:
        if not self.bot_token:
            raise DeliveryError(f"SLACK_BOT_TOKEN is not set; the Slack {method} waits in the queue")
        headers = {"Authorization": f"Bearer {self.bot_token}", "Content-Type": "application/json; charset=utf-8"}
        self.pacer.wait_turn()
        try:
            response = _post(_session(self._local), f"{self.api_url}/{method}", "Slack", self.timeout, body, headers)
        except DeliveryError as exc:
            if exc.retry_after_s is not None:
                self.pacer.pause(min(exc.retry_after_s, self.max_retry_after_s))
            raise
        try:
            answer: Payload = response.json()
        except ValueError:
            raise DeliveryError(f"Slack {method} answered something that is not JSON", permanent=True) from None
        if not answer.get("ok"):
            error = str(answer.get("error") or "unknown_error")[:100]
            raise SlackRefused(method, error)
        return answer


class SlackRefused(DeliveryError):
    """Slack's Web API answered HTTP 200 with ok:false; its error code says whether a retry can help."""

    def __init__(self, method: str, error: str):
        super().__init__(f"Slack {method} refused: {error}", permanent=error not in _SLACK_RETRYABLE)
        self.error = error


MONDAY_CREATE_ITEM = (
    "mutation ($board: ID!, $group: String, $name: String!, $columns: JSON) "
    "{ create_item (board_id: $board, group_id: $group, item_name: $name, column_values: $columns) { id } }"
)
MONDAY_UPDATE_ITEM = (
    "mutation ($board: ID!, $item: ID!, $columns: JSON!) "
    "{ change_multiple_column_values (board_id: $board, item_id: $item, column_values: $columns) { id } }"
)
MONDAY_DELETE_ITEM = "mutation ($item: ID!) { delete_item (item_id: $item) { id } }"
MONDAY_FIND_ITEM = (
    "query ($board: ID!, $columns: [ItemsPageByColumnValuesQuery!]) "
    "{ items_page_by_column_values (board_id: $board, columns: $columns, limit: 1) { items { id } } }"
)
_MONDAY_RETRYABLE = ("complexity", "rate limit", "ratelimit", "internal server error", "maxconcurrency")
# How Monday.com says an item does not exist (deleted already, or never was): a delete of it is done.
_MONDAY_GONE = ("invaliditemidexception", "resourcenotfoundexception", "item not found")
CREATE, UPDATE, DELETE = "create", "update", "delete"


def monday_column_values(columns: dict[str, str]) -> dict[str, str | Payload]:
    """Column values arrive as strings; JSON objects (status labels, dates, emails) are passed on as objects."""
    values: dict[str, str | Payload] = {}
    for column, raw in columns.items():
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw
        values[column] = parsed if isinstance(parsed, dict) else raw
    return values


class MondayRefused(DeliveryError):
    """Monday.com answered with GraphQL errors (HTTP 200)."""

    def __init__(self, errors: list[Payload]):
        text = json.dumps(errors, ensure_ascii=False)[:300]
        lowered = text.lower()
        super().__init__(f"Monday.com refused: {text}", permanent=not any(w in lowered for w in _MONDAY_RETRYABLE))
        self.gone = any(word in lowered for word in _MONDAY_GONE)


class MondaySender:
    """One board (MONDAY_BOARD_ID): create (adopting the item that already holds its lookup key), update and delete
    items, one call at a time (the board's API limits are per account and board). Returns the item id."""

    def __init__(self, settings: Settings):
        self.url = settings.monday_api_url
        self.key = settings.monday_api_key
        self.board_id = settings.monday_board_id
        self.lookup_column = settings.monday_lookup_column
        self.timeout = settings.http_timeout_s
        self.max_retry_after_s = settings.max_retry_after_s
        self.pacer = Pacer()
        self._one_call = threading.Lock()
        self._session = requests.Session()

    def send(self, item: Payload) -> str:
        if not (self.key and self.board_id):
            raise DeliveryError("MONDAY_API_KEY and MONDAY_BOARD_ID must be set; the item waits in the queue")
        operation = item.get("operation") or CREATE
        with self._one_call:
            if operation == DELETE:
                return self._delete(item)
            if operation == UPDATE:
                return self._update(item)
            return self._create(item)

    def _create(self, item: Payload) -> str:
        """Searches the board for the item holding the lookup key (the lead's id, else the delivery's idempotency
        key) first: an earlier attempt may have created it and died (kill -9, a lost answer) before recording its
        id. Found, it is updated to this create's name and columns instead of a second item being made."""
        columns = dict(item.get("column_values", {}))
        lookup_key: str = item.get("lookup_key", "")
        if lookup_key:
            existing = self.find(lookup_key)
            if existing:
                values = {**monday_column_values(columns), "name": item["item_name"]}
                self._call(MONDAY_UPDATE_ITEM, {"board": self.board_id, "item": existing,
                                                "columns": json.dumps(values, ensure_ascii=False)})
                return existing
            columns[self.lookup_column] = lookup_key
        variables = {
            "board": self.board_id,
            "group": item.get("group_id") or None,
            "name": item["item_name"],
            "columns": json.dumps(monday_column_values(columns), ensure_ascii=False),
        }
        created = self._call(MONDAY_CREATE_ITEM, variables).get("create_item") or {}
        if not created.get("id"):
            # The item may exist; a retry could make a second one, so this needs a person.
            raise DeliveryError("Monday.com answered without an item id", permanent=True)
        return str(created["id"])

    def find(self, lookup_key: str) -> str:
        """The id of the board's item whose lookup column holds `lookup_key`, or ''."""
        variables = {"board": self.board_id,
                     "columns": [{"column_id": self.lookup_column, "column_values": [lookup_key]}]}
        page = self._call(MONDAY_FIND_ITEM, variables).get("items_page_by_column_values") or {}
        items = page.get("items") or []
        return str(items[0]["id"]) if items else ""

    def _update(self, item: Payload) -> str:
        """By id, or the item holding the lookup key; one that is not on the board yet (its create is still queued)
        is retried later."""
        item_id: str = item.get("item_id") or self.find(item.get("lookup_key", ""))
        if not item_id:
            raise DeliveryError("Monday.com has no item with this lookup key yet; the update waits for its create")
        columns = monday_column_values(item.get("column_values", {}))
        if item.get("item_name"):
            columns["name"] = item["item_name"]
        variables = {"board": self.board_id, "item": item_id, "columns": json.dumps(columns, ensure_ascii=False)}
        self._call(MONDAY_UPDATE_ITEM, variables)
        return str(item_id)

    def _delete(self, item: Payload) -> str:
        """Delete by id, or (an erasure's delete of a create that may have landed unrecorded) the item holding the
        lookup key; an item that is not there is deleted already."""
        lookup_key: str = item.get("lookup_key", "")
        item_id: str = item.get("item_id") or (self.find(lookup_key) if lookup_key else "")
        if not item_id:
            return ""
        try:
            self._call(MONDAY_DELETE_ITEM, {"item": item_id})
        except MondayRefused as exc:
            if not exc.gone:
                raise
        return item_id

    def _call(self, query: str, variables: Payload) -> Payload:
        """One GraphQL request; its `data`, or a DeliveryError saying whether a retry can help."""
        headers = {"Authorization": self.key, "Content-Type": "application/json", "API-Version": "2024-10"}
        self.pacer.wait_turn()
        try:
            response = _post(self._session, self.url, "Monday.com", self.timeout,
                             {"query": query, "variables": variables}, headers)
        except DeliveryError as exc:
            if exc.retry_after_s is not None:
                self.pacer.pause(min(exc.retry_after_s, self.max_retry_after_s))
            raise
        try:
            body: Payload = response.json()
        except ValueError:
            raise DeliveryError("Monday.com answered something that is not JSON", permanent=True) from None
        errors = body.get("errors") or ([body] if body.get("error_code") or body.get("error_message") else [])
        if errors:
            raise MondayRefused(errors)
        data: Payload = body.get("data") or {}
        return data


class EmailSender:
    """SMTP_URL: smtp://[user:password@]host[:port][?starttls=true] or smtps://... (implicit TLS)."""

    def __init__(self, settings: Settings):
        self.url = settings.smtp_url
        self.sender = settings.smtp_from
        self.timeout = settings.http_timeout_s

    def send(self, email: Payload) -> str:
        if not self.url:
            raise DeliveryError("SMTP_URL is not set; the email waits in the queue")
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = email["to"]
        message["Subject"] = email["subject"]
        for name, value in email.get("headers", {}).items():  # checked by deliveries.validate: single lines
            message[name] = value
        message.set_content(email.get("body", ""))
        try:
            with self._connect() as smtp:
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(
                f"SMTP refused the recipient ({codes})", permanent=all(c >= 500 for c in codes)
            ) from None
        except smtplib.SMTPResponseException as exc:
            reason = f"SMTP answered {exc.smtp_code}"
            if exc.smtp_code >= 500:
                raise DeliveryError(reason, permanent=True) from None
            raise DeliveryError(reason, counts_for_breaker=exc.smtp_code == 421) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP unreachable: {type(exc).__name__}", counts_for_breaker=True) from None
        return ""

    def _connect(self) -> smtplib.SMTP:
        url = urlparse(self.url)
        if url.scheme not in ("smtp", "smtps"):
            raise DeliveryError(f"SMTP_URL must start with smtp:// or smtps://, not {url.scheme}://")
        host = url.hostname or ""
        smtp: smtplib.SMTP
        if url.scheme == "smtps":
            smtp = smtplib.SMTP_SSL(host, url.port or 465, timeout=self.timeout)
        else:
            smtp = smtplib.SMTP(host, url.port or 25, timeout=self.timeout)
            if parse_qs(url.query).get("starttls", ["false"])[0].lower() == "true":
                smtp.starttls()
        if url.username:
            smtp.login(unquote(url.username), unquote(url.password or ""))
        return smtp


def _session(local: threading.local) -> requests.Session:
    """One keep-alive session per worker thread (requests.Session is not thread-safe)."""
    session = getattr(local, "session", None)
    if session is None:
        session = local.session = requests.Session()
    return session
