"""Slack through the bot (SLACK_BOT_TOKEN, SLACK_CHANNEL): chat.postMessage keeps the message reference, chat.delete
removes it; Slack's ok:false answers are retried or dead as their error says."""
from __future__ import annotations

import json

import pytest

from novahouse.notifier.v1 import notifier_pb2 as pb
from testsupport.receivers import SLACK_BOT_TOKEN, HttpReceiver, SlackWorkspace
from testsupport.waiting import wait_for

CHANNEL = "C0ALERTS"


@pytest.fixture(scope="module")
def slack():
    with HttpReceiver(respond=SlackWorkspace) as receiver:
        yield receiver


@pytest.fixture(scope="module")
def notifier(slack, start_module_notifier):
    return start_module_notifier({
        "SLACK_API_URL": f"{slack.url}/api", "SLACK_BOT_TOKEN": SLACK_BOT_TOKEN, "SLACK_CHANNEL": CHANNEL,
        "SLACK_WEBHOOK_URL": f"{slack.url}/services/T0/B0/X", "DLQ_MAX_RETRIES": "3",
    })


def test_an_alert_is_posted_by_the_bot_and_its_reference_kept(notifier, slack):
    workspace: SlackWorkspace = slack.responder
    notifier.slack("bot-1", "New lead: 91 points", "House 140 m2", city="Gdańsk")
    delivered = notifier.wait_status("bot-1", pb.DELIVERED)
    channel, _, ts = delivered.external_id.partition("/")
    assert channel == CHANNEL and ts
    posted = workspace.messages[delivered.external_id]
    assert posted["channel"] == CHANNEL and posted["blocks"][0]["text"]["text"] == "New lead: 91 points"
    [request] = [r for r in slack.requests if r.path == "/api/chat.postMessage" and "91 points" in r.body.decode()]
    assert request.headers["authorization"] == f"Bearer {SLACK_BOT_TOKEN}"
    assert not [r for r in slack.requests if r.path.startswith("/services/")]  # the webhook is not used


def test_a_retryable_ok_false_is_retried_and_a_permanent_one_is_dead(notifier, slack):
    workspace: SlackWorkspace = slack.responder
    workspace.refuse("ratelimited", times=2)
    notifier.slack("bot-ratelimited", "Retry me")
    retried = notifier.wait_status("bot-ratelimited", pb.DELIVERED)
    assert retried.attempts == 3 and retried.external_id in workspace.messages

    workspace.refuse("channel_not_found")
    notifier.slack("bot-no-channel", "Nowhere to go")
    dead = notifier.wait_status("bot-no-channel", pb.DEAD)
    assert dead.attempts == 1 and "channel_not_found" in dead.last_error


def test_a_message_posted_by_the_bot_can_be_deleted_and_a_gone_one_counts_as_deleted(notifier, slack):
    """Deletes are queued by ErasePerson only; here one erasure removes one posted message, through a 500 first."""
    workspace: SlackWorkspace = slack.responder
    notifier.slack("bot-erase", "Call Zofia Testowa-Bot", "+48 611 622 633")
    reference = notifier.wait_status("bot-erase", pb.DELIVERED).external_id
    slack.fail(500, times=1)
    attempts_before = slack.attempts
    erased = notifier.erase("bot-erasure-1", phones=["611622633"])
    [action] = erased.actions
    assert (action.action, action.external_id, action.status) == ("delete-message", reference, "pending")
    wait_for(lambda: notifier.erasure_actions("bot-erasure-1").actions[0].status == "done", what="the delete")
    assert slack.attempts - attempts_before == 2  # the 500, then the delete
    assert reference in workspace.deleted and reference not in workspace.messages
    delete = [r for r in slack.requests if r.path == "/api/chat.delete"][-1]
    assert delete.headers["authorization"] == f"Bearer {SLACK_BOT_TOKEN}"
    assert json.loads(delete.body) == {"channel": CHANNEL, "ts": reference.split("/")[1]}
