"""Issue 12's failures, as a visitor meets them: over REST through Envoy, against the whole stack. Every message the
issue quotes is answered as a visitor would expect, in the visitor's language, and the structured parts of a reply
(suggested topics, quick replies, consent choices) reach the widget as JSON fields."""
from __future__ import annotations

import pytest

from testsupport.receivers import HttpReceiver, monday_graphql
from testsupport.stack import UNLIMITED, running_stack, sales_env


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with HttpReceiver() as slack, HttpReceiver(respond=monday_graphql) as monday:
        env = {**sales_env(slack, monday), **UNLIMITED}
        with running_stack(tmp_path_factory.mktemp("visitor-questions"), env=env) as gw:
            yield gw


def say(gw, message: str, session: str = "") -> dict:
    response = gw.rest("POST", "/api/chatbot/chat", json={"session_id": session, "message": message})
    assert response.status_code == 200, response.text
    return response.json()


def conversation(gw, messages: list[str]) -> list[dict]:
    replies, session = [], ""
    for message in messages:
        replies.append(say(gw, message, session))
        session = replies[-1]["session_id"]
    return replies


ASKS_FOR_DETAILS = ("Jak się nazywasz?", "What is your name?")


@pytest.mark.parametrize(
    "message, topic, language, fragment",
    [
        ("Jaką dajecie gwarancję?", "warranty", "pl", "24 miesiące gwarancji"),
        ("What warranty do you give?", "warranty", "en", "24-month warranty"),
        ("Czy mogę zapłacić w ratach?", "financing", "pl", "10 rat 0%"),
        ("Can I pay in instalments?", "financing", "en", "10 instalments at 0%"),
        ("Jakich materiałów używacie?", "materials", "pl", "Paradyż"),
        ("Which materials do you use?", "materials", "en", "Paradyż"),
        ("Czy mogę mieć własne płytki?", "own_materials", "pl", "własne materiały"),
        ("Can I use my own tiles?", "own_materials", "en", "your own materials"),
        ("Czy wystawiacie fakturę VAT?", "vat_invoice", "pl", "fakturę VAT"),
        ("Do you issue a VAT invoice?", "vat_invoice", "en", "VAT invoice"),
        ("Czy remontujecie kuchnie?", "kitchens", "pl", "remontujemy kuchnie"),
        ("Do you renovate kitchens?", "kitchens", "en", "we renovate kitchens"),
    ],
)
def test_the_questions_that_were_not_understood_are_answered_in_the_visitors_language(
    gw, message, topic, language, fragment
):
    reply = say(gw, message)
    assert (reply["intent"], reply["language"]) == (topic, language)
    assert fragment in reply["reply"]
    assert not any(question in reply["reply"] for question in ASKS_FOR_DETAILS)  # a question asked, nothing more


def test_bathrooms_in_gdansk_get_the_bathroom_answer_and_whether_gdansk_is_served(gw):
    reply = say(gw, "Do you renovate bathrooms in Gdańsk?")
    assert (reply["intent"], reply["language"]) == ("bathrooms", "en")
    assert "bathrooms are our speciality" in reply["reply"] and "do not work in Gdańsk" in reply["reply"]


def test_take_a_look_is_a_site_visit_and_the_visitor_is_then_asked_for_consent_before_details(gw):
    reply = say(gw, "Could you come and take a look?")
    assert reply["intent"] == "site_visit" and "measurement and site visit are free" in reply["reply"]
    # A site visit is intent: details will be asked for, and the processing consent notice comes first.
    assert reply["consent_prompt"]["kind"] == "processing" and "What is your name?" not in reply["reply"]


def test_the_flat_area_is_recorded_as_the_area_not_answered_with_the_cities(gw):
    first, area = conversation(gw, ["Hello", "my flat area is 55 m2"])
    assert area["language"] == "en" and "area_m2" in area["lead"]["captured"]
    assert "Noted: area." in area["reply"] and "Warsaw" not in area["reply"]


def test_a_question_about_the_standard_package_gets_the_standard_package(gw):
    reply = say(gw, "Standard question")
    assert reply["intent"] == "packages" and reply["reply"].startswith("The Standard package costs 1290 PLN/m²")


def test_an_english_visitor_is_answered_in_english_and_a_price_question_gets_no_request_for_a_name(gw):
    greeting, price = conversation(gw, ["Good morning", "Price?"])
    assert (greeting["intent"], greeting["language"]) == ("greeting", "en")
    assert greeting["reply"].startswith("Hello!")
    assert (price["intent"], price["language"]) == ("packages", "en") and "Standard 1290 PLN/m²" in price["reply"]
    assert "What is your name?" not in price["reply"] and "?" not in price["reply"]
    assert [q["topic"] for q in price["quick_replies"]] == ["included", "quote"]
    assert price["quick_replies"][0]["label"] == "What is included?"


def test_an_amount_in_zloty_keeps_an_english_conversation_english_down_to_the_consent_text(gw):
    replies = conversation(gw, [
        "Hello, I would like a quote for my flat",
        "My name is John Smith",
        "john.smith@example.org",
        "+48 601 234 567",
        "Kraków, 60 m2",
        "250 000 zł",
        "we want to start in 2 months",
    ])
    assert replies[0]["intent"] == "quote" and replies[0]["consent_prompt"]["kind"] == "processing"
    assert [r["language"] for r in replies] == ["en"] * 7
    assert "Noted: budget." in replies[5]["reply"]
    prompt = replies[-1]["consent_prompt"]
    assert prompt["kind"] == "processing" and prompt["text"].startswith("I consent to NovaHouse")
    assert prompt["choices"] == [{"label": "Yes, I agree", "value": True}, {"label": "No", "value": False}]


def test_what_is_not_understood_comes_with_suggested_topics_as_fields(gw):
    reply = say(gw, "balkon?")
    assert reply["intent"] == "out_of_scope" and "nie rozumiem" not in reply["reply"].lower()
    suggestions = reply["suggestions"]
    assert [s["topic"] for s in suggestions] == ["packages", "duration", "areas"]
    assert suggestions[0]["label"] == "Ile kosztuje remont?"
    tapped = say(gw, suggestions[1]["label"], reply["session_id"])  # the widget sends the label
    assert tapped["intent"] == "duration"
