"""Lead slots taken from free text: name, email, phone, city, flat area, budget (with its currency), preferred start.

Several may come in one message ("Jan Kowalski, jan@example.com, 600 700 800, Warszawa, 55 m2"). When the bot has
just asked for one slot, a bare answer ("55", "Gdynia", "jan kowalski") fills that slot. A value that looks like a
slot but fails validation (an email email-validator refuses, a number phonenumbers finds valid nowhere, an area
outside 10-1000 m²) is reported as invalid, so the bot can say what is wrong; a valid new value replaces the old
one (a correction). A yes/no answer is never a value; a refusal ("nie chcę podawać budżetu", "nie wiem") is
reported as declined, so the slot is not asked again.

Libraries read the values: phonenumbers (E.164), email-validator (syntax only, never DNS), price-parser (the amount,
whatever its separators), dateparser (dates, see when.py). Regular expressions only find where a value is and which
unit it has: an area ("55 m", "55 metrów") and a budget ("55 tys", "55k zł") differ by their unit alone.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import phonenumbers
import regex  # type: ignore[import-untyped]  # stubs not installed; one call (fullmatch, partial)
from email_validator import EmailNotValidError, validate_email
from price_parser import Price

from services.chat.knowledge import normalise
from services.chat.names import as_name
from services.chat.names import looks_like_name as _looks_like_name
from services.chat.understanding import fold
from services.chat.when import When, has_time_words, parse_request, parse_when, warsaw_today

__all__ = ["warsaw_today"]  # re-exported: the conversation reads "today" from here

SLOTS = ("name", "email", "phone", "city", "area_m2", "budget", "start")
# A captured value: text (name, email, phone, city, start, budget_currency), a number (area_m2, budget,
# start_months) or, for start_months, unknown.
SlotValue = str | int | None
MIN_AREA_M2, MAX_AREA_M2 = 10, 1000
DEFAULT_CURRENCY = "PLN"
# Where a national number that is not Polish may come from; it is taken when it is valid in exactly one of them.
FALLBACK_REGIONS = ("GB", "IE", "DE", "UA", "CZ", "SK", "LT", "NL", "FR", "ES", "IT", "US")

_EMAIL_LIKE = re.compile(r"[^\s<>()\[\],;:\"']*@[^\s<>()\[\],;:\"']*")
_PHONE_CHARACTERS = re.compile(r"^[\d\s+()./-]{1,40}$")
_PHONE_CANDIDATE = re.compile(r"(?<![\w+])(?<!\d[.,])(?:\+|00)?\s?\(?\d[\d\s().-]{4,20}\d(?!\w|[.,]\d)")
_DIGIT_RUN = re.compile(r"(?<![\d+])(?:\+|00)?\d(?:[\s-]?\d){6,}(?!\d)")
_A_DATE = re.compile(r"^\d{1,2}[./]\d{1,2}[./]\d{2,4}$")
_AMOUNT = r"\d{1,3}(?:[ \u00a0.]\d{3})+(?:,\d+)?|\d+(?:[.,]\d+)?"
_AREA = re.compile(
    rf"({_AMOUNT})\s*(?:m2|m²|m\^2|mkw|m\.?\s?kw\.?|metr\w*|meters?|metres?|sq\.?\s?m|sqm|square\s+met\w*"
    r"|m(?![\w²]))(?!\w)",
    re.IGNORECASE,
)
_MONEY = re.compile(
    rf"(€\s*)?({_AMOUNT})\s*(tys\.?|tysi\w*|k|mln|milion\w*|million\w*|mio)?(?![\w²])\.?"
    r"\s*(złotych|zlotych|zł|zl|pln|euro|eur|€)?(?!\w)",
    re.IGNORECASE,
)
_BUDGET_WORD = re.compile(r"(?:budżet\w*|budzet\w*|budget)\D{0,20}", re.IGNORECASE)
_MULTIPLIERS = (("tys", 1000), ("k", 1000), ("m", 1_000_000))  # by first letter: tys/tysięcy, k, mln/million/mio
_BARE_NUMBER = re.compile(rf"^\s*(?:ok\.?|około|okolo|about|approx\.?|~)?\s*({_AMOUNT})\s*$", re.IGNORECASE)
_NAME_INTRO = re.compile(
    r"(?:(?i:nazywam si[eę]|mam na imi[eę]|my name is|name is|imi[eę] i nazwisko:?|imi[eę]:|name:)\s+"
    r"([^\W\d_][\w'’-]*(?:\s+[^\W\d_][\w'’-]*){0,2})"
    r"|(?i:jestem|i am|i'm|i’m|this is|tu|z tej strony)\s+"
    r"([A-ZĄĆĘŁŃÓŚŹŻ][\w'’-]+(?:\s+[A-ZĄĆĘŁŃÓŚŹŻ][\w'’-]+){0,2}))"
)
_CAPITALISED_NAME = re.compile(r"^[A-ZĄĆĘŁŃÓŚŹŻ][a-ząćęłńóśźż'’-]+(?:\s+[A-ZĄĆĘŁŃÓŚŹŻ][a-ząćęłńóśźż'’-]+){1,2}$")
_SEGMENTS = re.compile(r"[,;:\n]|[.!?](?:\s|$)")  # clauses and sentences ("tel. 501" splits too: no harm)
_HERE = re.compile(r"\s+(?:here|speaking|tutaj|z tej strony)$", re.IGNORECASE)
_LETTERS_ONLY = re.compile(r"^[^\W\d_][^\W\d_' -]{1,59}$")
_ANSWER_WORDS = frozenset(
    [
        "tak", "nie", "ok", "okay", "okej", "yes", "no", "nope", "yeah", "yep", "sure", "jasne", "dobrze", "zgoda",
        "zgadzam", "sie", "agree", "i", "thanks", "thank", "you", "dzieki", "dziekuje", "prosze", "please",
        "oczywiscie", "of", "course", "fine", "great", "super", "swietnie"
    ]
)
_REFUSAL = re.compile(
    r"\b(nie chce\w*(?: tego)? (?:podawac|podac|mowic|powiedziec|zdradzac|udostepniac)|nie podam|nie powiem|"
    r"wol\w* nie|rather not|prefer not|(?:don t|do not|dont) want to (?:give|say|share|tell)|won t (?:give|say|share)"
    r"|skip|pomin\w*|nie wiem|nie mam pojecia|trudno powiedziec|(?:don t|do not|dont) know|no idea|not sure|"
    r"nie jestem pewn\w*|jeszcze nie wiem|nie ma znaczenia|nie dotyczy|n a)\b"
)
_SLOT_WORDS = {
    "budget": re.compile(r"\b(budzet\w*|budget|kwot\w*|pieniedzy|money|koszt\w*)\b"),
    "phone": re.compile(r"\b(telefon\w*|numer\w*|phone|number)\b"),
    "email": re.compile(r"\b(mail\w*|email\w*)\b"),
    "name": re.compile(r"\b(imie|imienia|nazwisk\w*|name)\b"),
    "city": re.compile(r"\b(miast\w*|city|town|lokalizac\w*|gdzie|where)\b"),
    "area_m2": re.compile(r"\b(metraz\w*|powierzchni\w*|area|size|metr\w*|m2)\b"),
    "start": re.compile(r"\b(termin\w*|kiedy|start\w*|date|rozpocz\w*|when|data)\b"),
}

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
_CITY_WORDS = frozenset(_CITY_FORMS)


@dataclass
class Extraction:
    values: dict[str, SlotValue] = field(default_factory=dict)  # slot -> normalised value (+ start_months, currency)
    invalid: list[str] = field(default_factory=list)          # slots the visitor tried to give, but wrongly
    declined: list[str] = field(default_factory=list)         # slots the visitor will not give or does not know


def slot_text(slots: Mapping[str, SlotValue], name: str) -> str | None:
    value = slots.get(name)
    return value if isinstance(value, str) else None


def slot_number(slots: Mapping[str, SlotValue], name: str) -> int | None:
    value = slots.get(name)
    return value if isinstance(value, int) else None


def normalise_email(email: str) -> str | None:
    """How an email is compared and stored everywhere: email-validator's normal form (syntax only, no DNS),
    lower-cased; None when it is not an email address."""
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


def normalise_phone(raw: str) -> str | None:
    """A phone number in E.164 ("601 602 699" -> "+48601602699", "+44 7911 123456", "0044..."), or None.

    Poland is the default region. With a country code the number is taken when phonenumbers finds it valid, or of
    a mobile's length there: the visitor named the country, and phonenumbers' ranges of valid numbers lag what
    operators hand out (it refuses the UK's 07700 900xxx). A national number that is not Polish is taken from the one
    fallback region where it is a valid mobile, or else the one where it has a mobile's prefix and length; a valid
    landline is not enough, as Germany's open numbering makes almost any number one. Up to 9 digits without a
    leading 0 is a mistyped Polish number, not a foreign one."""
    if not _PHONE_CHARACTERS.match(raw):
        return None
    if raw.strip().startswith(("+", "00")):
        return _parse_phone(raw, "PL", possible=True)
    if polish := _parse_phone(raw, "PL"):
        return polish
    digits = re.sub(r"\D", "", raw)
    if len(digits) <= 9 and not digits.startswith("0"):
        return None
    valid = {number for region in FALLBACK_REGIONS if (number := _parse_phone(raw, region)) and _is_mobile(number)}
    if len(valid) == 1:
        return valid.pop()
    shaped = {number for region in FALLBACK_REGIONS if (number := _mobile_shaped(raw, region))}
    return shaped.pop() if len(valid) == 0 and len(shaped) == 1 else None


def _parse_phone(raw: str, region: str, possible: bool = False) -> str | None:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    mobile_length = possible and phonenumbers.is_possible_number_for_type(number, phonenumbers.PhoneNumberType.MOBILE)
    if not (phonenumbers.is_valid_number(number) or mobile_length):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _mobile_shaped(raw: str, region: str) -> str | None:
    """The number in E.164 when, read in region, it has a mobile's length and its first digits begin one of the
    region's mobile numbers (a partial match of phonenumbers' own pattern)."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    pattern = metadata.mobile.national_number_pattern if metadata and metadata.mobile else None
    national = phonenumbers.national_significant_number(number)
    if not pattern or not phonenumbers.is_possible_number_for_type(number, phonenumbers.PhoneNumberType.MOBILE):
        return None
    if not regex.fullmatch(pattern, national[:3], partial=True):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _is_mobile(e164: str) -> bool:
    kind = phonenumbers.number_type(phonenumbers.parse(e164))
    return kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


