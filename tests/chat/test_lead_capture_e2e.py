"""Issue 13's visitors, through Envoy with the real services: what each visitor is told, and what sales gets on the
Monday.com board and in Slack (local receivers). No lead is lost, no area is read as a budget, a yes is never a
detail, corrections and returning visitors never make a second item, requests reach sales at once."""
from __future__ import annotations

import datetime as dt
import json
import zoneinfo

import pytest

from testsupport.receivers import HttpReceiver, MondayBoard
from testsupport.stack import UNLIMITED, running_stack, sales_env
from testsupport.waiting import wait_for

AGREE = {"processing_consent": True}
AGREE_MARKETING = {"marketing_consent": True}
DECLINE_MARKETING = {"marketing_consent": False}


@pytest.fixture(scope="module")
def sales(tmp_path_factory):
    with HttpReceiver() as slack, HttpReceiver(respond=MondayBoard) as monday:
        # Only requests and flags alert here, so each alert is the one a case makes.
        env = {**UNLIMITED, **sales_env(slack, monday), "LEAD_ALERT_SCORE": "101"}
        with running_stack(tmp_path_factory.mktemp("lead-capture"), env=env) as gw:
            yield type("Sales", (), {"gw": gw, "slack": slack, "monday": monday, "board": monday.responder})


class Visitor:
    def __init__(self, sales):
        self.sales = sales
        self.session = ""
        self.last: dict = {}

    def say(self, message: str = "", consent: dict[str, bool] | None = None) -> dict:
        body = {"session_id": self.session, "message": message, **(consent or {})}
        response = self.sales.gw.rest("POST", "/api/chatbot/chat", json=body)
        assert response.status_code == 200, response.text
        self.last = response.json()
        self.session = self.last["session_id"]
        return self.last


def item_of(sales, lead_id: str) -> dict:
    """The board's one item for the lead (after its queued updates): its name and column values."""
    wait_for(lambda: any(i["column_values"].get("lead_id") == lead_id for i in list(sales.board.items.values())),
             what="the lead's Monday.com item")
    [item] = [i for i in sales.board.items.values() if i["column_values"].get("lead_id") == lead_id]
    return item


def alerts_for(sales, lead_id: str) -> list[str]:
    return [r.body.decode() for r in sales.slack.requests if lead_id in r.body.decode()]


def warsaw_today() -> dt.date:
    return dt.datetime.now(zoneinfo.ZoneInfo("Europe/Warsaw")).date()


def test_anna_s_55_m_is_an_area_the_notice_comes_first_and_sales_gets_no_budget(sales):
    anna = Visitor(sales)
    first = anna.say("Jestem Anna z Poznania, mieszkanie ma 55 m, chcemy zacząć w maju")
    assert first["consent_prompt"]["kind"] == "processing"  # before a single question for a detail
    assert "budżet" not in first["reply"] and "metraż" in first["reply"]
    asked = anna.say(consent=AGREE)
    assert "e-mail lub numer telefonu" in asked["reply"]
    anna.say("anna.wisniewska@example.com")
    anna.say("Nie chcę podawać budżetu.")
    stored = anna.say(consent=DECLINE_MARKETING)
    lead_id = stored["lead"]["lead_id"]
    columns = item_of(sales, lead_id)["column_values"]
    today = warsaw_today()
    may = f"{today.year + (today.month >= 5)}-05"
    assert (columns["area_m2"], columns["budget"], columns["start"]) == ("55", "", may)
    assert (columns["partial"], columns["missing"], columns["city"]) == ("yes", "budget", "Poznań")
    assert not any("55000000" in json.dumps(i) for i in sales.board.items.values())


