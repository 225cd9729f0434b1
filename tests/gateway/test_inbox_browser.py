"""A person takes over (issue 15), as the visitor and the agent see it, in headless Chromium: two chat replicas behind
Envoy on one PostgreSQL and Redis. The visitor asks for a person with the widget's button; an agent signed in to the
inbox in another browser context sees the conversation waiting, takes it over and replies; the reply appears in the
widget without a reload; the bot stays silent until the agent hands the conversation back; the agent's correction of
the lead's phone reaches the same Monday.com item. Outside opening hours the same button arranges a callback that
reaches Slack with the phone and the time.

The delay from the agent's click on send to the reply on the visitor's screen is measured (both pages read the same
clock, Date.now()) and printed and written to data/inbox-reply-delay.json, not asserted."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
from playwright.sync_api import Browser, Page, ViewportSize

from deploy.local.staff_login import DEV_NAME
from tests.gateway.test_widget_visitor import BOT_TURN, act_and_wait, complete_lead, open_widget, type_message
from testsupport import backing
from testsupport.browser import Console, axe_violations, chromium, record_rest_calls, screenshot
from testsupport.receivers import HttpReceiver, MondayBoard
from testsupport.stack import UNLIMITED, Gateway, running_stack, sales_env, staff_credentials
from testsupport.waiting import wait_for

DATA = Path(__file__).resolve().parents[2] / "data"
DESKTOP_SIZE: ViewportSize = {"width": 1280, "height": 900}
PHONE_SIZE: ViewportSize = {"width": 360, "height": 740}
ALWAYS_OPEN = "mon-sun 00:00-24:00"
EMAIL = "ola.przejecie@example.com"


def closed_now(zone: str = "Europe/Warsaw") -> str:
    """Opening hours that leave out today (in the zone the service reads them in): it is outside them now."""
    tomorrow = (dt.datetime.now(ZoneInfo(zone)) + dt.timedelta(days=2)).strftime("%a").lower()
    return f"{tomorrow} 08:00-18:00"


@dataclass(frozen=True)
class Staff:
    username: str
    password: str
    display_name: str


@dataclass
class Inbox:
    gw: Gateway
    slack: HttpReceiver
    monday: HttpReceiver
    staff: Staff


@contextlib.contextmanager
def inbox_stack(data_dir: Path, hours: str, replicas: int) -> Iterator[Inbox]:
    """The platform with `replicas` chat replicas on a private PostgreSQL schema per service and a private Redis
    prefix, the agent of the local sign-in, and Slack and Monday.com at local receivers; all removed afterwards."""
    prefix = backing.unique_name("inbox-test") + ":"
    try:
        with backing.service_roles("inbox") as roles, HttpReceiver() as slack, \
                HttpReceiver(respond=MondayBoard) as monday:
            env = {**sales_env(slack, monday), **UNLIMITED, "HANDOFF_HOURS": hours,
                   # The agent counts as present for 20 s (two heartbeats) after each, however loaded the machine;
                   # streams end every 25 s, so the pages reconnect (after the last seq) during the test.
                   "STREAM_HEARTBEAT_S": "10", "STREAM_MAX_S": "25",
                   "REDIS_URL": backing.TEST_REDIS_URL, "REDIS_KEY_PREFIX": prefix}
            per_service = {svc: svc_roles.env(backing.TEST_DATABASE_URL) for svc, svc_roles in roles.items()}
            with running_stack(data_dir, env=env, service_env=per_service, chat_replicas=replicas) as gw:
                yield Inbox(gw, slack, monday, Staff(*staff_credentials(gw), DEV_NAME))
    finally:
        backing.delete_prefix(prefix)


@pytest.fixture(scope="module")
def inbox(tmp_path_factory) -> Iterator[Inbox]:
    with inbox_stack(tmp_path_factory.mktemp("inbox"), ALWAYS_OPEN, replicas=2) as running:
        yield running


@pytest.fixture(scope="module")
def closed_inbox(tmp_path_factory) -> Iterator[Inbox]:
    with inbox_stack(tmp_path_factory.mktemp("inbox-closed"), closed_now(), replicas=1) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


def sign_in(page: Page, base_url: str, user: str, password: str) -> None:
    page.goto(base_url + "/inbox/login")
    page.get_by_label("Login").fill(user)
    page.get_by_label("Hasło").fill(password)
    page.get_by_role("button", name="Zaloguj się").click()
    page.wait_for_url(re.compile(r"/inbox/(#.*)?$"))
    page.locator("#live-state.on").wait_for(timeout=20_000)  # the inbox stream is open: the agent is present


def mark_agent_messages(page: Page) -> None:
    """The visitor's page notes when each agent message appears (Date.now(), the clock the agent's page reads)."""
    page.evaluate("""() => {
      const host = document.querySelector('#novahouse-chat');
      const log = host.shadowRoot.querySelector('.log');
      window.__agentShownAt = [];
      new MutationObserver(records => records.forEach(r => r.addedNodes.forEach(n => {
        if (n.classList && n.classList.contains('agent')) window.__agentShownAt.push([n.textContent, Date.now()]);
      }))).observe(log, {childList: true});
    }""")


def replica_out_of_rotation(gw: Gateway, number: int) -> bool:
    """Envoy's active health check has found chat replica `number` gone (its admin /clusters)."""
    port = gw.stack.config.replica_ports[number - 2]
    clusters = requests.get(f"http://127.0.0.1:{gw.stack.config.envoy_admin_port}/clusters", timeout=5).text
    return f"chat::127.0.0.1:{port}::health_flags::/failed_active_hc" in clusters