def find_city(text: str) -> str | None:
    for word in normalise(text).split():
        if word in _CITY_FORMS:
            return _CITY_FORMS[word]
    return None


def looks_like_name(text: str) -> bool:
    """Whether text is a person's name: "Anna", "jan kowalski"; not "Polish", "I'd like a quote", "tak", "Poznań"."""
    return _looks_like_name(text, _CITY_WORDS)


def parse_start(text: str, today: dt.date | None = None) -> When | None:
    """The preferred start named in a message ("w maju", "przyszły wtorek", "asap", "next spring"); None if none."""
    return parse_when(text, today or warsaw_today()) if has_time_words(text) else None


def extract(
    text: str, awaiting: str | None = None, free_text_ok: bool = False, today: dt.date | None = None
) -> Extraction:
    """Every slot value in one message. free_text_ok: the message is not a question, so a bare answer to the
    awaited slot (a name, a city) may be taken as it is. today: the day in Warsaw that dates count from."""
    found = Extraction()
    if _is_answer_only(text):
        return found
    rest = _emails(found, text, awaiting, free_text_ok)
    rest = _area(found, rest)
    rest = _money(found, rest)
    rest = _phones(found, rest, text, awaiting, free_text_ok)
    if city := find_city(rest):
        found.values["city"] = city
    if (start := parse_start(rest, today)) and (awaiting == "start" or parse_request(text, today) is None):
        found.values["start"], found.values["start_months"] = start.value, start.months  # not a callback's day
    if name := _name(rest):
        found.values["name"] = name
    _bare_answer(found, text, awaiting, free_text_ok)
    _declined(found, text, awaiting)
    return found


