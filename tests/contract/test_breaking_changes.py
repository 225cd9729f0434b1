"""The contracts in protos/ stay compatible with the committed baseline."""
from __future__ import annotations

import copy
import json

import pytest

from testsupport import contracts
from testsupport.proto_compat import BASELINE, breaking_changes, summarize


def test_protos_are_compatible_with_the_committed_baseline():
    baseline = json.loads(BASELINE.read_text())
    assert breaking_changes(baseline, summarize()) == []


@pytest.fixture
def current():
    return summarize()


def test_removed_field_is_breaking(current):
    changed = copy.deepcopy(current)
    del changed["messages"]["novahouse.chat.v1.SendMessageRequest"]["message"]
    assert breaking_changes(current, changed) == ["field novahouse.chat.v1.SendMessageRequest.message removed"]


def test_renumbered_field_is_breaking(current):
    changed = copy.deepcopy(current)
    changed["messages"]["novahouse.consent.v1.UnsubscribeRequest"]["email"]["number"] = 9
    assert any("renumbered 1 -> 9" in p for p in breaking_changes(current, changed))


def test_removed_rpc_and_message_are_breaking(current):
    changed = copy.deepcopy(current)
    del changed["services"]["novahouse.notifier.v1.NotifierInternal"]["Notify"]
    del changed["messages"]["novahouse.chat.v1.Conversation"]
    problems = breaking_changes(current, changed)
    assert "rpc novahouse.notifier.v1.NotifierInternal/Notify removed" in problems
    assert "message novahouse.chat.v1.Conversation removed" in problems


def test_added_field_is_compatible(current):
    changed = copy.deepcopy(current)
    changed["messages"]["novahouse.chat.v1.SendMessageRequest"]["new_field"] = {
        "number": 99, "type": 9, "label": 1, "type_name": ""}
    assert breaking_changes(current, changed) == []


def test_coverage_check_names_an_rpc_no_test_called():
    everything = contracts.all_rpcs()
    assert contracts.missing_rpcs(everything) == []
    missing_one = everything - {"/novahouse.chat.v1.ChatAdmin/PurgeCache"}
    assert contracts.missing_rpcs(missing_one) == ["/novahouse.chat.v1.ChatAdmin/PurgeCache"]


def test_rest_paths_map_to_their_rpcs():
    assert contracts.rpc_for_rest("POST", "/api/chatbot/chat") == "/novahouse.chat.v1.Chat/SendMessage"
    assert contracts.rpc_for_rest("GET", "/api/unsubscribe/status/a@b.pl") == "/novahouse.consent.v1.Consent/GetStatus"
    assert contracts.rpc_for_rest("GET", "/api/dlq/pending?limit=5") == \
        "/novahouse.notifier.v1.NotifierAdmin/ListDeadLetters"
    assert contracts.rpc_for_rest("GET", "/api/chatbot/chat") is None
