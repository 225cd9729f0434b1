"""The Monday.com destination, designed once: create (keeping the item id, adopting the item that already holds its
lookup key), update and delete, against a receiver that keeps the board's items."""
from __future__ import annotations

import grpc
import pytest

from novahouse.notifier.v1 import notifier_pb2 as pb
from testsupport.receivers import HttpReceiver, MondayBoard
from testsupport.waiting import wait_for

LOOKUP_COLUMN = "text_lead_ref"


@pytest.fixture(scope="module")
def monday():
    with HttpReceiver(respond=MondayBoard) as receiver:
        yield receiver


@pytest.fixture(scope="module")
def notifier(monday, start_module_notifier):
    return start_module_notifier({
        "MONDAY_API_URL": monday.url, "MONDAY_LOOKUP_COLUMN": LOOKUP_COLUMN, "DLQ_MAX_RETRIES": "3",
    })


def test_create_update_and_delete_round_trip_on_the_board(notifier, monday):
    board: MondayBoard = monday.responder
    notifier.monday("item-create", "Lead 17 – Gdynia", {"text0": "Gdynia"}, operation=pb.MONDAY_CREATE)
    item_id = notifier.wait_status("item-create", pb.DELIVERED).external_id
    assert board.items[item_id]["name"] == "Lead 17 – Gdynia"
    # no lookup key of its own: the delivery's key goes in the lookup column, so a retry after a crash finds it
    assert board.items[item_id]["column_values"] == {"text0": "Gdynia", LOOKUP_COLUMN: "item-create"}

    notifier.monday("item-update", "Lead 17 – Gdynia (called)", {"text0": "Sopot", "status": '{"label": "Done"}'},
                    operation=pb.MONDAY_UPDATE, item_id=item_id)
    updated = notifier.wait_status("item-update", pb.DELIVERED)
    assert updated.external_id == item_id
    assert board.items[item_id]["name"] == "Lead 17 – Gdynia (called)"
    assert board.items[item_id]["column_values"] == {"text0": "Sopot", "status": {"label": "Done"},
                                                     LOOKUP_COLUMN: "item-create"}

    notifier.monday("item-delete", "", operation=pb.MONDAY_DELETE, item_id=item_id)
    deleted = notifier.wait_status("item-delete", pb.DELIVERED)
    assert deleted.external_id == item_id and item_id not in board.items and board.deleted[-1] == item_id


def test_a_create_with_a_lookup_key_writes_it_and_a_retry_after_a_crash_adopts_the_item(notifier, monday):
    board: MondayBoard = monday.responder
    first = notifier.monday("lookup-first", "Lead A", {"text0": "Gdańsk"}, lookup_key="lead-aaa111")
    item_id = notifier.wait_status("lookup-first", pb.DELIVERED).external_id
    assert first.delivery_id and board.items[item_id]["column_values"][LOOKUP_COLUMN] == "lead-aaa111"

    # A create that reached Monday.com but whose answer was lost (the notifier died before recording the id): the
    # item is on the board, holding the key. The retried create finds it instead of making a second one.
    lost = board.add("Lead B", {LOOKUP_COLUMN: "lead-bbb222"})
    items_before = len(board.items)
    notifier.monday("lookup-retried", "Lead B", {"text0": "Gdynia"}, lookup_key="lead-bbb222")
    adopted = notifier.wait_status("lookup-retried", pb.DELIVERED)
    assert adopted.external_id == lost and len(board.items) == items_before
    finds = [r for r in monday.requests if "items_page_by_column_values" in r.json()["query"]]
    assert finds[-1].json()["variables"]["columns"] == [{"column_id": LOOKUP_COLUMN, "column_values": ["lead-bbb222"]}]


def test_an_update_by_lookup_key_waits_for_its_item_and_then_changes_it(notifier, monday):
    """A correction to a lead whose create has not landed yet (Monday.com failing) is applied once it has."""
    board: MondayBoard = monday.responder
    monday.fail(500, times=2)
    notifier.monday("late-create", "Lead Ola", {"phone": "+48600700800"}, lookup_key="lead-late")
    notifier.monday("late-update", "", {"phone": "+48601602699"}, operation=pb.MONDAY_UPDATE, lookup_key="lead-late")
    created = notifier.wait_status("late-create", pb.DELIVERED)
    updated = notifier.wait_status("late-update", pb.DELIVERED)
    assert updated.external_id == created.external_id
    assert board.items[created.external_id]["column_values"]["phone"] == "+48601602699"