def test_a_yes_to_the_start_question_is_not_a_start_and_a_skipped_budget_is_not_asked_again(sales):
    visitor = Visitor(sales)
    visitor.say("Chcę wycenę")
    visitor.say(consent=AGREE)
    for text in ("Tomasz Lis", "tomasz.lis@example.com", "Kraków", "60 m2", "nie wiem"):
        reply = visitor.say(text)
    assert "Kiedy chcesz zacząć" in reply["reply"]
    after_yes = visitor.say("tak, zgadzam się")
    assert after_yes["consent_prompt"]["kind"] == "marketing" and "start" in after_yes["lead"]["missing"]
    stored = visitor.say(consent=DECLINE_MARKETING)
    assert item_of(sales, stored["lead"]["lead_id"])["column_values"]["start"] == ""


def test_just_call_me_without_a_budget_reaches_sales_at_once_as_a_partial_lead(sales):
    visitor = Visitor(sales)
    visitor.say("Chcę wycenę remontu")
    visitor.say(consent=AGREE)
    visitor.say("Marek Zieliński, marek.z@example.com, 602 111 333")
    reply = visitor.say("Nie chcę podawać budżetu, proszę po prostu zadzwonić")
    assert reply["intent"] == "lead_stored" and "telefon" in reply["reply"] and reply.get("consent_prompt") is None
    lead_id = reply["lead"]["lead_id"]
    columns = item_of(sales, lead_id)["column_values"]
    assert (columns["partial"], columns["phone"], columns["request"][:8]) == ("yes", "+48602111333", "callback")
    wait_for(lambda: alerts_for(sales, lead_id), what="the request's Slack alert")
    [alert] = alerts_for(sales, lead_id)
    assert "Callback request" in alert and "marek.z@example.com" in alert and "+48602111333" in alert


def test_a_foreign_number_and_a_eur_budget_are_kept_as_given_and_the_unscored_budget_is_flagged(sales):
    visitor = Visitor(sales)
    visitor.say("I'd like a quote")
    visitor.say(consent=AGREE)
    visitor.say("Oliver Brown")
    visitor.say("My phone is +44 7911 123456, I don't have a Polish number")
    visitor.say("Warsaw")
    visitor.say("70 m2")
    visitor.say("about 40 000 EUR")
    visitor.say("next spring")
    stored = visitor.say(consent=AGREE_MARKETING)
    lead_id = stored["lead"]["lead_id"]
    columns = item_of(sales, lead_id)["column_values"]
    assert (columns["phone"], columns["budget"], columns["budget_currency"]) == ("+447911123456", "40000", "EUR")
    assert columns["budget_pln"] == "" and columns["start"].endswith("-03")
    wait_for(lambda: alerts_for(sales, lead_id), what="the flag to sales")
    assert "no EUR_PLN_RATE" in alerts_for(sales, lead_id)[0]


def test_a_uk_number_in_its_national_form_is_not_lost(sales):
    visitor = Visitor(sales)
    visitor.say("I'd like a quote")
    visitor.say(consent=AGREE)
    visitor.say("Oliver Smith")
    taken = visitor.say("My phone is 07700 900123, I don't have a Polish number")
    assert "Polish number" not in taken["reply"] and "phone" in taken["lead"]["captured"]
    reply = visitor.say("please just call me")
    columns = item_of(sales, reply["lead"]["lead_id"])["column_values"]
    assert columns["phone"] == "+447700900123" and columns["request"].startswith("callback")


@pytest.mark.parametrize("not_a_name", ["I'd like a quote", "Polish", "ąęśćź"])
def test_what_is_not_a_name_is_not_taken_as_one(sales, not_a_name):
    visitor = Visitor(sales)
    visitor.say("I want a quote")
    visitor.say(consent=AGREE)
    reply = visitor.say(not_a_name)
    assert "name" in reply["lead"]["missing"]
    assert "What is your name?" in reply["reply"] or "Jak się nazywasz?" in reply["reply"]  # asked again


