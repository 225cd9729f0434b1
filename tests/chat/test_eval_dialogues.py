"""The lead capture evaluation's judge file and scoring (bench/eval_dialogues.py): the figures `make eval` prints are
only as good as this arithmetic. Nothing here runs the chat or asserts its accuracy."""
from __future__ import annotations

import datetime as dt

import pytest

from bench.eval_dialogues import (
    SLOTS,
    Observed,
    item_values,
    judge,
    load_dialogues,
    parse_dialogue,
    slot_counts,
    summarise,
)

ANNA = parse_dialogue({
    "id": "pl-anna",
    "language": "pl",
    "conversations": [["Jestem Anna z Poznania, mieszkanie ma 55 m, chcemy zacząć w maju", "!agree",
                       "anna@example.com", "!decline"]],
    "expect": {
        "items": 1,
        "consent_prompt_turn": 1,
        "lead": {"name": "Anna", "email": "anna@example.com", "city": "Poznań", "area_m2": 55, "start": "2027-05",
                 "partial": True, "marketing_consent": False},
        "slack": {"request": False, "unserved_city": False},
    },
})


def monday_item(name: str, **columns: str) -> dict:
    return {"name": name, "group": None, "column_values": columns}


def test_the_judge_file_parses_with_enough_dialogues_in_both_languages():
    today, dialogues = load_dialogues()
    assert today == dt.date(2026, 11, 29)
    assert len(dialogues) >= 40
    assert {d.language for d in dialogues} == {"pl", "en"}
    assert any(len(d.conversations) == 2 for d in dialogues)  # a returning visitor
    assert any(d.expect.items == 0 for d in dialogues) and any(d.expect.items == 1 for d in dialogues)


def test_a_right_lead_scores_every_expected_slot_as_true_positive():
    item = monday_item("Anna – Poznań, 55 m²", email="anna@example.com", city="Poznań", area_m2="55", budget="",
                       budget_currency="PLN", start="2027-05", partial="yes", marketing_consent="no", request="")
    verdict = judge(ANNA, Observed(items=[item], processing_prompt_turn=1))
    assert verdict.difference == ""
    assert sum(c.tp for c in verdict.counts.values()) == 5  # name, email, city, area, start
    assert sum(c.fp + c.fn for c in verdict.counts.values()) == 0
    assert not verdict.area_as_budget


def test_the_issue_s_anna_lead_scores_wrong_values_extra_values_and_the_area_read_as_budget():
    """What issue 13 saw: 55 m read as 55 000 000 PLN, the start kept as typed, a phone nobody gave."""
    item = monday_item("Anna – Poznań, ? m²", email="anna@example.com", phone="+48601602699", city="Poznań",
                       budget="55000000", budget_currency="PLN", start="maju", partial="no", marketing_consent="no")
    verdict = judge(ANNA, Observed(items=[item], processing_prompt_turn=1))
    counts = verdict.counts
    assert (counts["name"].tp, counts["email"].tp, counts["city"].tp) == (1, 1, 1)
    assert (counts["area_m2"].tp, counts["area_m2"].fn) == (0, 1)     # missing
    assert (counts["budget"].fp, counts["budget"].fn) == (1, 0)       # not expected at all
    assert (counts["budget_currency"].fp, counts["budget_currency"].fn) == (1, 0)
    assert (counts["start"].tp, counts["start"].fp, counts["start"].fn) == (0, 1, 1)  # wrong: both
    assert (counts["phone"].fp, counts["phone"].fn) == (1, 0)
    assert verdict.area_as_budget
    assert verdict.difference == "phone: got '+48601602699', expected ''"

    summary = summarise([verdict, judge(ANNA, Observed(items=[], processing_prompt_turn=None))])
    # first: tp 3 (name, email, city), fp 4 (phone, budget, currency, start), fn 2 (area, start);
    # second (no item): fn 5
    assert (summary.total.tp, summary.total.fp, summary.total.fn) == (3, 4, 7)
    assert summary.total.precision == pytest.approx(3 / 7)
    assert summary.total.recall == pytest.approx(3 / 10)
    assert summary.total.f1 == pytest.approx(2 * (3 / 7) * (3 / 10) / (3 / 7 + 3 / 10))
    assert (summary.correct, summary.leads_right, summary.dialogues, summary.areas_as_budgets) == (0, 0, 2, 1)
    assert summary.failing[1].difference == "0 Monday.com items, expected 1"


def test_item_count_consent_turn_and_slack_are_part_of_a_dialogue_being_right():
    item = monday_item("Anna – Poznań, 55 m²", email="anna@example.com", city="Poznań", area_m2="55",
                       start="2027-05", partial="yes", marketing_consent="no")
    second = judge(ANNA, Observed(items=[item, item], processing_prompt_turn=1))
    assert second.difference == "2 Monday.com items, expected 1"
    assert sum(c.tp for c in second.counts.values()) == 5  # the slots are read from the first item
    late = judge(ANNA, Observed(items=[item], processing_prompt_turn=3))
    assert late.difference == "processing consent prompt at turn 3, expected at turn 1"
    assert late.lead_right and not second.lead_right  # the lead itself is right; the notice came too late
    flagged = judge(ANNA, Observed(items=[item], processing_prompt_turn=1,
                                   slack=['{"text": "Lead: 60/100", "fields": {"city_served": "no"}}']))
    assert flagged.difference == "Slack flags an unserved city: True, expected False"


def test_a_request_is_read_from_its_column_as_kind_and_day():
    item = monday_item("Katarzyna Wójcik – ?, ? m²", phone="+48724650301", request="site visit: 2026-12-04, morning",
                       partial="yes", marketing_consent="no", budget="40000", budget_currency="EUR")
    values, partial, marketing = item_values(item)
    assert values == {"name": "Katarzyna Wójcik", "phone": "+48724650301", "request_kind": "site_visit",
                      "request_day": "2026-12-04", "budget": "40000", "budget_currency": "EUR"}
    assert (partial, marketing) == (True, False)


def test_no_lead_expected_and_none_given_scores_nothing():
    counts = slot_counts({}, {})
    assert set(counts) == set(SLOTS)
    assert all((c.tp, c.fp, c.fn) == (0, 0, 0) for c in counts.values())
    summary = summarise([])
    assert summary.total.f1 == 1.0 and summary.dialogues == 0
