"""Lead slots come out of what visitors actually type, are validated, and can be corrected."""
import datetime as dt

import pytest

from services.chat.slots import extract, normalise_phone, parse_start

TODAY = dt.date(2026, 1, 15)


def test_several_slots_in_one_message():
    found = extract("Jan Kowalski, jan@example.com, 600 700 800, Warszawa, 55 m2", today=TODAY)
    assert found.values == {
        "name": "Jan Kowalski",
        "email": "jan@example.com",
        "phone": "+48600700800",
        "city": "Warszawa",
        "area_m2": 55,
    }
    assert found.invalid == []


def test_english_sentence_with_budget_and_start():
    found = extract("The flat is 35 sqm in Gdansk, budget 60k PLN, we could start in 8 months", today=TODAY)
    assert found.values["area_m2"] == 35
    assert found.values["city"] == "Gdańsk"
    assert found.values["budget"] == 60000
    assert found.values["start_months"] == 8


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("600 700 800", "+48600700800"),
        ("600-700-800", "+48600700800"),
        ("+48 600 700 800", "+48600700800"),
        ("+48600700800", "+48600700800"),
        ("0048 600 700 800", "+48600700800"),
        ("48 600 700 800", "+48600700800"),
        ("22 100 20 30", "+48221002030"),
        ("12345", None),
        ("060 070 080", None),
        ("+49 600 700 800 1", None),
    ],
)
def test_polish_phone_formats_with_or_without_prefix(raw, normalised):
    assert normalise_phone(raw) == normalised


@pytest.mark.parametrize(
    "text, awaiting, invalid",
    [
        ("jan@", "email", "email"),
        ("mój mail to jan@example", None, "email"),
        ("123 45", "phone", "phone"),
        ("5000 m2", None, "area_m2"),
        ("5", "area_m2", "area_m2"),
    ],
)
def test_invalid_values_are_reported_not_stored(text, awaiting, invalid):
    found = extract(text, awaiting=awaiting, free_text_ok=True, today=TODAY)
    assert invalid in found.invalid
    assert invalid not in found.values


@pytest.mark.parametrize(
    "text, awaiting, slot, value",
    [
        ("55", "area_m2", "area_m2", 55),
        ("150 000", "budget", "budget", 150000),
        ("200", "budget", "budget", 200000),
        ("250 tys. zł", None, "budget", 250000),
        ("budżet 1,5 mln", None, "budget", 1500000),
        ("Gdynia", "city", "city", "Gdynia"),
        ("w Krakowie", None, "city", "Kraków"),
        ("jan kowalski", "name", "name", "Jan Kowalski"),
        ("Nazywam się Anna Nowak", None, "name", "Anna Nowak"),
        ("my name is John Smith", None, "name", "John Smith"),
        ("John.Smith@Example.ORG ", None, "email", "john.smith@example.org"),
    ],
)
def test_bare_answers_and_phrasings_fill_the_slot(text, awaiting, slot, value):
    assert extract(text, awaiting=awaiting, free_text_ok=True, today=TODAY).values[slot] == value


def test_a_question_is_not_taken_as_a_name_while_the_bot_waits_for_one():
    assert "name" not in extract("Ile kosztuje remont?", awaiting="name", free_text_ok=False, today=TODAY).values


@pytest.mark.parametrize(
    "text, months",
    [
        ("od zaraz", 0),
        ("as soon as possible", 0),
        ("za 2 miesiące", 2),
        ("in 5 months", 5),
        ("w przyszłym miesiącu", 1),
        ("w marcu", 2),
        ("in december", 11),
        ("za rok", 12),
    ],
)
def test_preferred_start_in_months(text, months):
    parsed = parse_start(text, TODAY)
    assert parsed is not None and parsed[0] == months


def test_area_outside_10_to_1000_is_refused_and_limits_are_inclusive():
    assert extract("10 m2", today=TODAY).values["area_m2"] == 10
    assert extract("1000 m2", today=TODAY).values["area_m2"] == 1000
    assert "area_m2" in extract("9 m2", today=TODAY).invalid
    assert "area_m2" in extract("1001 m2", today=TODAY).invalid
