"""Erasure and seeing one's status need proof of control of the mailbox: the whole platform through Envoy, on
PostgreSQL, with the real SMTP receiver; the confirmation link is read from the email it received.

The public route never acts: it emails a signed, single-use, expiring link; opening the link shows a button and
changes nothing; only the page's POST acts. Without a token every address gets the same answer. Unsubscribing stays
immediate and answers the same for every address. Verification emails are throttled per address.
"""
from __future__ import annotations

import base64
import itertools
import os
import re
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import pytest

from novahouse.consent.v1 import consent_pb2, consent_pb2_grpc
from novahouse.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from services.consent.action_tokens import ActionTokens
from services.runtime.clock import utcnow
from testsupport.stack import postgres_platform
from testsupport.waiting import wait_for

PUBLIC_BASE_URL = "https://novahouse.example"
HMAC_KEY = os.urandom(32)
EMAILS_PER_HOUR = 3
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with postgres_platform(tmp_path_factory.mktemp("verified"), "verified", {
        "consent": {
            "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "CONSENT_HMAC_KEY": base64.b64encode(HMAC_KEY).decode(),
            "CONSENT_KEY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
            "CONSENT_VERIFICATION_EMAILS_PER_HOUR": str(EMAILS_PER_HOUR),
            "CONSENT_ERASURE_RETRY_S": "0.1",
            "CONSENT_ERASURE_POLL_S": "0.5",
        },
    }) as platform:
        yield platform


def new_email() -> str:
    return f"person.{next(_numbers)}.{uuid.uuid4().hex[:8]}@example.org"


def opt_in(platform, email: str) -> None:
    request = consent_pb2.RecordConsentRequest(
        email=email, processing_consent=True, marketing_consent=True, text_version="v1", source="test",
    )
    consent_pb2_grpc.ConsentInternalStub(platform.gw.channel(admin=True)).RecordConsent(request, timeout=10)


def ledger_actions(platform, email: str) -> list[str]:
    """What the admin export shows for this person: empty once the erasure completed."""
    response = platform.gw.rest("GET", f"/api/admin/consent/subjects/{email}/ledger", admin=True)
    assert response.status_code == 200, response.text
    return [entry["action"] for entry in response.json()["entries"]]


def marketing_on(platform, email: str) -> bool:
    stub = consent_pb2_grpc.ConsentInternalStub(platform.gw.channel(admin=True))
    return stub.GetMarketingConsent(consent_pb2.GetMarketingConsentRequest(email=email), timeout=10).allowed


def emailed_link(platform, email: str, count: int = 1) -> str:
    """The confirmation link of the count-th email this address received (waits for it)."""
    messages = wait_for(lambda: (m := platform.smtp.to(email)) and len(m) >= count and m, 30, f"email {count}")
    [link] = re.findall(r"https://\S+", messages[count - 1].body)
    return link


def local(link: str) -> str:
    """The emailed link, through the test's gateway instead of PUBLIC_BASE_URL."""
    assert link.startswith(f"{PUBLIC_BASE_URL}/api/confirm?token=")
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


def confirm(platform, link_or_token: str):
    """The confirmation page's POST, as a browser sends it."""
    path = local(link_or_token) if link_or_token.startswith("https://") else f"/api/confirm?token={link_or_token}"
    return platform.gw.rest("POST", path, data="confirm=yes", headers=FORM)


def wait_until_sent(platform) -> None:
    """Every delivery the notifier holds has been attempted (the consent route queues its email before answering)."""
    stub = notifier_pb2_grpc.NotifierAdminStub(platform.gw.channel(admin=True))
    wait_for(lambda: stub.GetDlqStats(notifier_pb2.GetDlqStatsRequest(), timeout=10).pending == 0, 30, "sends")


def test_revoke_erases_only_after_the_emailed_page_is_confirmed(platform):
    email = new_email()
    opt_in(platform, email)

    asked = platform.gw.rest("POST", "/api/revoke-consent", json={"email": email, "reason": "Forget me"})
    assert asked.status_code == 200, asked.text
    assert asked.json()["message"] and asked.json()["processing_consent"] is False
    link = emailed_link(platform, email)
    assert email not in link and email.split("@")[0] not in link  # the address travels in no URL
    assert ledger_actions(platform, email) == ["opt-in"] and marketing_on(platform, email)  # anonymous: nothing

    page = platform.gw.rest("GET", local(link))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.text
    assert 'method="post"' in page.text and "Erase my data" in page.text
    assert platform.gw.rest("GET", local(link)).status_code == 200  # a scanner opening it twice changes nothing
    assert ledger_actions(platform, email) == ["opt-in"] and marketing_on(platform, email)

    done = confirm(platform, link)
    assert done.status_code == 200 and "being erased" in done.text, done.text
    assert not marketing_on(platform, email)
    wait_for(lambda: ledger_actions(platform, email) == [], 30, "the erasure to complete")

    again = confirm(platform, link)
    assert again.status_code in (400, 403) and "already used" in again.json()["message"], again.text
    assert platform.gw.rest("GET", local(link)).status_code in (400, 403)