def monday_item(monday: HttpReceiver, text: str) -> tuple[str, dict] | None:
    board = monday.responder
    assert isinstance(board, MondayBoard)
    return next(((i, item) for i, item in list(board.items.items()) if text in json.dumps(item)), None)


def both_sizes(page: Page, name: str, shown: str | None = None) -> None:
    """Screenshots at 1280 and 360 px wide, with `shown` (a selector) scrolled into view in each."""
    for size, viewport in (("desktop", DESKTOP_SIZE), ("360", PHONE_SIZE)):
        page.set_viewport_size(viewport)
        if shown:
            page.locator(shown).scroll_into_view_if_needed()
        screenshot(page, f"{name}-{size}")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360 + 1, f"{name} scrolls sideways at 360 px"
    page.set_viewport_size(DESKTOP_SIZE)


def widget_shots(page: Page, name: str) -> None:
    """The widget on a 360 px phone and on a 1280 px desktop; the page is left at 360 px."""
    screenshot(page, f"{name}-360")
    page.set_viewport_size(DESKTOP_SIZE)
    screenshot(page, f"{name}-desktop")
    page.set_viewport_size(PHONE_SIZE)


def test_an_agent_takes_over_replies_hands_back_and_corrects_the_lead(inbox, browser):
    gw, slack, monday, staff = inbox.gw, inbox.slack, inbox.monday, inbox.staff
    agent_ctx = browser.new_context(locale="pl-PL", viewport=DESKTOP_SIZE)
    visitor_ctx = browser.new_context(locale="pl-PL", viewport=PHONE_SIZE)
    try:
        # The agent signs in and has the inbox open.
        inbox_page = agent_ctx.new_page()
        record_rest_calls(inbox_page)
        inbox_console = Console(inbox_page)
        login_page = inbox_page
        login_page.goto(gw.public_url + "/inbox/login")
        assert axe_violations(login_page) == []
        screenshot(login_page, "inbox-login")
        sign_in(inbox_page, gw.public_url, staff.username, staff.password)

        # A visitor leaves a lead (Monday.com gets its item), then asks for a person with the button.
        visitor = visitor_ctx.new_page()
        record_rest_calls(visitor)
        visitor_console = open_widget(visitor, gw.public_url + "/")
        complete_lead(visitor, "Dzień dobry, ile kosztuje wykończenie mieszkania?", "wycen",
                      f"Ola Przejęcie, {EMAIL}, 600 700 800, Warszawa, 64 m2, budżet 200 tys. zł, start od zaraz",
                      "handoff")
        item_id, _ = wait_for(lambda: monday_item(monday, EMAIL), timeout=30, what="the lead's Monday.com item")
        person = visitor.get_by_role("button", name="Porozmawiaj z konsultantem")
        act_and_wait(visitor, person.click)
        visitor.locator(".panel[data-handoff=waiting]").wait_for()
        assert "dołączy do tej rozmowy" in visitor.locator(BOT_TURN).last.inner_text()  # honestly: someone joins now
        assert person.is_hidden()
        widget_shots(visitor, "widget-handoff-waiting")
        assert axe_violations(visitor) == []
        wait_for(lambda: any("/inbox/#/c/" in r.body.decode(errors="replace") for r in slack.requests),
                 timeout=30, what="the Slack alert with the inbox link")

        # The agent sees it waiting (live, no reload), with its waiting time ticking, and opens it.
        waiting = inbox_page.locator("#waiting li", has_text="Ola Przejęcie")
        waiting.wait_for(timeout=20_000)
        assert inbox_page.title().startswith("(1) ")  # seen from another tab too
        ticking = waiting.locator(".wait")
        first = ticking.inner_text()
        inbox_page.wait_for_function("([el, before]) => el.textContent !== before",
                                     arg=[ticking.element_handle(), first])
        inbox_page.locator("#stats tbody tr").first.wait_for()
        both_sizes(inbox_page, "inbox-list")
        assert axe_violations(inbox_page) == []
        waiting.get_by_role("link").click()
        inbox_page.get_by_role("button", name="Przejmij rozmowę").click()
        inbox_page.get_by_label("Odpowiedź dla klienta").wait_for()
        visitor.locator(".panel[data-handoff=agent]").wait_for(timeout=20_000)

        # The agent replies; the visitor's widget shows it with the agent's name, without a reload.
        mark_agent_messages(visitor)
        reply = "Dzień dobry, tu konsultantka NovaHouse. Zadzwonię jeszcze dziś."
        inbox_page.get_by_label("Odpowiedź dla klienta").fill(reply)
        sent_at = inbox_page.evaluate("() => Date.now()")
        inbox_page.get_by_role("button", name="Wyślij odpowiedź").click()
        shown = visitor.locator(".log > .msg.agent", has_text=reply)
        shown.wait_for(timeout=20_000)
        shown_at = visitor.evaluate("() => window.__agentShownAt.map(x => x[1])")[0]
        delay = shown_at - sent_at
        print(f"\nagent send -> visitor display: {delay} ms")
        DATA.mkdir(exist_ok=True)
        (DATA / "inbox-reply-delay.json").write_text(json.dumps({"send_to_display_ms": delay}) + "\n")
        assert staff.display_name in shown.inner_text()
        assert visitor.locator(".log").get_attribute("aria-live") == "polite"
        widget_shots(visitor, "widget-agent-reply")
        assert axe_violations(visitor) == []

        # After a reload, and in a second tab, the widget shows the agent's message and listens again.
        visitor.reload()
        open_widget(visitor, gw.public_url + "/")
        visitor.locator(".log > .msg.agent", has_text=reply).wait_for()
        visitor.locator(".panel[data-handoff=agent]").wait_for()
        second_tab = visitor_ctx.new_page()
        open_widget(second_tab, gw.public_url + "/")
        second_tab.locator(".log > .msg.agent", has_text=reply).wait_for()
        again = "Czy pasuje Pani rozmowa o 15:00?"
        inbox_page.get_by_label("Odpowiedź dla klienta").fill(again)
        inbox_page.get_by_role("button", name="Wyślij odpowiedź").click()
        for tab in (visitor, second_tab):
            tab.locator(".log > .msg.agent", has_text=again).wait_for(timeout=20_000)
        second_tab.close()

        # A rolling update: replica 2 drains (SIGTERM). Whichever of the pages' streams it held end; they reconnect
        # to replica 1, and the next reply still reaches the visitor.
        gw.stack.processes["chat-2"].stop()
        wait_for(lambda: replica_out_of_rotation(gw, 2), timeout=30, what="Envoy to stop sending to replica 2")
        third = "Przygotuję wycenę do jutra."
        inbox_page.get_by_label("Odpowiedź dla klienta").fill(third)
        inbox_page.get_by_role("button", name="Wyślij odpowiedź").click()
        visitor.locator(".log > .msg.agent", has_text=third).wait_for(timeout=30_000)
        gw.stack.start_chat_replica(2)

        # While the agent holds it the bot is silent; the visitor's message reaches the agent's transcript live.
        bot_turns = visitor.locator(".log > .msg.bot[data-intent]").count()
        question = "Czy można rozłożyć płatność na raty?"
        with visitor.expect_response(lambda r: r.url.endswith("/api/chatbot/chat")) as answered:
            visitor.locator("input").fill(question)
            visitor.keyboard.press("Enter")
        assert answered.value.json()["reply"] == "" and answered.value.json()["handoff"] == "agent"
        inbox_page.locator("#transcript .m.user", has_text=question).wait_for(timeout=20_000)
        assert visitor.locator(".log > .msg.bot[data-intent]").count() == bot_turns
        both_sizes(inbox_page, "inbox-transcript", "#transcript")
        assert axe_violations(inbox_page) == []

        # The agent corrects the lead's phone: the same Monday.com item is updated.
        phone = inbox_page.get_by_label("Telefon")
        phone.fill("+48 601 234 999")
        inbox_page.get_by_role("button", name="Zapisz poprawki").click()
        inbox_page.get_by_text("Poprawki zapisane").wait_for()
        assert phone.input_value() == "+48601234999"  # as stored, in the form every number is kept in
        wait_for(lambda: "601234999" in json.dumps(monday.responder.items.get(item_id, {})).replace(" ", ""),
                 timeout=30, what="the corrected phone on the same Monday.com item")
        assert len([1 for item in monday.responder.items.values() if EMAIL in json.dumps(item)]) == 1
        inbox_page.get_by_label("Status").select_option("contacted")
        inbox_page.get_by_role("button", name="Ustaw status").click()
        inbox_page.locator("#lead-summary", has_text="status: kontakt nawiązany").wait_for()
        both_sizes(inbox_page, "inbox-lead-form", "#status-form")
        inbox_page.get_by_role("link", name="Wszystkie rozmowy").click()
        inbox_page.locator("#leads tr", has_text="+48601234999").wait_for()  # today's leads show the correction
        inbox_page.locator("#live li", has_text="Ola Przejęcie").get_by_role("link").click()

        # Handed back, the bot answers again and the button is offered again.
        inbox_page.get_by_role("button", name="Oddaj botowi").click()
        visitor.locator(".log > .msg.sys").wait_for(timeout=20_000)
        assert visitor.locator(".panel[data-handoff]").count() == 0
        assert person.is_visible()
        type_message(visitor, "Ile trwa remont łazienki?")
        assert visitor.locator(".log > .msg.bot[data-intent]").count() > bot_turns

        # The numbers count today's handoff and the first reply.
        inbox_page.goto(gw.public_url + "/inbox/#/")
        inbox_page.locator("#stats tbody tr").first.wait_for()
        handoffs = inbox_page.locator("#stats tbody tr", has_text="Przekazania").locator("td").first
        wait_for(lambda: int(handoffs.inner_text()) >= 1, timeout=10, what="the handoff counted")
        both_sizes(inbox_page, "inbox-stats", "#stats")

        # Signed out, the inbox is closed again.
        inbox_page.get_by_role("button", name="Wyloguj").click()
        inbox_page.wait_for_url(re.compile(r"/inbox/login$"))
        assert inbox_page.request.get(gw.public_url + "/api/inbox/stats").status in (401, 403)
        assert visitor_console.csp_violations() == [] and inbox_console.csp_violations() == []
    finally:
        visitor_ctx.close()
        agent_ctx.close()


