"""The handoff's rules in process: opening hours in their time zone, the configuration refused at start with the
variable named, and a visitor nobody joined in time offered a callback at their next message."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from services.chat.handoff import OpeningHours
from services.chat.settings import Settings
from services.runtime.config import ConfigError
from tests.chat.conftest import build_world
from tests.chat.live import ALWAYS_OPEN
from testsupport.peers import PeerServer

WARSAW = ZoneInfo("Europe/Warsaw")


def warsaw(year: int, month: int, day: int, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=WARSAW).astimezone(dt.UTC)


def test_opening_hours_are_read_in_their_time_zone():
    hours = OpeningHours.parse("mon-fri 08:00-18:00; sat 09:00-13:00", "Europe/Warsaw")
    assert hours.open_at(warsaw(2026, 11, 30, 8, 0)) and hours.open_at(warsaw(2026, 11, 30, 17, 59))
    assert not hours.open_at(warsaw(2026, 11, 30, 7, 59)) and not hours.open_at(warsaw(2026, 11, 30, 18, 0))
    assert hours.open_at(warsaw(2026, 12, 5, 12, 59)) and not hours.open_at(warsaw(2026, 12, 5, 13, 0))
    assert not hours.open_at(warsaw(2026, 12, 6, 12, 0))  # Sunday
    # 06:30 UTC on a Monday: 08:30 in a Warsaw summer (open), 07:30 in its winter (closed)
    assert hours.open_at(dt.datetime(2026, 7, 6, 6, 30, tzinfo=dt.UTC))
    assert not hours.open_at(dt.datetime(2026, 12, 7, 6, 30, tzinfo=dt.UTC))
    weekend = OpeningHours.parse("sat-mon 10:00-24:00", "Europe/Warsaw")  # over the week's end
    assert weekend.open_at(warsaw(2026, 11, 30, 23, 59)) and not weekend.open_at(warsaw(2026, 12, 1, 12, 0))


@pytest.mark.parametrize(("hours", "zone", "named"), [
    ("weekdays 8-18", "Europe/Warsaw", "HANDOFF_HOURS"),
    ("mon-fri 18:00-08:00", "Europe/Warsaw", "HANDOFF_HOURS"),
    ("mon-fri 08:00-25:00", "Europe/Warsaw", "HANDOFF_HOURS"),
    ("", "Europe/Warsaw", "HANDOFF_HOURS"),
    ("mon-fri 08:00-18:00", "Europe/Nowhere", "HANDOFF_TIMEZONE"),
])
def test_unusable_opening_hours_are_refused_naming_the_variable(monkeypatch, hours, zone, named):
    monkeypatch.setenv("HANDOFF_HOURS", hours or " ; ")
    monkeypatch.setenv("HANDOFF_TIMEZONE", zone)
    with pytest.raises(ConfigError, match=named):
        Settings.from_env()


@pytest.mark.parametrize(("env", "named"), [
    ({"STREAM_HEARTBEAT_S": "30", "STREAM_MAX_S": "20"}, "STREAM_MAX_S"),
    ({"STREAM_MAX_CONCURRENT": "64", "GRPC_WORKERS": "32"}, "STREAM_MAX_CONCURRENT"),
    ({"STREAM_MAX_CONCURRENT": "0"}, "STREAM_MAX_CONCURRENT"),
    ({"PUBLIC_BASE_URL": "novahouse.example"}, "PUBLIC_BASE_URL"),
])
def test_stream_limits_that_cannot_work_are_refused_naming_the_variable(monkeypatch, env, named):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named):
        Settings.from_env()


def test_a_visitor_nobody_joined_in_time_is_offered_a_callback_at_their_next_message(tmp_path):
    with PeerServer() as peers:
        # The agent counts as present for two hours (two heartbeats), however slowly the first turn starts.
        world = build_world(f"sqlite:///{tmp_path / 'chat.db'}", peers, handoff_hours=ALWAYS_OPEN,
                            handoff_wait_min=0.0, stream_heartbeat_s=3600.0)
        try:
            world.app.streams.desk.seen("anna")  # an agent's inbox is open
            chat = world.chat
            asked = chat.send_message("", "Chcę rozmawiać z człowiekiem")
            assert asked.handoff == "waiting"
            later = chat.send_message(asked.session_id, "Halo?")
            assert later.handoff == "callback" and "nikt z zespołu nie zdążył dołączyć" in later.reply
            assert later.consent_prompt is not None and later.consent_prompt.kind == "processing"
            for text in ("tak", "Jan Kowalski", "601 602 697"):
                chat.send_message(asked.session_id, text)
            stored = chat.send_message(asked.session_id, "jutro o 10")
            assert stored.intent == "lead_stored" and "10:00" in stored.reply
            [key] = peers.notifier.keys(f"lead:{stored.lead.lead_id}:request:")
            request = peers.notifier.requests[key].slack
            assert request.fields["phone"] == "+48601602697" and "nobody joined the chat" in request.fields["reason"]
        finally:
            world.app.close()
