"""The latest statement wins, by when the person made it, and the one-click link of a marketing email turns
marketing off: the consent domain on SQLite and on PostgreSQL."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from services.consent.crypto import SubjectCrypto
from services.runtime.errors import ValidationError
from testsupport.consent import BACKENDS, consent_service, fresh_secrets, migrated_database

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def service(request, tmp_path):
    with migrated_database(request.param, tmp_path) as db:
        consent = consent_service(db)
        yield consent
        consent.writer.stop()


def opt_in(service, email: str, marketing: bool, stated_at: datetime | None):
    return service.record_consent(email, True, marketing, "rodo-2025-01", "chat-widget", stated_at=stated_at)


def test_a_no_in_a_later_chat_turns_marketing_off(service):
    opt_in(service, "anna@example.com", True, T0)
    answer = opt_in(service, "anna@example.com", False, T0 + timedelta(days=2))
    assert answer.marketing_consent is False and not service.marketing_allowed("anna@example.com")


def test_an_older_statement_arriving_late_is_recorded_but_does_not_win(service):
    opt_in(service, "piotr@example.com", False, T0 + timedelta(days=2))
    late = opt_in(service, "piotr@example.com", True, T0)
    assert late.marketing_consent is False  # the answer is the state, which holds the newer "no"
    assert not service.marketing_allowed("piotr@example.com")
    _, entries = service.export("piotr@example.com")
    assert [e.marketing_consent for e in entries] == [False, True]  # both in the ledger, in arrival order


def test_an_opt_in_given_before_an_unsubscribe_cannot_undo_it(service):
    opt_in(service, "ewa@example.com", True, T0)
    service.unsubscribe("ewa@example.com")
    opt_in(service, "ewa@example.com", True, T0 + timedelta(hours=1))  # a hand-over retried after the unsubscribe
    assert not service.marketing_allowed("ewa@example.com")


def test_a_statement_dated_in_the_future_counts_as_made_now(service):
    opt_in(service, "jan@example.com", True, datetime.now(UTC) + timedelta(days=365))
    service.unsubscribe("jan@example.com")
    assert not service.marketing_allowed("jan@example.com")


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


def test_the_one_click_link_turns_marketing_off_and_works_again(service):
    opt_in(service, "ola@example.com", True, None)
    url = service.unsubscribe_link("ola@example.com")
    assert url.startswith("http://127.0.0.1:8080/api/unsubscribe/one-click?token=") and "ola" not in url
    assert service.one_click_unsubscribe(token_of(url)) is False
    assert not service.marketing_allowed("ola@example.com")
    assert service.one_click_unsubscribe(token_of(url)) is False
    _, entries = service.export("ola@example.com")
    assert [(e.action, e.source) for e in entries][1:] == [("unsubscribe", "one-click")] * 2
    assert service.unsubscribe_link("ola@example.com") == url  # one link per person, never expiring


def test_a_token_not_signed_by_this_service_changes_nothing(service):
    opt_in(service, "kasia@example.com", True, None)
    token = token_of(service.unsubscribe_link("kasia@example.com"))
    subject_id = token.split(".")[0]
    foreign = SubjectCrypto(fresh_secrets()).unsubscribe_token(subject_id)
    for bad in (foreign, token[:-1], subject_id, "", "x.y", token.replace(subject_id, "f" * len(subject_id))):
        with pytest.raises(ValidationError):
            service.one_click_unsubscribe(bad)
    assert service.marketing_allowed("kasia@example.com")
    _, entries = service.export("kasia@example.com")
    assert [e.action for e in entries] == ["opt-in"]