def identifies(text: str, awaiting: str | None) -> bool:
    """Whether a message may carry a person's name or contact details: anything like an email or a long run of
    digits, an answer to the question for one, a name. Cheap (no dates, no money): it runs on every message."""
    if _EMAIL_LIKE.search(text) or _DIGIT_RUN.search(text):
        return True
    if _is_answer_only(text):
        return False
    if awaiting in ("email", "phone"):
        return not (_has_other_slot(text) or has_time_words(text) or "?" in text)  # else a wrong email or phone
    if awaiting == "name" and looks_like_name(_strip_punctuation(text)):
        return True
    return _name(text) is not None


def _emails(found: Extraction, text: str, awaiting: str | None, free_text_ok: bool) -> str:
    candidates = [match.group(0).rstrip(".") for match in _EMAIL_LIKE.finditer(text)]
    valid = [email for email in map(normalise_email, candidates) if email]
    if valid:
        found.values["email"] = valid[-1]
    elif candidates or (awaiting == "email" and free_text_ok and not _has_other_slot(text)):
        found.invalid.append("email")
    return _EMAIL_LIKE.sub(" ", text)


def _area(found: Extraction, text: str) -> str:
    match = _AREA.search(text)
    if not match:
        return text
    area = round(_amount(match.group(1)))
    if MIN_AREA_M2 <= area <= MAX_AREA_M2:
        found.values["area_m2"] = area
    else:
        found.invalid.append("area_m2")
    return text.replace(match.group(0), " ", 1)


