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


class SlackSender:
    def __init__(self, settings: Settings):
        self.url = settings.slack_webhook_url
        self.timeout = settings.http_timeout_s
        self.pacer = Pacer(settings.slack_min_interval_s)
        self._local = threading.local()

    def send(self, alert: Payload) -> str:
        if not self.url:
            raise DeliveryError("SLACK_WEBHOOK_URL is not set; the alert waits in the queue")
        self.pacer.wait_turn()
        _post(_session(self._local), self.url, "Slack", self.timeout, slack_message(alert))
        return ""


MONDAY_CREATE_ITEM = (
    "mutation ($board: ID!, $group: String, $name: String!, $columns: JSON) "
    "{ create_item (board_id: $board, group_id: $group, item_name: $name, column_values: $columns) { id } }"
)
_MONDAY_RETRYABLE = ("complexity", "rate limit", "ratelimit", "internal server error", "maxconcurrency")


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


class MondaySender:
    """create_item on MONDAY_BOARD_ID, one call at a time (the board's API limits are per account and board)."""

    def __init__(self, settings: Settings):
        self.url = settings.monday_api_url
        self.key = settings.monday_api_key
        self.board_id = settings.monday_board_id
        self.timeout = settings.http_timeout_s
        self.max_retry_after_s = settings.max_retry_after_s
        self.pacer = Pacer()
        self._one_call = threading.Lock()
        self._session = requests.Session()

    def send(self, item: Payload) -> str:
        if not (self.key and self.board_id):
            raise DeliveryError("MONDAY_API_KEY and MONDAY_BOARD_ID must be set; the item waits in the queue")
        variables = {
            "board": self.board_id,
            "group": item.get("group_id") or None,
            "name": item["item_name"],
            "columns": json.dumps(monday_column_values(item.get("column_values", {})), ensure_ascii=False),
        }
        headers = {"Authorization": self.key, "Content-Type": "application/json", "API-Version": "2024-10"}
        with self._one_call:
            self.pacer.wait_turn()
            try:
                response = _post(
                    self._session,
                    self.url,
                    "Monday.com",
                    self.timeout,
                    {"query": MONDAY_CREATE_ITEM, "variables": variables},
                    headers,
                )
            except DeliveryError as exc:
                if exc.retry_after_s is not None:
                    self.pacer.pause(min(exc.retry_after_s, self.max_retry_after_s))
                raise
        return self._item_id(response)

    @staticmethod
    def _item_id(response: requests.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            raise DeliveryError("Monday.com answered something that is not JSON", permanent=True) from None
        errors = body.get("errors") or ([body] if body.get("error_code") or body.get("error_message") else [])
        if errors:
            text = json.dumps(errors, ensure_ascii=False)[:300]
            retryable = any(word in text.lower() for word in _MONDAY_RETRYABLE)
            raise DeliveryError(f"Monday.com refused the item: {text}", permanent=not retryable)
        item_id = ((body.get("data") or {}).get("create_item") or {}).get("id")
        if not item_id:
            # The item may exist; a retry could make a second one, so this needs a person.
            raise DeliveryError("Monday.com answered without an item id", permanent=True)
        return str(item_id)


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
