"""One Monday.com item per lead across a kill -9: the create in flight at the kill reached the board, and the restarted
notifier finds it by the lead's lookup key instead of creating a second."""
from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor

from novahouse.notifier.v1 import notifier_pb2 as pb
from testsupport.receivers import monday_create
from testsupport.waiting import wait_for

LEADS = 500
HELD = 250  # the create held open at the kill: the 251st


def lead_id(n: int) -> str:
    return f"lead-{n:04d}"


def test_a_create_in_flight_at_a_kill_9_still_gives_one_item_per_lead(start_notifier, monday_receiver, tmp_path):
    env = {"MONDAY_API_URL": f"{monday_receiver.url}/v2", "DELIVERY_LEASE_S": "2"}
    board = monday_receiver.responder
    hold = monday_receiver.hold(monday_create, after=HELD)
    first = start_notifier(env, data_dir=tmp_path / "data", name="notifier-before-kill")

    def notify(n: int) -> None:
        first.monday(f"lead-item-{n}", f"Lead {n}", {"text_city": "Warszawa"}, operation=pb.MONDAY_CREATE,
                     lookup_key=lead_id(n))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(notify, range(LEADS)))  # every lead accepted (an error here fails the test)
    assert hold.held.wait(60), "the notifier never reached the create to hold"
    first.process.kill()  # kill -9 while Monday.com holds the create open
    hold.release()  # ...which Monday.com then completes: the item is on the board, its id never recorded
    wait_for(lambda: len(board.items) == HELD + 1, 10, "the held create to land on the board")

    restarted = start_notifier(env, data_dir=tmp_path / "data", name="notifier-after-kill")
    wait_for(lambda: (stats := restarted.stats()).pending == 0 and stats, 120, "every item delivered")

    per_lead = collections.Counter(item["column_values"].get("text_lead_id") for item in board.items.values())
    held_lead = hold.request.json()["variables"]["columns"]
    print(f"\nitems {len(board.items)}, leads {len(per_lead)}, duplicates {sum(c - 1 for c in per_lead.values())}")
    assert len(board.items) == LEADS and sorted(per_lead) == [lead_id(n) for n in range(LEADS)]
    assert max(per_lead.values()) == 1
    held_key = next(k for k in per_lead if k in held_lead)
    delivery = restarted.delivery(f"lead-item-{int(held_key.split('-')[1])}")
    assert delivery.status == pb.DELIVERED and delivery.external_id in board.items  # the held create adopted
    assert restarted.stats().failed == 0


def test_a_create_without_a_lead_key_is_found_by_its_delivery_key_and_updated(start_notifier, monday_receiver):
    board = monday_receiver.responder
    # A create that reached the board but whose answer was lost: the item holds the delivery's key, older values.
    landed = board.add("Lead X", {"text_lead_id": "crm-x-1", "text_city": ""})
    notifier = start_notifier({"MONDAY_API_URL": f"{monday_receiver.url}/v2"})
    notifier.monday("crm-x-1", "Lead X – Gdańsk", {"text_city": "Gdańsk"})
    delivered = notifier.wait_status("crm-x-1", pb.DELIVERED)
    assert delivered.external_id == landed and list(board.items) == [landed]
    assert board.items[landed]["name"] == "Lead X – Gdańsk"
    assert board.items[landed]["column_values"] == {"text_lead_id": "crm-x-1", "text_city": "Gdańsk"}
