"""What visitors ask sales to do, and when, in Polish and English."""
import datetime as dt

import pytest

from services.chat.when import ContactRequest, parse_request

TODAY = dt.date(2026, 11, 29)  # a Sunday: Tuesday is 2026-12-01, Friday 2026-12-04


@pytest.mark.parametrize(
    "text, expected",
    [
        ("zadzwońcie we wtorek po 17", ContactRequest("callback", "2026-12-01", "17:00", "phone")),
        ("Zadzwońcie we wtorek", ContactRequest("callback", "2026-12-01", "", "phone")),
        ("proszę po prostu zadzwonić", ContactRequest("callback", "", "", "phone")),
        ("Nie chcę podawać budżetu, proszę po prostu zadzwonić", ContactRequest("callback", "", "", "phone")),
        ("Chcę umówić konsultację na przyszły wtorek", ContactRequest("consultation", "2026-12-01", "", "")),
        ("call me Tuesday morning", ContactRequest("callback", "2026-12-01", "morning", "phone")),
        ("Call me Tuesday after 5pm", ContactRequest("callback", "2026-12-01", "17:00", "phone")),
        ("please call me", ContactRequest("callback", "", "", "phone")),
        ("I want a consultation", ContactRequest("consultation", "", "", "")),
        ("I'd like a video consultation on Friday", ContactRequest("consultation", "2026-12-04", "", "video")),
        ("can someone come to see the flat on Friday", ContactRequest("site_visit", "2026-12-04", "", "")),
        ("can someone visit the flat on Friday morning", ContactRequest("site_visit", "2026-12-04", "morning", "")),
        ("Proszę o kontakt mailowy jutro", ContactRequest("callback", "2026-11-30", "", "email")),
    ],
)
def test_requests_with_day_time_and_channel(text, expected):
    assert parse_request(text, TODAY) == expected


@pytest.mark.parametrize(
    "text",
    ["Do you offer consultations?", "Ile kosztuje konsultacja?", "Jak długo trwa remont?", "tak, zgadzam się", "55 m2"],
)
def test_questions_and_other_messages_are_not_requests(text):
    assert parse_request(text, TODAY) is None

