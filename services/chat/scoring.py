"""Lead score, 0-100: how likely a lead is to become a signed renovation, from five documented rules.

| rule                  | points                                                                  |
|-----------------------|-------------------------------------------------------------------------|
| contact completeness  | email 12, phone 12, name 6 (max 30)                                     |
| flat area             | >= 80 m2: 20; 50-79: 14; 30-49: 8; below 30: 3                          |
| budget (PLN)          | >= 200,000: 25; 100,000-199,999: 18; 50,000-99,999: 10; below: 4        |
| start                 | within 3 months: 15; within 6 months: 8; later: 2; not known: 0         |
| served city           | one of the knowledge base's served_cities: 10                           |

A missing value scores 0 for its rule. The total is capped to 0..100. A score >= LEAD_ALERT_SCORE (default 70)
raises a Slack alert besides the Monday.com item every lead gets.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from services.chat.slots import SlotValue, slot_number


def _area_points(area: int | None) -> int:
    if area is None:
        return 0
    return 20 if area >= 80 else 14 if area >= 50 else 8 if area >= 30 else 3


def _budget_points(budget: int | None) -> int:
    if budget is None:
        return 0
    return 25 if budget >= 200_000 else 18 if budget >= 100_000 else 10 if budget >= 50_000 else 4


def _start_points(months: int | None) -> int:
    if months is None:
        return 0
    return 15 if months <= 3 else 8 if months <= 6 else 2


def score_lead(slots: Mapping[str, SlotValue], served_cities: Iterable[str]) -> int:
    points = (
        (12 if slots.get("email") else 0)
        + (12 if slots.get("phone") else 0)
        + (6 if slots.get("name") else 0)
        + _area_points(slot_number(slots, "area_m2"))
        + _budget_points(slot_number(slots, "budget"))
        + _start_points(slot_number(slots, "start_months"))
        + (10 if slots.get("city") in set(served_cities) else 0)
    )
    return max(0, min(100, points))
