"""Every marketing send obeys the person's latest objection: the whole platform through Envoy, on PostgreSQL, with
the real SMTP receiver.

The notifier asks consent before every attempt of a marketing email (the first, each retry, each DLQ replay) and
cancels it once marketing consent is off; while consent does not answer, the email waits without using up its
retries. The latest statement wins whichever chat it came through. Every follow-up states the right to object and
carries a one-click unsubscribe link (RFC 8058) that works through the gateway with exactly a mail client's POST.
"""
from __future__ import annotations

import itertools
import uuid
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest

from novahouse.consent.v1 import consent_pb2, consent_pb2_grpc
from novahouse.notifier.v1 import notifier_pb2 as pb
from novahouse.notifier.v1 import notifier_pb2_grpc
from testsupport.stack import postgres_platform
from testsupport.waiting import wait_for

PUBLIC_BASE_URL = "https://novahouse.example"
ONE_CLICK_BODY = "List-Unsubscribe=One-Click"
_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with postgres_platform(tmp_path_factory.mktemp("objection"), "objection", {
        # Follow-ups only when a test runs them (no scheduler), one second after the visitor's last message.
        "chat": {"SCHEDULER_ENABLED": "false", "FOLLOWUP_DELAYS": "1s,1000s,2000s"},
        "consent": {"PUBLIC_BASE_URL": PUBLIC_BASE_URL},
        "notifier": {
            "DLQ_RETRY_DELAY_SECONDS": "0.2", "DLQ_MAX_DELAY_SECONDS": "0.5", "DLQ_POLL_INTERVAL_S": "0.2",
            "DLQ_MAX_RETRIES": "50", "CB_FAIL_MAX": "1000", "NOTIFIER_CONSENT_TIMEOUT_S": "1",
        },
    }) as platform:
        yield platform


@pytest.fixture(autouse=True)
def smtp_works(platform):
    platform.smtp.recover()
    yield
    platform.smtp.recover()


def new_email() -> str:
    return f"visitor.{next(_numbers)}.{uuid.uuid4().hex[:8]}@example.org"


def consent_internal(platform):
    return consent_pb2_grpc.ConsentInternalStub(platform.gw.channel(admin=True))


def notifier_internal(platform):
    return notifier_pb2_grpc.NotifierInternalStub(platform.gw.channel(admin=True))


def opt_in(platform, email: str, marketing: bool = True) -> None:
    request = consent_pb2.RecordConsentRequest(
        email=email, processing_consent=True, marketing_consent=marketing, text_version="v1", source="test",
    )
    consent_internal(platform).RecordConsent(request, timeout=10)


def marketing_on(platform, email: str) -> bool:
    """As the notifier asks it (the public status route only emails the person a link)."""
    request = consent_pb2.GetMarketingConsentRequest(email=email)
    return consent_internal(platform).GetMarketingConsent(request, timeout=10).allowed


def unsubscribe(platform, email: str) -> None:
    response = platform.gw.rest("POST", "/api/unsubscribe", json={"email": email, "reason": "no more"})
    assert response.status_code == 200 and response.json()["marketing_consent"] is False, response.text


def queue_marketing_email(platform, email: str) -> str:
    key = f"marketing-test:{uuid.uuid4().hex}"
    message = pb.Email(to=email, subject="Your renovation", body="Shall we book a consultation?")
    request = pb.NotifyRequest(idempotency_key=key, email=message, purpose=pb.PURPOSE_MARKETING)
    notifier_internal(platform).Notify(request, timeout=10)
    return key


def delivery(platform, key: str) -> pb.Delivery:
    return notifier_internal(platform).GetDelivery(pb.GetDeliveryRequest(idempotency_key=key), timeout=10)


def wait_status(platform, key: str, status: int, timeout: float = 30.0) -> pb.Delivery:
    return wait_for(
        lambda: (d := delivery(platform, key)).status == status and d, timeout,
        f"{key} to become {pb.DeliveryStatus.Name(status)}",
    )


# --- the notifier asks consent before every attempt --------------------------------------------------------------

def test_an_email_that_names_no_purpose_is_taken_for_marketing_and_asks_consent(platform):
    """An older caller that names no purpose: an email to a person is never sent on the guess that it is not
    marketing; the recipient's objection cancels it."""
    email = new_email()
    opt_in(platform, email)
    unsubscribe(platform, email)
    key = f"no-purpose:{uuid.uuid4().hex}"
    message = pb.Email(to=email, subject="Hello again", body="Still interested?")
    notifier_internal(platform).Notify(pb.NotifyRequest(idempotency_key=key, email=message), timeout=10)

    cancelled = wait_status(platform, key, pb.CANCELLED)
    assert cancelled.purpose == pb.PURPOSE_MARKETING
    assert not platform.smtp.to(email)