def test_a_tampered_or_expired_token_is_refused_and_changes_nothing(platform):
    email = new_email()
    opt_in(platform, email)
    platform.gw.rest("POST", "/api/revoke-consent", json={"email": email})
    token = local(emailed_link(platform, email)).split("token=", 1)[1]
    payload, mac = token.split(".")
    expired_claim = ActionTokens(HMAC_KEY, timedelta(minutes=-1)).issue(email, "erase", utcnow())
    expired = ActionTokens(HMAC_KEY, timedelta(minutes=60)).seal(expired_claim)
    forged = ActionTokens(os.urandom(32), timedelta(minutes=60))
    not_ours = forged.seal(forged.issue(email, "erase", utcnow()))
    flipped = payload[:10] + ("A" if payload[10] != "A" else "B") + payload[11:]
    for bad, why in [(f"{flipped}.{mac}", "not valid"), (f"{payload}.{mac[:-1]}x", "not valid"),
                     (not_ours, "not valid"), ("nonsense", "not valid"), (expired, "expired")]:
        for response in (platform.gw.rest("GET", f"/api/confirm?token={bad}"), confirm(platform, bad)):
            assert response.status_code in (400, 403), (why, response.text)
            assert why in response.json()["message"], response.text
    assert ledger_actions(platform, email) == ["opt-in"] and marketing_on(platform, email)


def test_status_without_a_token_answers_alike_for_known_and_unknown_and_the_link_shows_it(platform):
    known, unknown = new_email(), new_email()
    opt_in(platform, known)

    answers = [platform.gw.rest("GET", f"/api/unsubscribe/status/{address}") for address in (known, unknown)]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json() | {"email": known}
    posted = platform.gw.rest("POST", "/api/unsubscribe/status", json={"email": unknown})  # no address in the URL
    assert posted.status_code == 200 and posted.json() == answers[1].json()

    link = emailed_link(platform, known)
    page = platform.gw.rest("GET", local(link))
    assert "Show my consent status" in page.text and "<table" not in page.text  # opening it reveals nothing
    shown = confirm(platform, link)
    assert shown.status_code == 200, shown.text
    assert "Marketing emails</th><td>yes" in shown.text and "Processing of your data</th><td>yes" in shown.text
    assert confirm(platform, link).status_code in (400, 403)
    assert "Nothing is on record" in confirm(platform, emailed_link(platform, unknown)).text


def test_unsubscribe_is_immediate_and_answers_alike_for_known_and_unknown(platform):
    known, unknown = new_email(), new_email()
    opt_in(platform, known)
    answers = [platform.gw.rest("POST", "/api/unsubscribe", json={"email": address}) for address in (known, unknown)]
    assert [a.status_code for a in answers] == [200, 200]
    bodies = [{k: v for k, v in a.json().items() if k not in ("email", "last_action_at")} for a in answers]
    assert bodies[0] == bodies[1] and bodies[0]["marketing_consent"] is False
    assert not marketing_on(platform, known)
    assert platform.smtp.to(known) == [] and platform.smtp.to(unknown) == []  # no proof asked


def test_verification_emails_are_throttled_per_address(platform):
    email, other = new_email(), new_email()
    answers = [platform.gw.rest("GET", f"/api/unsubscribe/status/{email}") for _ in range(EMAILS_PER_HOUR + 1)]
    assert {a.status_code for a in answers} == {200} and len({a.text for a in answers}) == 1
    assert platform.gw.rest("POST", "/api/revoke-consent", json={"email": email}).status_code == 200
    platform.gw.rest("GET", f"/api/unsubscribe/status/{other}")
    wait_until_sent(platform)
    assert len(platform.smtp.to(email)) == EMAILS_PER_HOUR
    assert len(platform.smtp.to(other)) == 1  # per address: another one is not held back


def test_export_is_answered_only_from_the_confirmed_page_and_once(platform):
    email, unknown = new_email(), new_email()
    opt_in(platform, email)
    answers = [platform.gw.rest("POST", "/api/export", json={"email": address}) for address in (email, unknown)]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json() | {"email": email}

    link = emailed_link(platform, email)
    page = platform.gw.rest("GET", local(link))
    assert page.status_code == 200 and "Download my data" in page.text and "opt-in" not in page.text

    document = confirm(platform, link)
    assert document.status_code == 200 and document.headers["content-type"].startswith("application/json")
    assert document.json()["email"] == email
    assert [entry["action"] for entry in document.json()["consent"]["ledger"]] == ["opt-in"]
    assert confirm(platform, link).status_code in (400, 403)


def test_no_log_of_envoy_or_the_services_holds_an_address_or_a_token(platform):
    email = new_email()
    opt_in(platform, email)
    platform.gw.rest("GET", f"/api/unsubscribe/status/{email}")  # the seeds' path, with the address in it
    link = emailed_link(platform, email)
    confirm(platform, link)
    token = local(link).split("token=", 1)[1]
    logs = {path.name: path.read_text(errors="replace") for path in platform.gw.stack.config.data_dir.rglob("*.log")}
    assert {"envoy.log", "consent.log", "notifier.log"} <= set(logs), sorted(logs)
    for name, text in logs.items():
        assert email not in text and email.split("@")[0] not in text and token not in text, name
