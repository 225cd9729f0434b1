"""The chat widget as a visitor uses it: headless Chromium opens the demo page the gateway serves (or a partner's page
on another origin that embeds the one script tag), chats, gives consent with the buttons, and the lead reaches the
local Monday.com board. Also what Envoy promises about the files (compression, cache, content hash, CSP) and CORS.

The lead flow is driven by what the bot shows, not by a fixed script: whenever a consent prompt appears the visitor
agrees with its button, and the details are typed once, in one message, when the bot first asks for something else;
so the order of the consent prompts and the detail questions may change without breaking these tests."""
from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterator

import pytest
import requests
import yaml
from playwright.sync_api import Browser, BrowserContext, Page

from deploy.local.processes import free_port
from gateway.envoy import render
from testsupport.browser import Console, HostPage, axe_violations, chromium, screenshot
from testsupport.receivers import HttpReceiver, MondayBoard
from testsupport.stack import UNLIMITED, Gateway, extra_gateway, running_stack, sales_env
from testsupport.waiting import wait_for

PHONE = {"viewport": {"width": 360, "height": 740}}
BOT_TURN = ".log > .msg.bot[data-intent], .log > .consent, .log > .note"
WIDGET_GZIP_LIMIT = 50 * 1024


@pytest.fixture(scope="module")
def partner_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def monday() -> Iterator[HttpReceiver]:
    with HttpReceiver(respond=MondayBoard) as receiver:
        yield receiver


@pytest.fixture(scope="module")
def gw(tmp_path_factory, monday, partner_port) -> Iterator[Gateway]:
    with HttpReceiver() as slack:
        env = {**sales_env(slack, monday), "ALLOWED_ORIGINS": f"http://127.0.0.1:{partner_port}", **UNLIMITED}
        with running_stack(tmp_path_factory.mktemp("widget"), env=env) as gateway:
            yield gateway


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@pytest.fixture
def context(browser) -> Iterator[BrowserContext]:
    """A fresh visitor (own localStorage) on a 360 px wide phone, Polish browser."""
    ctx = browser.new_context(locale="pl-PL", **PHONE)
    yield ctx
    ctx.close()


def open_widget(page: Page, url: str) -> Console:
    console = Console(page)
    page.goto(url)
    page.get_by_role("button", name=re.compile("czat|chat", re.I)).first.click()
    page.locator(".panel").wait_for()
    return console


def bot_turns(page: Page) -> int:
    return page.locator(BOT_TURN).count()


def act_and_wait(page: Page, action) -> None:
    """Do something that sends a message, then wait for the bot's next turn (an answer, a consent prompt or a
    notice)."""
    before = bot_turns(page)
    action()
    page.locator(BOT_TURN).nth(before).wait_for(timeout=20_000)


def type_message(page: Page, text: str, *, fill: bool = True) -> None:
    """Type a message and send it with Enter; fill=False types into whatever has the focus, key by key."""
    def send() -> None:
        if fill:
            page.locator("input").fill(text)
        else:
            page.keyboard.type(text)
        page.keyboard.press("Enter")

    act_and_wait(page, send)


def complete_lead(page: Page, question: str, quote: str, details: str, shot: str) -> None:
    """Ask the price question, ask for a quote (its button when offered), then answer whatever comes: agree to each
    consent prompt by its button, type the details once; until the widget shows the lead stored."""
    type_message(page, question)
    quote_button = page.locator(".chips button", has_text=re.compile(quote, re.I))
    if quote_button.count():
        act_and_wait(page, quote_button.first.click)
    else:
        type_message(page, quote)
    details_sent = checked_accessibility = False
    for _ in range(8):
        if page.locator(".panel[data-lead=stored]").count():
            return
        agree = page.locator(".consent button.yes:enabled")
        if agree.count():
            link = page.locator(".consent").last.get_by_role("link").get_attribute("href") or ""
            assert link.endswith(f"/privacy#{page.locator('.panel').get_attribute('lang')}")
            if not checked_accessibility:
                screenshot(page, f"{shot}-consent")
                assert axe_violations(page) == []
                checked_accessibility = True
            act_and_wait(page, agree.last.click)
        elif not details_sent:
            type_message(page, details)
            details_sent = True
        else:
            last = page.locator(BOT_TURN).last.inner_text()
            raise AssertionError(f"the bot asked for more after every detail was given: {last!r}")
    raise AssertionError("no lead stored after 8 turns")


