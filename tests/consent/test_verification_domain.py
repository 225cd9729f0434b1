"""Verified requests in the domain, on SQLite and PostgreSQL: a link works once even when two confirmations race,
a use is given back when the action could not be carried out, the request without a token never looks the address
up, and the throttle logs no address."""
from __future__ import annotations

import logging
import os
import re
import threading
from datetime import timedelta
from urllib.parse import unquote

import pytest

from services.consent.action_tokens import ActionTokens
from services.consent.storage import ActionRecords, ledger_entries
from services.consent.verification import ERASE, EXPORT, STATUS, VerifiedRequests
from services.runtime.errors import UnavailableError, ValidationError
from services.runtime.request_context import Caller
from testsupport.consent import BACKENDS, consent_service, migrated_database


class Outbox:
    """Stands in for the notifier: keeps what would have been emailed."""

    def __init__(self):
        self.sent: list[tuple[str, str]] = []

    def service_email(self, key: str, to: str, subject: str, body: str) -> None:
        self.sent.append((to, body))

    def tokens(self, to: str) -> list[str]:
        return [unquote(t) for address, body in self.sent if address == to
                for t in re.findall(r"token=([\w.%-]+)", body)]


class Untouchable:
    """A consent service that fails the test if anything of it is used."""

    def __getattr__(self, name):
        raise AssertionError(f"the request without a token used consent.{name}")


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):
    with migrated_database(request.param, tmp_path) as database:
        yield database


def verified(db, consent=None, export=None, per_hour=5) -> tuple[VerifiedRequests, Outbox]:
    outbox = Outbox()
    requests = VerifiedRequests(
        consent or consent_service(db), ActionTokens(os.urandom(32), timedelta(minutes=60)), ActionRecords(db),
        outbox, export or (lambda email: {"email": email}), "https://novahouse.example", per_hour,
    )
    return requests, outbox


def test_the_request_without_a_token_never_looks_the_address_up(db):
    requests, outbox = verified(db, consent=Untouchable())
    for action in (ERASE, STATUS, EXPORT):
        assert requests.ask("Someone@Example.com", action).email == "someone@example.com"
    assert [to for to, _ in outbox.sent] == ["someone@example.com"] * 3


def test_two_racing_confirmations_of_one_link_erase_once_with_the_reason_given(db):
    consent = consent_service(db)
    consent.record_consent("racer@example.com", True, True, "v1", "test")
    requests, outbox = verified(db, consent=consent)
    requests.ask("racer@example.com", ERASE, reason="Forget me")
    [token] = outbox.tokens("racer@example.com")
    outcomes: list[str] = []

    def press() -> None:
        try:
            requests.confirm(token, Caller())
            outcomes.append("done")
        except ValidationError as refused:
            outcomes.append(str(refused))

    threads = [threading.Thread(target=press) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["done"] + ["this link was already used; ask again for a new one"] * 3
    with db.engine.connect() as conn:
        actions = [row.action for row in conn.execute(ledger_entries.select().order_by(ledger_entries.c.seq))]
    assert actions == ["opt-in", "revoke"]
    assert consent.export("racer@example.com")[1][-1].reason == "Forget me"  # carried by the link


def test_a_link_whose_action_failed_can_be_used_again(db):
    calls = []

    def export(email: str) -> dict[str, object]:
        calls.append(email)
        if len(calls) == 1:
            raise UnavailableError("chat did not answer")
        return {"email": email}

    requests, outbox = verified(db, export=export)
    requests.ask("later@example.com", EXPORT)
    [token] = outbox.tokens("later@example.com")
    with pytest.raises(UnavailableError):
        requests.confirm(token, Caller())
    assert requests.confirm(token, Caller()).document == {"email": "later@example.com"}
    with pytest.raises(ValidationError, match="already used"):
        requests.confirm(token, Caller())


def test_a_token_for_one_action_cannot_be_bent_to_another(db):
    requests, outbox = verified(db)
    requests.ask("someone@example.com", STATUS)
    [token] = outbox.tokens("someone@example.com")
    assert requests.check(token).action == STATUS
    other, _ = verified(db)  # another key: its tokens are not ours
    with pytest.raises(ValidationError, match="not valid"):
        other.check(token)


def test_the_throttle_sends_nothing_past_the_limit_and_logs_no_address(db, caplog):
    requests, outbox = verified(db, per_hour=2)
    with caplog.at_level(logging.WARNING):
        answers = {requests.ask("flood@example.com", STATUS) for _ in range(4)}
    assert len(answers) == 1 and len(outbox.sent) == 2
    warnings = [r for r in caplog.records if "verification email not sent" in r.getMessage()]
    assert len(warnings) == 2
    assert all("flood" not in r.getMessage() and "flood" not in str(vars(r)) for r in warnings)
