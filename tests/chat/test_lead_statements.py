"""A lead's hand-over tells each service what it is: consent gets the visitor's answers with the time they gave
them (so the latest statement wins there, whatever order hand-overs arrive in), and the Monday.com item and Slack
alert go to the notifier as internal alerts, never as marketing."""
from __future__ import annotations

from novahouse.notifier.v1 import notifier_pb2
from services.runtime.clock import utcnow
from tests.chat.scripts import POLISH_HIGH_SCORE


def test_a_lead_hands_over_its_answers_with_their_time_and_its_alerts_as_internal(world):
    session = ""
    for text in POLISH_HIGH_SCORE:
        session = world.chat.send_message(session, text).session_id
    before = utcnow()
    stored = world.chat.send_message(session, "", processing_consent=True, marketing_consent=False)
    after = utcnow()
    lead_id = stored.lead.lead_id
    assert lead_id

    [recorded] = world.consent.recorded
    stated = recorded.stated_at.ToDatetime().replace(tzinfo=before.tzinfo)
    assert recorded.HasField("stated_at") and before <= stated <= after
    assert recorded.marketing_consent is False  # a "no" is handed over as a statement too
    purposes = {key: world.notifier.requests[key].purpose for key in world.notifier.keys(f"lead:{lead_id}:")}
    assert purposes == {
        f"lead:{lead_id}:monday": notifier_pb2.PURPOSE_INTERNAL_ALERT,
        f"lead:{lead_id}:slack": notifier_pb2.PURPOSE_INTERNAL_ALERT,
    }
