"""Lead slots come out of what visitors actually type, are validated, can be corrected, and can be refused."""
import datetime as dt

import pytest

from services.chat.slots import extract, identifies, looks_like_name, normalise_email, normalise_phone

TODAY = dt.date(2026, 11, 29)  # a Sunday


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
    assert found.declined == []


def test_a_uk_number_from_a_visitor_without_a_polish_one():
    found = extract("My phone is 07700 900123, I don't have a Polish number", today=TODAY)
    assert found.values == {"phone": "+447700900123"}


def test_an_area_in_metres_is_never_read_as_a_budget_in_millions():
    found = extract("Jestem Anna z Poznania, mieszkanie ma 55 m, chcemy zacząć w maju", today=TODAY)
    assert found.values == {"name": "Anna", "city": "Poznań", "area_m2": 55, "start": "2027-05", "start_months": 6}


def test_english_sentence_with_budget_and_start():
    found = extract("The flat is 35 sqm in Gdansk, budget 60k PLN, we could start in 8 months", today=TODAY)
    assert found.values["area_m2"] == 35
    assert found.values["city"] == "Gdańsk"
    assert (found.values["budget"], found.values["budget_currency"]) == (60000, "PLN")
    assert (found.values["start"], found.values["start_months"]) == ("2027-07", 8)


@pytest.mark.parametrize(
    "text", ["55 m", "55m2", "55 m²", "55 metrów", "55 mkw", "55 sqm", "55 square metres", "mieszkanie ma 55 m"]
)
def test_areas_in_every_unit_people_use(text):
    found = extract(text, today=TODAY)
    assert found.values == {"area_m2": 55}


@pytest.mark.parametrize(
    "text, amount, currency",
    [
        ("55 tys", 55000, "PLN"),
        ("55 tys. zł", 55000, "PLN"),
        ("55k zł", 55000, "PLN"),
        ("55k", 55000, "PLN"),
        ("55 000 zł", 55000, "PLN"),
        ("55000 PLN", 55000, "PLN"),
        ("1,2 mln", 1200000, "PLN"),
        ("1.5 million", 1500000, "PLN"),
        ("budżet 1,5 mln", 1500000, "PLN"),
        ("250 tys. zł", 250000, "PLN"),
        ("€40k", 40000, "EUR"),
        ("40 000 EUR", 40000, "EUR"),
        ("40k euro", 40000, "EUR"),
        ("our budget is 200 000", 200000, "PLN"),
    ],
)
def test_budgets_keep_their_currency(text, amount, currency):
    found = extract(text, today=TODAY)
    assert (found.values["budget"], found.values["budget_currency"]) == (amount, currency)
    assert "area_m2" not in found.values


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("600 700 800", "+48600700800"),
        ("601 602 699", "+48601602699"),
        ("600-700-800", "+48600700800"),
        ("+48 600 700 800", "+48600700800"),
        ("0048 600 700 800", "+48600700800"),
        ("48 600 700 800", "+48600700800"),
        ("22 100 20 30", "+48221002030"),
        ("+44 7700 900123", "+447700900123"),
        ("0044 7700 900123", "+447700900123"),
        ("07911 123456", "+447911123456"),  # a UK mobile written the UK way
        ("07700 900123", "+447700900123"),  # UK range for fiction: not valid, but shaped as a UK mobile
        ("087 123 4567", "+353871234567"),
        ("601 602 69", None),  # a Polish number a digit short, not a Lithuanian one
        ("+380 67 123 4567", "+380671234567"),
        ("12345", None),
        ("+48 600 700", None),
        ("0612345678", None),  # a mobile both in France and the Netherlands: the visitor is asked again
    ],
)
def test_phone_numbers_polish_by_default_international_accepted(raw, normalised):
    assert normalise_phone(raw) == normalised


def test_emails_are_checked_by_syntax_and_stored_lower_case():
    assert normalise_email(" John.Smith@Example.ORG ") == "john.smith@example.org"
    assert normalise_email("jan@example") is None
    assert extract("mail: Anna.Nowak@Gmail.com", today=TODAY).values["email"] == "anna.nowak@gmail.com"


@pytest.mark.parametrize(
    "text, awaiting, invalid",
    [
        ("jan@", "email", "email"),
        ("mój mail to jan@example", None, "email"),
        ("123 45", "phone", "phone"),
        ("my number is 123 456 78", None, "phone"),
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
        ("Gdynia", "city", "city", "Gdynia"),
        ("w Krakowie", None, "city", "Kraków"),
        ("jan kowalski", "name", "name", "Jan Kowalski"),
        ("Anna", "name", "name", "Anna"),
        ("Nazywam się Anna Nowak", None, "name", "Anna Nowak"),
        ("my name is John Smith", None, "name", "John Smith"),
        ("Sorry, my phone number is actually 601 602 699", None, "phone", "+48601602699"),
        ("Dzień dobry, proszę o wycenę. Grzegorz Pawlak, tel. 501 234 567", None, "name", "Grzegorz Pawlak"),
        ("Hi! Emma Clarke here, emma.clarke@example.com", None, "name", "Emma Clarke"),
    ],
)
def test_bare_answers_and_phrasings_fill_the_slot(text, awaiting, slot, value):
    assert extract(text, awaiting=awaiting, free_text_ok=True, today=TODAY).values[slot] == value