def test_unsubscribing_between_a_failed_attempt_and_its_retry_cancels_the_retry(platform):
    email = new_email()
    opt_in(platform, email)
    platform.smtp.fail(451)  # every attempt fails temporarily until the test recovers the server
    key = queue_marketing_email(platform, email)
    # A claim counts the attempt before it is made: wait for its failure to be recorded.
    wait_for(lambda: "451" in delivery(platform, key).last_error, 30, "a first, failed attempt")
    unsubscribe(platform, email)
    platform.smtp.recover()

    cancelled = wait_status(platform, key, pb.CANCELLED)
    assert "marketing consent is off" in cancelled.last_error and cancelled.purpose == pb.PURPOSE_MARKETING
    assert platform.smtp.to(email) == []
    listed = platform.gw.rest("GET", "/api/dlq/pending", admin=True).json()["entries"]
    assert [e["status"] for e in listed if e["idempotency_key"] == key] == ["CANCELLED"]
    assert int(platform.gw.rest("GET", "/api/dlq/stats", admin=True).json()["cancelled"]) >= 1


def test_unsubscribing_then_replaying_the_dlq_sends_nothing(platform):
    email = new_email()
    opt_in(platform, email)
    platform.smtp.fail(550)  # a permanent refusal: the delivery is DEAD
    key = queue_marketing_email(platform, email)
    wait_status(platform, key, pb.DEAD)
    unsubscribe(platform, email)
    platform.smtp.recover()

    replay = platform.gw.rest(
        "POST", "/api/dlq/replay", admin=True, json={"delivery_ids": [delivery(platform, key).delivery_id]}
    )
    assert replay.status_code == 200 and replay.json()["replayed"] == 1
    wait_status(platform, key, pb.CANCELLED)
    assert platform.smtp.to(email) == []
    again = platform.gw.rest("POST", "/api/dlq/replay", admin=True, json={"all_failed": True})
    assert again.status_code == 200
    assert delivery(platform, key).status == pb.CANCELLED and platform.smtp.to(email) == []


def test_a_marketing_email_waits_while_consent_is_down_and_goes_out_once_it_answers_yes(platform):
    email = new_email()
    opt_in(platform, email)
    stack = platform.gw.stack
    stack.processes["consent"].stop()
    try:
        key = queue_marketing_email(platform, email)
        waiting = wait_for(
            lambda: "waiting for consent" in (d := delivery(platform, key)).last_error and d, 30,
            "the email to wait for consent",
        )
        assert waiting.status == pb.PENDING and waiting.attempts == 0  # its attempt was given back
        assert platform.smtp.to(email) == []
    finally:
        stack.start_service("consent")
    sent = wait_status(platform, key, pb.DELIVERED, timeout=60)
    assert sent.attempts == 1 and len(platform.smtp.to(email)) == 1