def monday_item_with(monday: HttpReceiver, email: str) -> dict | None:
    board = monday.responder
    assert isinstance(board, MondayBoard)
    return next((item for item in list(board.items.values()) if email in json.dumps(item)), None)


def test_polish_visitor_asks_a_price_and_leaves_a_lead_with_consent_buttons_and_monday_gets_it(gw, context, monday):
    page = context.new_page()
    console = open_widget(page, gw.public_url + "/")
    assert page.locator(".panel").get_attribute("lang") == "pl"
    assert page.locator(".consent").count() == 0  # nothing is asked, let alone pre-ticked, before the bot asks
    email = "jan.widget@example.com"
    complete_lead(page, "Dzień dobry, ile kosztuje wykończenie mieszkania?", "wycen",
                  f"Jan Kowalski, {email}, 600 700 800, Warszawa, 85 m2, budżet 250 tys. zł, start od zaraz", "pl")
    screenshot(page, "pl-lead-stored")
    item = wait_for(lambda: monday_item_with(monday, email), timeout=30, what="the lead's Monday.com item")
    assert "Jan Kowalski" in json.dumps(item, ensure_ascii=False)
    assert console.csp_violations() == []
    stored = page.evaluate("() => Object.keys(localStorage)")
    assert stored == ["novahouse-chat"]
    assert set(json.loads(page.evaluate("() => localStorage.getItem('novahouse-chat')"))) == {"session_id", "secret"}


def test_english_visitor_gets_an_english_widget_and_leaves_a_lead(gw, browser, monday):
    context = browser.new_context(locale="en-GB", **PHONE)
    try:
        page = context.new_page()
        console = open_widget(page, gw.public_url + "/")
        assert page.locator(".panel").get_attribute("lang") == "en"
        assert page.get_by_role("button", name="Forget this conversation").is_visible()
        email = "john.widget@example.org"
        complete_lead(page, "Hello, how much does a flat renovation cost?", "quote",
                      f"John Smith, {email}, +48 601 234 567, Gdansk, 60 sqm, budget 150k PLN, start next month",
                      "en")
        screenshot(page, "en-lead-stored")
        wait_for(lambda: monday_item_with(monday, email), timeout=30, what="the lead's Monday.com item")
        assert console.csp_violations() == []
    finally:
        context.close()


def test_a_reload_and_a_second_tab_keep_the_conversation_and_forget_ends_it(gw, context):
    page = context.new_page()
    open_widget(page, gw.public_url + "/")
    type_message(page, "Ile trwa remont łazienki?")
    said = page.locator(".log > .msg").all_inner_texts()

    page.reload()
    page.get_by_role("button", name=re.compile("czat", re.I)).click()
    page.locator(".log > .msg.user").first.wait_for()
    assert page.locator(".log > .msg").all_inner_texts() == said

    second = context.new_page()
    open_widget(second, gw.public_url + "/")
    second.locator(".log > .msg.user").first.wait_for()
    assert "Ile trwa remont łazienki?" in second.locator(".log > .msg.user").first.inner_text()

    second.get_by_role("button", name="Zapomnij rozmowę").click()
    assert second.locator(".log > .msg.user").count() == 0
    assert second.evaluate("() => localStorage.getItem('novahouse-chat')") is None
    page.reload()
    page.get_by_role("button", name=re.compile("czat", re.I)).click()
    page.locator(".log > .msg.bot").first.wait_for()
    assert page.locator(".log > .msg.user").count() == 0


