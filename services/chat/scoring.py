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
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Reason:
    """One rule's contribution, as sales reads it: "budget 250000 PLN: +25"."""

    rule: str
    points: int

    def __str__(self) -> str:
        return f"{self.rule}: +{self.points}"


def breakdown(slots: Mapping[str, SlotValue], served_cities: Iterable[str]) -> list[Reason]:
    """The rules that gave points, in the table's order. `budget` is in PLN (a EUR budget converted, or absent)."""
    area, budget = slot_number(slots, "area_m2"), slot_number(slots, "budget")
    months = slot_number(slots, "start_months")
    city = slots.get("city")
    reasons = [
        Reason("email", 12 if slots.get("email") else 0),
        Reason("phone", 12 if slots.get("phone") else 0),
        Reason("name", 6 if slots.get("name") else 0),
        Reason(f"area {area} m²", _area_points(area)),
        Reason(f"budget {budget} PLN", _budget_points(budget)),
        Reason(f"start in {months} months", _start_points(months)),
        Reason(f"served city {city}", 10 if city in set(served_cities) else 0),
    ]
    return [reason for reason in reasons if reason.points]


def score_lead(slots: Mapping[str, SlotValue], served_cities: Iterable[str]) -> int:
    return max(0, min(100, sum(reason.points for reason in breakdown(slots, served_cities))))