def test_outside_opening_hours_the_button_arranges_a_callback(closed_inbox, browser):
    gw, slack = closed_inbox.gw, closed_inbox.slack
    context = browser.new_context(locale="pl-PL", viewport=PHONE_SIZE)
    try:
        page = context.new_page()
        open_widget(page, gw.public_url + "/")
        act_and_wait(page, page.get_by_role("button", name="Porozmawiaj z konsultantem").click)
        assert page.locator(".panel").get_attribute("data-handoff") == "callback"
        assert "telefon od konsultanta" in page.locator(".log > .msg.bot[data-intent]").last.inner_text()
        act_and_wait(page, page.locator(".consent button.yes:enabled").last.click)
        type_message(page, "Barbara Lis")
        type_message(page, "601 602 699")
        type_message(page, "jutro po 17")
        screenshot(page, "widget-callback")

        def request_in_slack() -> bool:
            return any("+48601602699" in r.body.decode(errors="replace") and "17:00" in r.body.decode(errors="replace")
                       for r in slack.requests)

        wait_for(request_in_slack, timeout=30, what="the callback request in Slack with the phone and the time")

        # In English, from the keyboard alone.
        english = browser.new_context(locale="en-GB", viewport=PHONE_SIZE)
        try:
            page = english.new_page()
            open_widget(page, gw.public_url + "/")
            page.get_by_role("button", name="Talk to a person").focus()
            act_and_wait(page, lambda: page.keyboard.press("Enter"))
            assert page.locator(".panel").get_attribute("data-handoff") == "callback"
            assert "call from a consultant" in page.locator(".log > .msg.bot[data-intent]").last.inner_text()
            assert page.get_by_role("button", name="Talk to a person").is_hidden()
        finally:
            english.close()
    finally:
        context.close()