def _money(found: Extraction, text: str) -> str:
    """A budget: an amount with a multiplier or a currency ("55 tys", "55k zł", "€40k", "40 000 EUR"), or any
    amount after the word budget ("budżet 200 000")."""
    keyword = _BUDGET_WORD.search(text)
    for match in _MONEY.finditer(text):
        euro_sign, amount, multiplier, currency = match.groups()
        after_keyword = keyword is not None and match.start() == keyword.end()
        if not (euro_sign or multiplier or currency or after_keyword):
            continue
        value = _amount(amount) * _multiplier(multiplier)
        if not (multiplier or currency or euro_sign) and value < 10000:
            value *= 1000  # "budżet 200": thousands, as people say it
        found.values["budget"] = round(value)
        found.values["budget_currency"] = "EUR" if euro_sign or (currency or "").lower().startswith(("eur", "€")) \
            else DEFAULT_CURRENCY
        return text.replace(match.group(0), " ", 1)
    return text


def _multiplier(word: str | None) -> int:
    folded = fold(word or "")
    return next((factor for prefix, factor in _MULTIPLIERS if folded.startswith(prefix)), 1)


def _amount(raw: str) -> float:
    """'150 000' / '150.000' -> 150000, '1,5' / '1.5' -> 1.5 (price-parser reads the separators)."""
    amount = Price.fromstring(raw.replace("\u00a0", " ")).amount_float
    return amount if amount is not None else 0.0


def _phones(found: Extraction, rest: str, text: str, awaiting: str | None, free_text_ok: bool) -> str:
    for match in _PHONE_CANDIDATE.finditer(rest):
        candidate = match.group(0).strip()
        digits = sum(ch.isdigit() for ch in candidate)
        if digits < 7 or _A_DATE.match(candidate):
            continue
        if phone := normalise_phone(candidate):
            found.values["phone"] = phone
        else:
            found.invalid.append("phone")
        return rest.replace(match.group(0), " ", 1)
    bare_number_asked = awaiting in ("area_m2", "budget") and _BARE_NUMBER.match(text)
    if awaiting == "phone" and free_text_ok and not bare_number_asked and re.search(r"\d", rest) \
            and not _has_other_slot(rest):
        found.invalid.append("phone")
    return rest


def _has_other_slot(text: str) -> bool:
    return bool(_AREA.search(text) or _BUDGET_WORD.search(text) or find_city(text)
                or any(m.group(1) or m.group(3) or m.group(4) for m in _MONEY.finditer(text)))


def _name(text: str) -> str | None:
    if match := _NAME_INTRO.search(text):
        words = (match.group(1) or match.group(2)).split()
        while words and not looks_like_name(" ".join(words)):
            words.pop()  # "Anna z" -> "Anna"
        if words:
            return as_name(" ".join(words))
    for segment in _SEGMENTS.split(text):
        segment = _HERE.sub("", segment.strip())  # "Emma Clarke here", "Anna Nowak z tej strony"
        if _CAPITALISED_NAME.match(segment) and looks_like_name(segment) and not has_time_words(segment):
            return segment
    return None


def _strip_punctuation(text: str) -> str:
    return text.strip().strip(".!?")


def _is_answer_only(text: str) -> bool:
    """'tak', 'tak, zgadzam się', 'yes I agree', 'no thanks', 'ok': an answer, never a slot value."""
    words = normalise(text).split()
    return bool(words) and all(word in _ANSWER_WORDS for word in words)


def _bare_answer(found: Extraction, text: str, awaiting: str | None, free_text_ok: bool) -> None:
    """A reply that is just the value asked for: '55', '150 000', 'Gdynia', 'jan kowalski'."""
    if awaiting is None or awaiting in found.values or awaiting in found.invalid:
        return
    number = _BARE_NUMBER.match(text)
    answer = _strip_punctuation(text)
    if awaiting == "area_m2" and number:
        area = round(_amount(number.group(1)))
        if MIN_AREA_M2 <= area <= MAX_AREA_M2:
            found.values["area_m2"] = area
        else:
            found.invalid.append("area_m2")
    elif awaiting == "budget" and number:
        amount = _amount(number.group(1))
        found.values["budget"] = round(amount * 1000 if amount < 10000 else amount)
        found.values["budget_currency"] = DEFAULT_CURRENCY
    elif not free_text_ok or _REFUSAL.search(normalise(text)):
        return
    elif awaiting == "city" and _LETTERS_ONLY.match(answer) and len(answer.split()) <= 3:
        found.values["city"] = " ".join(w.capitalize() for w in answer.split())
    elif awaiting == "name" and looks_like_name(answer):
        found.values["name"] = as_name(answer)


def _declined(found: Extraction, text: str, awaiting: str | None) -> None:
    """'Nie chcę podawać budżetu' declines the budget; a refusal naming no slot ('nie wiem', 'skip') the awaited one."""
    folded = normalise(text)
    if not _REFUSAL.search(folded):
        return
    named = [slot for slot, words in _SLOT_WORDS.items() if words.search(folded)]
    if not named and awaiting:
        named = [awaiting]
    found.declined = [slot for slot in named if slot not in found.values and slot not in found.invalid]