def test_a_correction_after_the_lead_is_saved_updates_its_one_item(sales):
    visitor = Visitor(sales)
    visitor.say("Proszę o wycenę")
    visitor.say(consent=AGREE)
    for text in ("Ewa Nowak", "ewa.nowak@example.com", "Warszawa", "48 m2", "120 tys. zł", "od marca"):
        visitor.say(text)
    stored = visitor.say(consent=DECLINE_MARKETING)
    lead_id = stored["lead"]["lead_id"]
    assert item_of(sales, lead_id)["column_values"]["phone"] == ""
    corrected = visitor.say("Przepraszam, mój numer telefonu to jednak 601 602 699")
    assert "telefon" in corrected["reply"]
    wait_for(lambda: item_of(sales, lead_id)["column_values"]["phone"] == "+48601602699", what="the item's update")
    again = visitor.say("Sorry, mój e-mail to właściwie ewa.nowak2@example.com")
    assert "Poprawiłem: e-mail" in again["reply"]
    wait_for(lambda: item_of(sales, lead_id)["column_values"]["email"] == "ewa.nowak2@example.com",
             what="the second update")


def test_a_returning_visitor_makes_no_second_item_and_sales_is_told_what_is_new(sales):
    first = Visitor(sales)
    first.say("Chcę wycenę")
    first.say(consent=AGREE)
    for text in ("Piotr Wrona", "piotr.wrona@example.com", "Łódź", "65 m2", "150 tys. zł", "w kwietniu"):
        first.say(text)
    lead_id = first.say(consent=DECLINE_MARKETING)["lead"]["lead_id"]
    item_of(sales, lead_id)

    second = Visitor(sales)
    second.say("Dzień dobry, chcę wycenę")
    second.say(consent=AGREE)
    second.say("Piotr Wrona, piotr.wrona@example.com")
    for text in ("Łódź", "80 m2", "nie wiem", "nie wiem"):
        second.say(text)
    linked = second.say(consent=DECLINE_MARKETING)
    assert linked["lead"]["lead_id"] == lead_id
    wait_for(lambda: alerts_for(sales, lead_id), what="the note to sales")
    [note] = alerts_for(sales, lead_id)
    assert "Returning visitor" in note and "area_m2: 80" in note
    assert item_of(sales, lead_id)["column_values"]["area_m2"] == "65"  # sales decides, the visitor did not


def test_a_consultation_on_next_tuesday_reaches_sales_with_the_day(sales):
    visitor = Visitor(sales)
    asked = visitor.say("Chcę umówić konsultację na przyszły wtorek")
    assert asked["consent_prompt"]["kind"] == "processing"
    visitor.say(consent=AGREE)
    visitor.say("Karolina Maj")
    reply = visitor.say("karolina.maj@example.com")
    assert reply["intent"] == "lead_stored" and "konsultację" in reply["reply"]
    lead_id = reply["lead"]["lead_id"]
    wait_for(lambda: alerts_for(sales, lead_id), what="the request's Slack alert")
    day = dt.date.fromisoformat(item_of(sales, lead_id)["column_values"]["request"].split(": ")[1].split(",")[0])
    assert day.weekday() == 1 and dt.timedelta(0) < day - warsaw_today() <= dt.timedelta(days=14)
    assert "Consultation request: " + day.isoformat() in alerts_for(sales, lead_id)[0]


def test_an_unserved_city_is_said_plainly_and_flagged_to_sales(sales):
    visitor = Visitor(sales)
    question = visitor.say("Czy robicie remonty w Gdańsku?")
    assert question.get("consent_prompt") is None and "Jak się nazywasz" not in question["reply"]
    visitor.say("Chcę wycenę")
    visitor.say(consent=AGREE)
    visitor.say("Adam Kos, adam.kos@example.com")
    told = visitor.say("Gdańsk")
    assert "nie prowadzimy jeszcze remontów w mieście Gdańsk" in told["reply"]
    for text in ("70 m2", "200 tys. zł", "w styczniu"):
        visitor.say(text)
    stored = visitor.say(consent=DECLINE_MARKETING)
    assert "Nie działamy jeszcze w mieście Gdańsk" in stored["reply"] and "Projektant" not in stored["reply"]
    lead_id = stored["lead"]["lead_id"]
    assert item_of(sales, lead_id)["column_values"]["city_served"] == "no"
    wait_for(lambda: alerts_for(sales, lead_id), what="the flag to sales")
    assert "city not served" in alerts_for(sales, lead_id)[0]