def test_a_reload_while_consent_is_asked_brings_back_its_buttons(gw, browser):
    context = browser.new_context(locale="pl-PL", **PHONE)
    try:
        page = context.new_page()
        open_widget(page, gw.public_url + "/")
        type_message(page, "Chcę wycenę remontu")
        page.locator(".consent button.yes:enabled").wait_for()

        page.reload()
        page.get_by_role("button", name=re.compile("czat", re.I)).click()
        agree = page.locator(".consent button.yes:enabled")
        agree.wait_for()
        assert page.locator(".consent").count() == 1  # the notice once, on its card, not also in the bubble
        act_and_wait(page, agree.click)
        assert "Jak się nazywasz?" in page.locator(BOT_TURN).last.inner_text()
    finally:
        context.close()


def test_keyboard_only_screen_reader_and_accessibility_check(gw, context):
    page = context.new_page()
    page.goto(gw.public_url + "/")
    page.locator("#novahouse-chat[data-ready]").wait_for(state="attached")
    ready_ms = page.evaluate("() => performance.getEntriesByName('novahouse-chat-ready')[0].startTime")
    print(f"\nlauncher interactive {ready_ms:.0f} ms after navigation start")
    screenshot(page, "demo-page-closed")
    assert axe_violations(page) == []

    for _ in range(10):  # Tab through the page until the launcher has the focus
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement && document.activeElement.id") == "novahouse-chat" and \
                page.locator(".launcher").evaluate("b => b.getRootNode().activeElement === b"):
            break
    else:
        raise AssertionError("Tab never reached the launcher")
    page.keyboard.press("Enter")
    assert page.locator(".launcher").get_attribute("aria-expanded") == "true"
    assert page.locator("input").evaluate("i => i.getRootNode().activeElement === i")
    assert page.locator(".log").get_attribute("role") == "log"
    assert page.locator(".log").get_attribute("aria-live") == "polite"
    type_message(page, "Ile kosztuje wykończenie mieszkania?", fill=False)
    assert page.locator(".chips button").count() >= 1
    box = page.locator(".panel").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360
    screenshot(page, "pl-answer-with-quick-replies")
    assert axe_violations(page) == []
    page.keyboard.press("Escape")
    assert page.locator(".panel").is_hidden()
    assert page.locator(".launcher").evaluate("b => b.getRootNode().activeElement === b")


def test_a_partner_site_on_another_origin_embeds_the_one_tag_and_chats(gw, browser, partner_port):
    with HostPage(partner_port, gw.public_url) as partner:
        context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800})
        try:
            page = context.new_page()
            console = open_widget(page, partner.url + "/")
            type_message(page, "Do you work in Krakow?")
            assert page.locator(".log > .msg.bot[data-intent]").count() == 1
            assert page.locator(".log > .note").count() == 0
            screenshot(page, "partner-site")
            assert not [line for line in console.lines if "CORS" in line]
        finally:
            context.close()


def test_a_preflight_and_a_request_from_an_origin_not_listed_get_no_cors_headers(gw, partner_port):
    chat = gw.public_url + "/api/chatbot/chat"
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    allowed = requests.options(chat, headers={"origin": f"http://127.0.0.1:{partner_port}", **preflight}, timeout=10)
    assert allowed.headers["access-control-allow-origin"] == f"http://127.0.0.1:{partner_port}"
    assert "x-session-secret" in allowed.headers["access-control-allow-headers"]

    stranger = "http://127.0.0.1:1"
    refused = requests.options(chat, headers={"origin": stranger, **preflight}, timeout=10)
    assert refused.status_code == 403
    assert not [name for name in refused.headers if name.lower().startswith("access-control-")]
    answered = requests.post(chat, json={"message": "Dzień dobry"}, headers={"origin": stranger}, timeout=10)
    assert answered.status_code == 200
    assert not [name for name in answered.headers if name.lower().startswith("access-control-")]