def test_a_marketing_message_must_be_an_email(platform):
    alert = pb.SlackAlert(title="Buy now")
    request = pb.NotifyRequest(idempotency_key=f"k:{uuid.uuid4().hex}", slack=alert, purpose=pb.PURPOSE_MARKETING)
    with pytest.raises(grpc.RpcError) as refused:
        notifier_internal(platform).Notify(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- through chat: the latest statement wins, and every follow-up carries the way out ------------------------------

def visitor(platform, email: str, marketing: bool) -> str:
    """One chat over REST that ends with both consent answers; returns the session id."""
    session = ""
    script = [
        "Hello, how long does a renovation take?", "My name is Anna Nowak", email, "+48 601 234 567",
        "The flat is 35 sqm in Gdansk", "budget 60k PLN", "we could start in 8 months",
    ]
    for text in script:
        response = platform.gw.rest("POST", "/api/chatbot/chat", json={"session_id": session, "message": text})
        assert response.status_code == 200, response.text
        session = response.json()["session_id"]
    answer = {"session_id": session, "message": "", "processing_consent": True, "marketing_consent": marketing}
    response = platform.gw.rest("POST", "/api/chatbot/chat", json=answer)
    assert response.status_code == 200 and response.json()["intent"] == "lead_stored", response.text
    return session


def run_followups(platform) -> dict:
    response = platform.gw.rest("POST", "/api/admin/followups/run", admin=True, json={})
    assert response.status_code == 200, response.text
    return response.json()


def followups_to(platform, email: str, at_least: int = 1):
    """Run the follow-ups until `at_least` reached the SMTP receiver (each needs a second of idleness first)."""
    return wait_for(
        lambda: run_followups(platform) and len(got := platform.smtp.to(email)) >= at_least and got, 30,
        f"{at_least} follow-up(s) to {email}", interval=0.3,
    )


def test_yes_in_one_chat_and_no_in_a_later_one_leaves_marketing_off_and_sends_no_followup(platform):
    email = new_email()
    visitor(platform, email, marketing=True)
    wait_for(lambda: marketing_on(platform, email), 30, "the first chat's yes on record")
    visitor(platform, email, marketing=False)
    wait_for(lambda: not marketing_on(platform, email), 30, "the later chat's no to win")

    wait_for(lambda: run_followups(platform)["skipped_no_consent"] >= 1, 30, "the first chat's follow-up to stop",
             interval=0.3)
    assert run_followups(platform)["sent"] == 0
    assert platform.smtp.to(email) == [] and not marketing_on(platform, email)


def test_an_older_statement_arriving_late_does_not_win(platform):
    email = new_email()
    internal = consent_internal(platform)
    later = consent_pb2.RecordConsentRequest(
        email=email, processing_consent=True, marketing_consent=False, text_version="v1", source="chat-widget",
    )
    later.stated_at.FromSeconds(1_700_000_000)
    internal.RecordConsent(later, timeout=10)
    earlier = consent_pb2.RecordConsentRequest(
        email=email, processing_consent=True, marketing_consent=True, text_version="v1", source="chat-widget",
    )
    earlier.stated_at.FromSeconds(1_600_000_000)
    internal.RecordConsent(earlier, timeout=10)

    assert not marketing_on(platform, email)
    ledger = platform.gw.rest("GET", f"/api/admin/consent/subjects/{email}/ledger", admin=True).json()["entries"]
    assert [e["marketing_consent"] for e in ledger] == [False, True]  # both statements recorded, in arrival order
    asked = internal.GetMarketingConsent(consent_pb2.GetMarketingConsentRequest(email=email), timeout=10)
    assert asked.allowed is False


def one_click_link(received) -> str:
    message = received.message
    header = str(message["List-Unsubscribe"])
    assert header.startswith("<") and header.endswith(">"), header
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    url = header[1:-1]
    assert url.startswith(f"{PUBLIC_BASE_URL}/api/unsubscribe/one-click?token=")
    assert url in received.body and "right to object" in received.body  # a visible link, and the right stated
    return url


def post_one_click(platform, url: str, token: str | None = None):
    parts = urlsplit(url)
    query = f"token={token}" if token is not None else parts.query
    return platform.gw.rest(
        "POST", f"{parts.path}?{query}", data=ONE_CLICK_BODY,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def test_every_followup_has_the_one_click_headers_and_a_link_that_turns_marketing_off(platform):
    email = new_email()
    visitor(platform, email, marketing=True)
    wait_for(lambda: marketing_on(platform, email), 30, "the chat's yes on record")
    [followup] = followups_to(platform, email)
    url = one_click_link(followup)
    token = parse_qs(urlsplit(url).query)["token"][0]
    assert "@" not in token and email.split("@")[0] not in token  # the person is named by id, not by email

    page = platform.gw.rest("GET", f"{urlsplit(url).path}?{urlsplit(url).query}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'method="post"' in page.text and marketing_on(platform, email)  # opening the link changes nothing

    first = post_one_click(platform, url)
    assert first.status_code == 200 and first.json()["marketing_consent"] is False, first.text
    assert not marketing_on(platform, email)
    second = post_one_click(platform, url)
    assert second.status_code == 200 and second.json()["marketing_consent"] is False, second.text

    ledger = platform.gw.rest("GET", f"/api/admin/consent/subjects/{email}/ledger", admin=True).json()["entries"]
    assert [e["source"] for e in ledger if e["action"] == "unsubscribe"][:1] == ["one-click"]
    assert run_followups(platform)["sent"] == 0 and len(platform.smtp.to(email)) == 1


def test_a_tampered_one_click_token_is_refused_and_changes_nothing(platform):
    email = new_email()
    opt_in(platform, email)
    link = consent_internal(platform).IssueUnsubscribeLink(
        consent_pb2.IssueUnsubscribeLinkRequest(email=email), timeout=10
    ).url
    token = parse_qs(urlsplit(link).query)["token"][0]
    subject_id, mac = token.split(".")
    tampered = [f"{subject_id}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}", f"{'0' * len(subject_id)}.{mac}",
                subject_id, "nonsense"]
    for bad in tampered:
        response = post_one_click(platform, link, token=bad)
        assert response.status_code in (400, 403), (bad, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/json") and response.json()
    assert marketing_on(platform, email)
    ledger = platform.gw.rest("GET", f"/api/admin/consent/subjects/{email}/ledger", admin=True).json()["entries"]
    assert [e["action"] for e in ledger] == ["opt-in"]
