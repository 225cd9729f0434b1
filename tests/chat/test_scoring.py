"""The documented lead-scoring rules (services/chat/scoring.py) and the alert threshold they feed."""
from services.chat.scoring import score_lead
from services.chat.slots import SlotValue

SERVED = ("Warszawa", "Kraków", "Wrocław", "Łódź", "Poznań")
FULL_CONTACT: dict[str, SlotValue] = {"name": "Jan Kowalski", "email": "jan@example.com", "phone": "+48600700800"}


def test_best_lead_scores_100():
    lead: dict[str, SlotValue] = {**FULL_CONTACT, "city": "Warszawa", "area_m2": 85, "budget": 250000,
                                  "start_months": 0}
    assert score_lead(lead, SERVED) == 100


def test_each_rule_contributes_its_documented_points():
    assert score_lead({}, SERVED) == 0
    assert score_lead({"email": "a@b.pl"}, SERVED) == 12
    assert score_lead({"phone": "+48600700800"}, SERVED) == 12
    assert score_lead({"name": "Jan"}, SERVED) == 6
    assert [score_lead({"area_m2": a}, SERVED) for a in (20, 30, 50, 80)] == [3, 8, 14, 20]
    assert [score_lead({"budget": b}, SERVED) for b in (40000, 50000, 100000, 200000)] == [4, 10, 18, 25]
    assert [score_lead({"start_months": m}, SERVED) for m in (0, 3, 4, 6, 7, None)] == [15, 15, 8, 8, 2, 0]
    assert score_lead({"city": "Kraków"}, SERVED) == 10
    assert score_lead({"city": "Gdańsk"}, SERVED) == 0


def test_a_smaller_later_lead_outside_the_served_cities_stays_below_the_alert_threshold():
    lead: dict[str, SlotValue] = {**FULL_CONTACT, "city": "Gdańsk", "area_m2": 35, "budget": 60000, "start_months": 8}
    assert score_lead(lead, SERVED) == 30 + 8 + 10 + 2 + 0
    assert score_lead(lead, SERVED) < 70