def test_the_files_are_compressed_cached_by_content_hash_small_and_under_a_csp(gw):
    loader = requests.get(gw.public_url + "/widget/v1/widget.js", timeout=10)
    assert loader.headers["content-type"].startswith("application/javascript")
    assert loader.headers["cache-control"] == "public, max-age=300"
    hashed_path = re.search(r"/widget/v1/widget\.([0-9a-f]{16})\.js", loader.text)
    assert hashed_path

    raw = requests.get(gw.public_url + hashed_path.group(0), headers={"accept-encoding": "gzip"}, timeout=10,
                       stream=True)
    body = raw.raw.read()
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.headers["cache-control"] == "public, max-age=31536000, immutable"
    widget = gzip.decompress(body)
    assert hashlib.sha256(widget).hexdigest()[:16] == hashed_path.group(1)
    print(f"\nwidget: {len(widget)} bytes, {len(body)} gzipped")
    assert len(body) <= WIDGET_GZIP_LIMIT

    page = requests.get(gw.public_url + "/", timeout=10)
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "'unsafe-inline'" not in csp
    css = re.search(r'href="(/site\.[0-9a-f]{16}\.css)"', page.text)
    assert css and requests.get(gw.public_url + css.group(1), timeout=10).headers["content-type"].startswith("text/css")
    for path in ("/privacy", "/widget/v1/widget.js", hashed_path.group(0)):
        assert "default-src 'none'" in requests.get(gw.public_url + path, timeout=10).headers["content-security-policy"]
    notice = requests.get(gw.public_url + "/privacy", timeout=10).text
    assert 'id="pl"' in notice and 'id="en"' in notice


def test_a_rate_limited_visitor_is_told_when_to_try_again(gw, context, tmp_path):
    # A limiter slower than its 50 ms budget on a busy machine would let the third message through (fail-open).
    env = {"CHAT_RATE_LIMIT": "2 per minute", "RATELIMIT_TIMEOUT_MS": "5000"}
    with extra_gateway(gw, tmp_path, env=env) as limited:
        page = context.new_page()
        open_widget(page, limited.public_url + "/")
        type_message(page, "Dzień dobry")
        type_message(page, "Ile kosztuje łazienka?")
        type_message(page, "A kuchnia?")
        assert page.locator(".log > .note").count() == 1, page.locator(".log > .msg").all_inner_texts()
        notice = page.locator(".log > .note").last.inner_text()
        assert re.fullmatch(r"Za dużo wiadomości w krótkim czasie\. Spróbuj ponownie za [1-9][0-9]* s\.", notice)
        assert page.locator("input").input_value() == "A kuchnia?"  # kept, to send again later
        screenshot(page, "pl-rate-limited")


def test_a_message_chat_refuses_is_a_friendly_message(gw, context):
    page = context.new_page()
    open_widget(page, gw.public_url + "/")
    too_long = "Czy " + "bardzo " * 300 + "długa wiadomość przejdzie?"  # past CHAT_MAX_MESSAGE_CHARS (2000)
    page.locator("input").evaluate("(input, text) => { input.value = text; }", too_long)  # past maxlength too

    act_and_wait(page, lambda: page.keyboard.press("Enter"))
    assert page.locator(".log > .note").last.inner_text() == \
        "Nie udało się wysłać tej wiadomości. Sprawdź, czy nie jest za długa, i spróbuj ponownie."
    assert page.locator("input").input_value() == too_long


def test_an_outage_of_chat_is_a_friendly_message(gw, context):
    page = context.new_page()
    open_widget(page, gw.public_url + "/")
    gw.stack.processes["chat"].stop()
    try:
        type_message(page, "Dzień dobry")
        assert page.locator(".log > .note").last.inner_text() == \
            "Czat jest chwilowo niedostępny. Spróbuj ponownie za chwilę."
        screenshot(page, "pl-outage")
    finally:
        gw.stack.start_service("chat")


def test_allowed_origins_are_exact_origins_checked_when_the_config_is_rendered():
    for wrong in ("*", "https://www.example.pl/shop", "www.example.pl", " , "):
        with pytest.raises(ValueError, match="ALLOWED_ORIGINS"):
            render({"ALLOWED_ORIGINS": wrong})
    config = yaml.safe_load(render({"ALLOWED_ORIGINS": "https://www.example.pl, http://localhost:3000/"}))
    public = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    policy = public["route_config"]["virtual_hosts"][0]["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert policy["allow_origin_string_match"] == [{"exact": "https://www.example.pl"},
                                                   {"exact": "http://localhost:3000"}]
