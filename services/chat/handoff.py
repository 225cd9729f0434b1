"""Whether a visitor who asks for a person can have one now: within opening hours with an agent in the inbox, someone
joins the chat ("waiting"); otherwise a consultant calls back ("callback", the callback path of conversation.py).

Opening hours come from HANDOFF_HOURS ("mon-fri 08:00-18:00; sat 09:00-13:00": day or day range, then a time range
in HANDOFF_TIMEZONE, "24:00" meaning the end of the day). An agent is present while their inbox stream is open: the
stream (streams.py) writes agent_presence.seen_at every STREAM_HEARTBEAT_S, so a row seen within two heartbeats is
an agent there now; a closed inbox stops counting within two heartbeats, never sooner (another tab may be open).

A visitor waiting for an agent is announced on Slack at once, with the link to the conversation in the inbox. The
alert is sent directly (idempotency key "handoff:<session_id>:<when>"), not through the lead outbox: a waiting
visitor may have no lead, and every agent present already sees the conversation in the inbox's live stream, so a
notifier that cannot be reached costs an extra alert, not a lost visitor (logged). The alert carries the reason, the
language and the link, nothing personal: whoever opens the link is an agent signed in to the inbox.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prometheus_client import Counter
from sqlalchemy.orm import Session

from services.chat import storage
from services.chat.remote import NotifierClient, PeerUnavailable
from services.runtime.clock import utcnow
from services.runtime.config import ConfigError
from services.runtime.db import Database

log = logging.getLogger(__name__)

WAITING, AGENT, CALLBACK = "waiting", "agent", "callback"
SILENT = frozenset({WAITING, AGENT})  # the bot does not answer a conversation in these states
ASKED, BUTTON, NOT_UNDERSTOOD_TWICE = "asked", "button", "not_understood"  # conversation.handoff_reason

HANDOFFS = Counter(
    "chat_handoffs_total", "Visitors handed to a person: an agent joining (waiting) or a callback",
    ["outcome", "reason"],
)
for _outcome in (WAITING, CALLBACK):  # every series exists from the start, so a rate() over it is never empty
    for _reason in (ASKED, BUTTON, NOT_UNDERSTOOD_TWICE):
        HANDOFFS.labels(_outcome, _reason)

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_PART = re.compile(
    r"^(?P<first>[a-z]{3})(?:\s*-\s*(?P<last>[a-z]{3}))?\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$"
)


def _minutes(text: str, raw: str) -> int:
    hours, minutes = (int(x) for x in text.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ConfigError(f"HANDOFF_HOURS={raw!r}: {text!r} is not a time of day (00:00 to 24:00)")
    return hours * 60 + minutes


@dataclass(frozen=True)
class OpeningHours:
    """Per weekday (0 = Monday) the [start, end) minute ranges of the day, in `zone`."""

    ranges: tuple[tuple[tuple[int, int], ...], ...]
    zone: ZoneInfo

    @classmethod
    def parse(cls, raw: str, timezone: str) -> OpeningHours:
        """ConfigError naming HANDOFF_HOURS or HANDOFF_TIMEZONE for anything it cannot use."""
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"HANDOFF_TIMEZONE={timezone!r} is not an IANA time zone (e.g. Europe/Warsaw)") from None
        days: list[list[tuple[int, int]]] = [[] for _ in _DAYS]
        for part in filter(None, (p.strip().lower() for p in raw.split(";"))):
            match = _PART.match(part)
            if not match or match["first"] not in _DAYS or (match["last"] or match["first"]) not in _DAYS:
                raise ConfigError(
                    f"HANDOFF_HOURS part {part!r} is not like 'mon-fri 08:00-18:00' (days {', '.join(_DAYS)})"
                )
            start, end = _minutes(match["start"], raw), _minutes(match["end"], raw)
            if end <= start:
                raise ConfigError(f"HANDOFF_HOURS part {part!r}: the end must come after the start")
            first, last = _DAYS.index(match["first"]), _DAYS.index(match["last"] or match["first"])
            for day in range(first, first + (last - first) % 7 + 1):  # "sat-mon" wraps over the week's end
                days[day % 7].append((start, end))
        if not any(days):
            raise ConfigError(f"HANDOFF_HOURS={raw!r} names no opening hours")
        return cls(tuple(tuple(d) for d in days), zone)

    def open_at(self, when: dt.datetime) -> bool:
        local = when.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.ranges[local.weekday()])


class HandoffDesk:
    """Decides, at the moment a visitor asks, between an agent joining now and a callback."""

    def __init__(
        self, db: Database, hours: OpeningHours, heartbeat_s: float, notifier: NotifierClient, public_base_url: str
    ):
        self.db = db
        self.hours = hours
        self.presence_window = dt.timedelta(seconds=2 * heartbeat_s)
        self.notifier = notifier
        self.public_base_url = public_base_url.rstrip("/")

    def agent_present(self, s: Session, now: dt.datetime) -> bool:
        return storage.agent_seen_since(s, now - self.presence_window)

    def outcome(self, s: Session, now: dt.datetime | None = None) -> str:
        """WAITING when someone can join now, else CALLBACK; read in the caller's transaction."""
        now = now or utcnow()
        return WAITING if self.hours.open_at(now) and self.agent_present(s, now) else CALLBACK

    def inbox_link(self, session_id: str) -> str:
        return f"{self.public_base_url}/inbox/#/c/{session_id}"

    def alert(self, session_id: str, reason: str, language: str, at: dt.datetime | None = None) -> None:
        """Slack: a visitor waits for an agent now (after the commit that made them wait)."""
        why = {ASKED: "asked for a person", BUTTON: "pressed \"talk to a person\"",
               NOT_UNDERSTOOD_TWICE: "the bot did not understand twice"}.get(reason, reason)
        link = self.inbox_link(session_id)
        key = f"handoff:{session_id}:{(at or utcnow()).strftime('%Y%m%dT%H%M%S')}"
        try:
            self.notifier.slack_alert(
                key, "A visitor is waiting for a person in the chat", f"Open the conversation in the inbox: {link}",
                {"reason": why, "language": language, "inbox": link},
            )
        except PeerUnavailable as exc:
            log.warning("handoff alert not sent; the inbox shows the visitor waiting",
                        extra={"session_id": session_id, "reason": str(exc)})

    def seen(self, agent: str, now: dt.datetime | None = None) -> None:
        """The agent's inbox stream is alive (every heartbeat)."""
        with self.db.session() as s:
            storage.touch_presence(s, agent, now or utcnow())


def count(outcome: str, reason: str) -> None:
    HANDOFFS.labels(outcome, reason).inc()