def test_deleting_an_item_that_is_already_gone_is_done_not_an_error(notifier, monday):
    notifier.monday("gone-delete", "", operation=pb.MONDAY_DELETE, item_id="987654")
    done = notifier.wait_status("gone-delete", pb.DELIVERED)
    assert done.attempts == 1 and done.external_id == "987654"


def test_a_delete_is_retried_through_a_monday_outage(notifier, monday):
    board: MondayBoard = monday.responder
    item_id = board.add("Lead C", {})
    monday.fail(500, times=2)
    notifier.monday("outage-delete", "", operation=pb.MONDAY_DELETE, item_id=item_id)
    done = notifier.wait_status("outage-delete", pb.DELIVERED)
    assert done.attempts == 3 and item_id not in board.items


@pytest.mark.parametrize("operation, item_id, lookup_key, problem", [
    (pb.MONDAY_UPDATE, "", "", "or monday.lookup_key is required"),
    (pb.MONDAY_DELETE, "not-a-number", "", "or monday.lookup_key is required"),
    (pb.MONDAY_CREATE, "123", "", "must be empty for a create"),
    (pb.MONDAY_UPDATE, "123", "lead-x", "by item_id or by lookup_key, not both"),
])
def test_an_operation_without_what_it_needs_is_refused(notifier, operation, item_id, lookup_key, problem):
    with pytest.raises(grpc.RpcError) as refused:
        notifier.monday("bad-op", "Name", {"text0": "x"}, operation=operation, item_id=item_id, lookup_key=lookup_key)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and problem in str(refused.value.details())


def test_an_erasure_during_a_create_in_flight_deletes_the_item_that_create_makes(notifier, monday):
    board: MondayBoard = monday.responder
    before, deleted_before = monday.attempts, len(board.deleted)
    monday.hang(1.0, times=1)  # the create's first call (its lookup) is slow: the worker holds the row meanwhile
    notifier.monday("in-flight", "Lead Ewa Wlocie", {"email": "ewa.inflight@example.org"}, lookup_key="lead-inflight")
    wait_for(lambda: monday.attempts > before, what="the create to be on its way")

    erased = notifier.erase("erasure-in-flight", email="ewa.inflight@example.org")
    [action] = erased.actions
    assert (action.action, action.status) == ("delete-item", "pending")  # it may land: found by its lookup key
    wait_for(lambda: notifier.erasure_actions("erasure-in-flight").actions[0].status == "done", what="the delete")
    assert len(board.deleted) == deleted_before + 1  # the create did make the item, and it went
    assert not [i for i in board.items.values() if i["column_values"].get(LOOKUP_COLUMN) == "lead-inflight"]


def test_a_second_erasure_naming_the_same_lead_leaves_the_first_one_s_delete_alone(notifier, monday):
    board: MondayBoard = monday.responder
    monday.fail(500)
    notifier.monday("twice-erased", "Lead Olga Podwójna", {"email": "olga.twice@example.org"}, lookup_key="lead-twice")
    notifier.wait_status("twice-erased", pb.FAILED)
    item_id = board.add("Lead Olga Podwójna", {LOOKUP_COLUMN: "lead-twice"})  # the create that did land

    first = notifier.erase("erasure-twice-1", email="olga.twice@example.org")
    assert [(a.action, a.status) for a in first.actions] == [("delete-item", "pending")]
    second = notifier.erase("erasure-twice-2", lead_ids=["lead-twice"])  # its delete's payload holds the lead id
    assert second.deliveries_redacted == 0 and not second.actions
    monday.recover()
    wait_for(lambda: notifier.erasure_actions("erasure-twice-1").actions[0].status == "done", what="the delete")
    assert item_id in board.deleted


def test_the_notifier_s_own_key_prefixes_are_refused(notifier):
    for key in ("erasure:e-1:operators", "erased:0123"):
        with pytest.raises(grpc.RpcError) as refused:
            notifier.slack(key, "Not yours")
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
