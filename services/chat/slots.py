"""Lead slots taken from free text: name, email, phone, city, flat area, budget, preferred start.

Several may come in one message ("Jan Kowalski, jan@example.com, 600 700 800, Warszawa, 55 m2"). When the bot has
just asked for one slot, a bare answer ("55", "Gdynia", "jan kowalski") fills that slot. A value that looks like a
slot but fails validation (an email without a domain, a phone without 9 digits, an area outside 10-1000 m²) is
reported as invalid, so the bot can say what is wrong; a valid new value replaces the old one (a correction).
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import phonenumbers

from services.chat.knowledge import normalise

SLOTS = ("name", "email", "phone", "city", "area_m2", "budget", "start")
# A captured value: text (name, email, phone, city, start), a number (area_m2, budget, start_months) or, for
# start_months, unknown.
SlotValue = str | int | None
MIN_AREA_M2, MAX_AREA_M2 = 10, 1000

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
_EMAIL_LIKE = re.compile(r"\S+@\S*")
_PHONE = re.compile(r"(?<![\d+])(?:(?:\+|00)\s?48[\s-]?)?\(?\d{2,3}\)?(?:[\s-]?\d){6,7}(?![\d])")
_PHONE_CHARACTERS = re.compile(r"^[\d\s+()./-]{1,40}$")
_DIGIT_RUN = re.compile(r"(?<![\d+])(?:\+|00)?\d(?:[\s-]?\d){6,}(?!\d)")
_AREA = re.compile(
    r"(\d{1,5}(?:[.,]\d+)?)\s*(?:m2|m²|m\^2|mkw|m\.?\s?kw\.?|metr\w*|sq\.?\s?m|sqm|square\s+met\w*)(?!\w)",
    re.IGNORECASE,
)
_BUDGET_THOUSANDS = re.compile(r"(\d+(?:[.,]\d+)?)\s*(?:tys\.?|tysi\w*|k)(?!\w)\s*(?:zł|zl|pln)?", re.IGNORECASE)
_BUDGET_MILLIONS = re.compile(
    r"(\d+(?:[.,]\d+)?)\s*(?:mln|milion\w*|million\w*|m)(?!\w)\s*(?:zł|zl|pln)?", re.IGNORECASE
)
_BUDGET_PLAIN = re.compile(r"(\d{1,3}(?:[ .]\d{3})+|\d+)\s*(?:zł|zl|pln)(?!\w)", re.IGNORECASE)
_BUDGET_KEYWORD = re.compile(r"(?:budżet|budzet|budget)\D{0,20}(\d{1,3}(?:[ .]\d{3})+|\d+)", re.IGNORECASE)
_BARE_NUMBER = re.compile(
    r"^\s*(?:ok\.?|około|about|approx\.?|~)?\s*(\d{1,3}(?:[ .]\d{3})+|\d+(?:[.,]\d+)?)\s*$", re.IGNORECASE
)
_NAME_INTRO = re.compile(
    r"(?i:nazywam si[eę]|mam na imi[eę]|jestem|my name is|i am|i'm|name is|imi[eę] i nazwisko:?|name:)\s+"
    r"([A-ZĄĆĘŁŃÓŚŹŻ][a-ząćęłńóśźż'-]+(?:\s+[A-ZĄĆĘŁŃÓŚŹŻ][a-ząćęłńóśźż'-]+){0,2})",
)
_CAPITALISED_NAME = re.compile(r"^[A-ZĄĆĘŁŃÓŚŹŻ][a-ząćęłńóśźż'-]+(?:\s+[A-ZĄĆĘŁŃÓŚŹŻ][a-ząćęłńóśźż'-]+){1,2}$")
_LETTERS_ONLY = re.compile(r"^[A-Za-ząćęłńóśźżĄĆĘŁŃÓŚŹŻ' -]{2,60}$")

# Canonical city -> normalised forms people type (cases, English names).
CITIES = {
    "Warszawa": ("warszawa", "warszawie", "warszawy", "warsaw"),
    "Kraków": ("krakow", "krakowie", "krakowa", "cracow"),
    "Wrocław": ("wroclaw", "wroclawiu", "wroclawia"),
    "Łódź": ("lodz", "lodzi"),
    "Poznań": ("poznan", "poznaniu", "poznania"),
    "Gdańsk": ("gdansk", "gdansku", "gdanska"),
    "Gdynia": ("gdynia", "gdyni"),
    "Sopot": ("sopot", "sopocie"),
    "Katowice": ("katowice", "katowicach"),
    "Lublin": ("lublin", "lublinie"),
    "Szczecin": ("szczecin", "szczecinie"),
    "Bydgoszcz": ("bydgoszcz", "bydgoszczy"),
    "Białystok": ("bialystok", "bialymstoku"),
    "Rzeszów": ("rzeszow", "rzeszowie"),
    "Toruń": ("torun", "toruniu"),
    "Kielce": ("kielce", "kielcach"),
    "Olsztyn": ("olsztyn", "olsztynie"),
    "Opole": ("opole", "opolu"),
}
_CITY_FORMS = {form: city for city, forms in CITIES.items() for form in forms}

_MONTHS = {
    1: ("styczen", "stycznia", "styczniu", "january"),
    2: ("luty", "lutego", "lutym", "february", "feb"),
    3: ("marzec", "marca", "marcu", "march"),
    4: ("kwiecien", "kwietnia", "kwietniu", "april"),
    5: ("maj", "maja", "maju"),  # not "may": the English verb
    6: ("czerwiec", "czerwca", "czerwcu", "june"),
    7: ("lipiec", "lipca", "lipcu", "july"),
    8: ("sierpien", "sierpnia", "sierpniu", "august"),
    9: ("wrzesien", "wrzesnia", "wrzesniu", "september"),
    10: ("pazdziernik", "pazdziernika", "pazdzierniku", "october"),
    11: ("listopad", "listopada", "listopadzie", "november"),
    12: ("grudzien", "grudnia", "grudniu", "december"),
}
_MONTH_FORMS = {form: month for month, forms in _MONTHS.items() for form in forms}
_START_NOW = re.compile(
    r"\b(od zaraz|od razu|natychmiast|jak najszybciej|asap|immediately|right away|as soon as possible|now|teraz)\b"
)
_START_IN_MONTHS = re.compile(r"\b(?:za|in|within|w ciagu)\s+(\d{1,2})\s+(?:miesiac\w*|months?)\b")
_START_IN_WEEKS = re.compile(r"\b(?:za|in|within|w ciagu)\s+(\d{1,2})\s+(?:tygodni\w*|tydzien|weeks?)\b")
_START_WORDS = (
    (re.compile(r"\b(za tydzien|next week|w przyszlym tygodniu)\b"), 0),
    (re.compile(r"\b(w przyszlym miesiacu|next month|za miesiac|in a month)\b"), 1),
    (re.compile(r"\b(za pol roku|in half a year|in six months)\b"), 6),
    (re.compile(r"\b(za rok|next year|w przyszlym roku|in a year)\b"), 12),
)


@dataclass
class Extraction:
    values: dict[str, SlotValue] = field(default_factory=dict)  # slot -> normalised value; start also sets start_months
    invalid: list[str] = field(default_factory=list)          # slots the visitor tried to give, but wrongly


def slot_text(slots: Mapping[str, SlotValue], name: str) -> str | None:
    value = slots.get(name)
    return value if isinstance(value, str) else None


def slot_number(slots: Mapping[str, SlotValue], name: str) -> int | None:
    value = slots.get(name)
    return value if isinstance(value, int) else None


def normalise_email(email: str) -> str:
    """How an email is compared and stored everywhere: trimmed and lower-cased."""
    return email.strip().lower()


def normalise_phone(raw: str) -> str | None:
    """'+48 600-700-800', '0048600700800', '(+48) 600700800' -> '+48600700800' (E.164, parsed by phonenumbers with
    Poland as the default region); None unless it is a 9-digit Polish number (issue 13 widens this)."""
    if not _PHONE_CHARACTERS.match(raw):
        return None
    try:
        number = phonenumbers.parse(raw, "PL")
    except phonenumbers.NumberParseException:
        return None
    national = str(number.national_number)
    if number.country_code != 48 or number.italian_leading_zero or len(national) != 9:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _number(raw: str) -> float:
    """'150 000' / '150.000' -> 150000 (thousands separators), '1,5' / '1.5' -> 1.5 (decimal separators)."""
    compact = raw.replace(" ", "")
    if "," not in raw and re.search(r"[ .]\d{3}$", raw):
        return float(compact.replace(".", ""))
    return float(compact.replace(",", "."))


def _months_until(month: int, today: dt.date) -> int:
    return (month - today.month) % 12


def parse_start(text: str, today: dt.date | None = None) -> tuple[int, str] | None:
    """(months from now until the visitor wants to start, the words that said so); None when no time is named."""
    today = today or dt.date.today()
    folded = normalise(text)
    if match := _START_NOW.search(folded):
        return 0, match.group(0)
    if match := _START_IN_MONTHS.search(folded):
        return int(match.group(1)), match.group(0)
    if match := _START_IN_WEEKS.search(folded):
        return int(match.group(1)) * 7 // 30, match.group(0)
    for pattern, months in _START_WORDS:
        if match := pattern.search(folded):
            return months, match.group(0)
    for word in folded.split():
        if word in _MONTH_FORMS:
            return _months_until(_MONTH_FORMS[word], today), word
    return None


def find_city(text: str) -> str | None:
    for word in normalise(text).split():
        if word in _CITY_FORMS:
            return _CITY_FORMS[word]
    return None


def extract(
    text: str, awaiting: str | None = None, free_text_ok: bool = False, today: dt.date | None = None
) -> Extraction:
    """Every slot value in one message. free_text_ok: the message is not a question, so a bare answer to the
    awaited slot (a name, a city) may be taken as it is."""
    found = Extraction()
    rest = text

    emails = _EMAIL.findall(rest)
    if emails:
        found.values["email"] = normalise_email(emails[-1])
        rest = _EMAIL.sub(" ", rest)
    elif _EMAIL_LIKE.search(rest) or (awaiting == "email" and free_text_ok and not _has_other_slot(rest)):
        found.invalid.append("email")
    rest = _EMAIL_LIKE.sub(" ", rest)

    for candidate in _PHONE.finditer(rest):
        phone = normalise_phone(candidate.group(0))
        if phone:
            found.values["phone"] = phone
            rest = rest.replace(candidate.group(0), " ")
            break
    if "phone" not in found.values:
        run = _DIGIT_RUN.search(rest)
        bare_number_asked = awaiting in ("area_m2", "budget") and _BARE_NUMBER.match(text)
        if run and not bare_number_asked and not _AREA.search(rest) and not _looks_like_budget(rest):
            found.invalid.append("phone")
            rest = rest.replace(run.group(0), " ")
        elif awaiting == "phone" and free_text_ok and re.search(r"\d", rest) and not _has_other_slot(rest):
            found.invalid.append("phone")

    if match := _AREA.search(rest):
        area = round(_number(match.group(1)))
        if MIN_AREA_M2 <= area <= MAX_AREA_M2:
            found.values["area_m2"] = area
        else:
            found.invalid.append("area_m2")
        rest = rest.replace(match.group(0), " ")

    budget = _budget(rest)
    if budget is not None:
        found.values["budget"] = budget

    if city := find_city(rest):
        found.values["city"] = city

    if start := parse_start(rest, today):
        found.values["start_months"], found.values["start"] = start

    if name := _name(rest):
        found.values["name"] = name

    _bare_answer(found, text, rest, awaiting, free_text_ok)
    return found


def identifies(text: str, awaiting: str | None) -> bool:
    """Whether a message may carry a person's name or contact details: one given (even wrongly), an answer to the
    question for one, anything like an email or a long run of digits."""
    found = extract(text, awaiting, free_text_ok=True)
    given = set(found.values) | set(found.invalid)
    return bool(given & {"name", "email", "phone"}) or bool(_EMAIL_LIKE.search(text) or _DIGIT_RUN.search(text))


def _looks_like_budget(text: str) -> bool:
    return bool(_BUDGET_THOUSANDS.search(text) or _BUDGET_PLAIN.search(text) or _BUDGET_KEYWORD.search(text))


def _has_other_slot(text: str) -> bool:
    return bool(_AREA.search(text) or _looks_like_budget(text) or find_city(text))


def _budget(text: str) -> int | None:
    if match := _BUDGET_MILLIONS.search(text):
        return round(_number(match.group(1)) * 1_000_000)
    if match := _BUDGET_THOUSANDS.search(text):
        return round(_number(match.group(1)) * 1000)
    for pattern in (_BUDGET_PLAIN, _BUDGET_KEYWORD):
        if match := pattern.search(text):
            return round(_number(match.group(1)))
    return None


def _start_text(text: str) -> str:
    return " ".join(text.split())[:80]


def _name(text: str) -> str | None:
    if match := _NAME_INTRO.search(text):
        candidate = match.group(1).strip()
        if not find_city(candidate):
            return candidate
    for segment in re.split(r"[,;\n]", text):
        segment = segment.strip()
        if _CAPITALISED_NAME.match(segment) and not find_city(segment) and parse_start(segment) is None:
            return segment
    return None


def _bare_answer(found: Extraction, text: str, rest: str, awaiting: str | None, free_text_ok: bool) -> None:
    """A reply that is just the value asked for: '55', '150 000', 'Gdynia', 'jan kowalski', 'nie wiem'."""
    if awaiting is None or awaiting in found.values or awaiting in found.invalid:
        return
    number = _BARE_NUMBER.match(text)
    if awaiting == "area_m2" and number:
        area = round(_number(number.group(1)))
        if MIN_AREA_M2 <= area <= MAX_AREA_M2:
            found.values["area_m2"] = area
        else:
            found.invalid.append("area_m2")
    elif awaiting == "budget" and number:
        amount = _number(number.group(1))
        found.values["budget"] = round(amount * 1000 if amount < 10000 else amount)
    elif not free_text_ok:
        return
    elif awaiting == "city" and _LETTERS_ONLY.match(text.strip()) and len(text.split()) <= 3:
        found.values["city"] = " ".join(w.capitalize() for w in text.split())
    elif awaiting == "name" and _LETTERS_ONLY.match(text.strip()) and len(text.split()) <= 4:
        found.values["name"] = " ".join(w[:1].upper() + w[1:] for w in text.split())
    elif awaiting == "start" and text.strip():
        found.values["start"] = _start_text(text)
        found.values["start_months"] = None