@pytest.mark.parametrize(
    "text", ["I'd like a quote", "Polish", "ąęśćź", "tak", "Poznań", "Dzień dobry", "ok", "Bye", "Price?"]
)
def test_what_is_not_a_name(text):
    assert not looks_like_name(text)
    assert "name" not in extract(text, awaiting="name", free_text_ok=True, today=TODAY).values


@pytest.mark.parametrize("text", ["Anna", "jan kowalski", "Mary-Jane O'Neil", "Łukasz Żółkiewski", "Olena"])
def test_what_is_a_name(text):
    assert looks_like_name(text)


def test_a_question_is_not_taken_as_a_name_while_the_bot_waits_for_one():
    assert "name" not in extract("Ile kosztuje remont?", awaiting="name", free_text_ok=False, today=TODAY).values


@pytest.mark.parametrize("awaiting", ["start", "name", "city", "budget", None])
@pytest.mark.parametrize("text", ["tak, zgadzam się", "Tak", "yes I agree", "no thanks", "ok", "nie"])
def test_a_yes_or_no_is_never_a_slot_value(text, awaiting):
    found = extract(text, awaiting=awaiting, free_text_ok=True, today=TODAY)
    assert found.values == {}


@pytest.mark.parametrize(
    "text, awaiting, declined",
    [
        ("Nie chcę podawać budżetu, proszę po prostu zadzwonić", None, ["budget"]),
        ("Nie chcę podawać budżetu", "budget", ["budget"]),
        ("wolę nie mówić", "budget", ["budget"]),
        ("I'd rather not say", "area_m2", ["area_m2"]),
        ("I don't want to give my phone number", None, ["phone"]),
        ("skip", "city", ["city"]),
        ("pomiń", "start", ["start"]),
        ("nie wiem", "start", ["start"]),
        ("I don't know", "area_m2", ["area_m2"]),
    ],
)
def test_a_refused_or_unknown_slot_is_declined(text, awaiting, declined):
    found = extract(text, awaiting=awaiting, free_text_ok=True, today=TODAY)
    assert found.declined == declined
    assert not set(declined) & set(found.values)


def test_a_value_given_with_a_hedge_is_kept_not_declined():
    found = extract("nie wiem dokładnie, około 60 m2", awaiting="area_m2", free_text_ok=True, today=TODAY)
    assert found.values["area_m2"] == 60
    assert found.declined == []


@pytest.mark.parametrize(
    "text, start, months",
    [
        ("chcemy zacząć w maju", "2027-05", 6),
        ("przyszły wtorek", "2026-12-01", 1),
        ("asap", "asap", 0),
        ("jak najszybciej", "asap", 0),
        ("od zaraz", "asap", 0),
        ("right away", "asap", 0),
        ("next spring", "2027-03", 4),
        ("od marca", "2027-03", 4),
        ("w przyszłym miesiącu", "2026-12", 1),
        ("next Tuesday", "2026-12-01", 1),
        ("jutro", "2026-11-30", 0),
        ("15 stycznia", "2027-01-15", 2),
        ("1.03", "2027-03-01", 4),
        ("in december", "2026-12", 1),
        ("za 2 miesiące", "2027-01", 2),
        ("in 5 months", "2027-04", 5),
        ("w listopadzie", "2026-11", 0),
    ],
)
def test_preferred_start_is_normalised_in_warsaw_time(text, start, months):
    found = extract(text, awaiting="start", free_text_ok=True, today=TODAY)
    assert (found.values["start"], found.values["start_months"]) == (start, months)


def test_an_answer_that_names_no_time_leaves_the_start_missing():
    found = extract("hmm, zobaczymy", awaiting="start", free_text_ok=True, today=TODAY)
    assert "start" not in found.values


def test_area_outside_10_to_1000_is_refused_and_limits_are_inclusive():
    assert extract("10 m2", today=TODAY).values["area_m2"] == 10
    assert extract("1000 m2", today=TODAY).values["area_m2"] == 1000
    assert "area_m2" in extract("9 m2", today=TODAY).invalid
    assert "area_m2" in extract("1001 m2", today=TODAY).invalid


@pytest.mark.parametrize(
    "text, awaiting, expected",
    [
        ("jan@example.com", None, True),
        ("600 700 800", None, True),
        ("Jan Kowalski", None, True),
        ("anna", "name", True),
        ("jan.kowalski at gmail", "email", True),
        ("Chcemy zacząć od zaraz", "email", False),
        ("Ile to kosztuje?", "phone", False),
        ("Ile kosztuje remont łazienki?", None, False),
        ("Do you work in Gdańsk?", None, False),
        ("tak", "name", False),
        ("Polish", "name", False),
    ],
)
def test_identifies_tells_which_messages_may_carry_contact_details(text, awaiting, expected):
    assert identifies(text, awaiting) is expected


def test_the_day_of_a_callback_is_not_the_renovation_start():
    assert "start" not in extract("Zadzwońcie we wtorek po 17", today=TODAY).values
    assert extract("we wtorek", awaiting="start", free_text_ok=True, today=TODAY).values["start"] == "2026-12-01"
