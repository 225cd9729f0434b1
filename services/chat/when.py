"""When a visitor wants to start, and what they ask sales to do (call, consult, visit), in Polish or English.

dateparser turns a time phrase into a date in Europe/Warsaw (inflected Polish weekdays and months, "jutro",
"za 2 tygodnie", "next Tuesday", "in december"), always the next future occurrence. It is slow (about a millisecond
a phrase, ~0.1 s the first time) and reads too much into free text ("55 m" as minutes), so it only sees the phrases a
regular expression found, and only when the message has a date word at all. Rules cover what dateparser cannot:
"przyszły wtorek" / "od marca" (it does not know these Polish forms: the bare weekday or month gives the same next
occurrence), seasons ("next spring" = March), "as soon as possible", and "1.03" (dateparser reads it as 01:03).
"""
from __future__ import annotations

import datetime as dt
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from services.chat.understanding import fold

WARSAW = ZoneInfo("Europe/Warsaw")
START_ASAP = "asap"

# On _folded() text: lower case, no Polish diacritics, punctuation kept.
_ASAP = re.compile(
    r"\b(asap|od zaraz|od razu|od teraz|natychmiast|jak najszybciej|jak najwczesniej|immediately|right away|"
    r"right now|as soon as possible|as soon as we can|straight away)\b"
)
_SEASONS = (
    (re.compile(r"\b(wiosn\w*|spring)\b"), 3),
    (re.compile(r"\b(lato|latem|lecie|summer)\b"), 6),
    (re.compile(r"\b(jesien\w*|autumn|fall)\b"), 9),
    (re.compile(r"\b(zim\w*|winter)\b"), 12),
)
_WEEKDAY = (
    r"poniedzialek|poniedzialku|wtorek|wtorku|sroda|srode|srody|czwartek|czwartku|piatek|piatku|sobota|sobote|"
    r"soboty|niedziela|niedziele|niedzieli|monday|tuesday|wednesday|thursday|friday|saturday|sunday"
)
_MONTH = (
    r"styczen|stycznia|styczniu|luty|lutego|lutym|marzec|marca|marcu|kwiecien|kwietnia|kwietniu|maj|maja|maju|"
    r"czerwiec|czerwca|czerwcu|lipiec|lipca|lipcu|sierpien|sierpnia|sierpniu|wrzesien|wrzesnia|wrzesniu|"
    r"pazdziernik|pazdziernika|pazdzierniku|listopad|listopada|listopadzie|grudzien|grudnia|grudniu|"
    r"january|february|march|april|june|july|august|september|october|november|december"
)
_UNIT = r"dni|days?|tydzien|tygodnie|tygodni|weeks?|miesiac|miesiace|miesiecy|months?|roku|rok|lata|lat|years?"
# The time phrases handed to dateparser, most specific first. English "may" only after "in"/"of"/a day: it is a verb.
_PHRASES = re.compile(
    rf"\b(?:\d{{1,2}}\s+(?:{_MONTH})(?:\s+\d{{4}})?|(?:{_MONTH})\s+\d{{1,2}}(?:st|nd|rd|th)?\b"
    rf"|(?:in|of|\d{{1,2}})\s+may\b"
    rf"|(?:next|this|przyszl\w*|nastepn\w*)\s+(?:{_WEEKDAY})|(?:{_WEEKDAY})"
    rf"|(?:{_MONTH})"
    rf"|(?:za|in|within|w ciagu)\s+(?:\d{{1,2}}|a|one|pol|half a)\s*(?:{_UNIT})\b"
    rf"|(?:za|in a|in one)\s+(?:tydzien|miesiac|rok|week|month|year)\b"
    rf"|(?:w\s+)?(?:przyszlym|nastepnym|tym)\s+(?:tygodniu|miesiacu|roku)|(?:next|this)\s+(?:week|month|year)"
    rf"|pojutrze|jutro|dzisiaj|dzis|day after tomorrow|tomorrow|today)\b"
)
_NUMERIC_DATE = re.compile(r"(?<![\d.])(\d{1,2})[./](\d{1,2})(?:[./](\d{4}))?(?![\d.]|\s*(?:m|zl|pln|tys|k)\b)")
# Words without which a message names no time (a set lookup per word: cheaper than any of the patterns above).
_OTHER_TIME_WORDS = (
    "may jutro pojutrze dzis dzisiaj today tomorrow tygodniu days weeks months years miesiacu asap zaraz razu teraz "
    "natychmiast najszybciej najwczesniej immediately away now soon wiosna wiosne wiosny wiosnie spring lato latem "
    "lecie summer jesien jesienia jesieni autumn fall zima zimie zime zimowe winter"
)
_TIME_WORDS = frozenset(
    _WEEKDAY.split("|") + _MONTH.split("|") + _UNIT.replace("s?", "").split("|") + _OTHER_TIME_WORDS.split(" ")
)
_WORD = re.compile(r"[a-z]+")
_NUMERIC_HINT = re.compile(r"\d[./]\d")
# Phrases dateparser does not know: a prefix to drop (the bare weekday or month gives the same next occurrence), or
# a phrase to say instead.
_PREFIX = re.compile(rf"^(?:next|this|przyszl\w*|nastepn\w*)\s+(?=(?:{_WEEKDAY})$)")
_INSTEAD = (
    (re.compile(r"^(?:in|of)\s+may$"), "may"),
    (re.compile(r"^(?:za|in|within|w ciagu)\s+(?:pol roku|half a year)$"), "za 6 miesięcy"),
    (re.compile(r"^(?:za|in|within|w ciagu)\s+(?:a|one|jeden)?\s*(?:tydzien|week)$"), "za 1 tydzień"),
    (re.compile(r"^(?:za|in|within|w ciagu)\s+(?:a|one|jeden)?\s*(?:miesiac|month)$"), "za 1 miesiąc"),
    (re.compile(r"^(?:za|in|within|w ciagu)\s+(?:a|one|jeden)?\s*(?:rok|year)$"), "za 1 rok"),
    (re.compile(r"^(?:within|w ciagu)\s+(.*)$"), r"za \1"),
)


def _folded(text: str) -> str:
    """Character for character the text (so a span found here is the same span there), folded."""
    folded = fold(text).replace("\u2019", "'")
    return folded if len(folded) == len(text) else " ".join(folded.split())


def warsaw_today() -> dt.date:
    """Today's date where the company works, whatever the server's time zone."""
    return dt.datetime.now(WARSAW).date()


@dataclass(frozen=True)
class When:
    """A point in time a visitor named: a day, a month, or as soon as possible."""

    value: str          # "YYYY-MM-DD" | "YYYY-MM" | "asap"
    months: int         # whole calendar months from today (0: asap or this month)
    day: dt.date | None  # set when a single day was named


@dataclass(frozen=True)
class ContactRequest:
    """What the visitor asked sales to do, and when and how, as far as they said."""

    kind: str     # callback | consultation | site_visit
    day: str      # "YYYY-MM-DD" or ""
    time: str     # "HH:MM" | morning | afternoon | evening | ""
    channel: str  # phone | email | video | ""


def warm_up() -> None:
    """Load dateparser's language data before the first visitor's message (it costs up to half a second)."""
    parse_when("w maju")
    parse_when("next Tuesday")


def has_time_words(text: str) -> bool:
    """Cheap check whether a message may name a time at all (so dateparser is not called for the rest)."""
    folded = _folded(text)
    return any(word in _TIME_WORDS for word in _WORD.findall(folded)) or bool(_NUMERIC_HINT.search(folded))


def parse_when(text: str, today: dt.date | None = None) -> When | None:
    """The first start time named in a message, normalised; None when none is named."""
    today = today or warsaw_today()
    folded = _folded(text)
    if _ASAP.search(folded):
        return When(START_ASAP, 0, None)
    if has_time_words(text):
        if (match := _NUMERIC_DATE.search(folded)) and (day := _numeric_day(match, today)):
            return _day(day, today)
        for match in _PHRASES.finditer(folded):
            original = text[match.start():match.end()] if len(folded) == len(text) else match.group(0)
            if found := _dateparser_when(match.group(0), original.lower(), today):
                return found
    for pattern, month in _SEASONS:
        if pattern.search(folded):
            year = today.year if month > today.month else today.year + 1
            return _month(dt.date(year, month, 1), today)
    return None


def parse_day(text: str, today: dt.date | None = None) -> dt.date | None:
    """A single day named in a message ("we wtorek", "jutro", "on Friday"), for a request."""
    when = parse_when(text, today) if has_time_words(text) else None
    return when.day if when else None


def _numeric_day(match: re.Match[str], today: dt.date) -> dt.date | None:
    day, month = int(match.group(1)), int(match.group(2))
    year = int(match.group(3)) if match.group(3) else today.year
    try:
        date = dt.date(year, month, day)
        if not match.group(3) and date < today:
            date = date.replace(year=year + 1)
    except ValueError:
        return None
    return date


def _day(day: dt.date, today: dt.date) -> When:
    return When(day.isoformat(), _months_between(today, day), day)


def _month(first: dt.date, today: dt.date) -> When:
    return When(first.strftime("%Y-%m"), _months_between(today, first), None)


def _months_between(today: dt.date, later: dt.date) -> int:
    return max(0, (later.year - today.year) * 12 + later.month - today.month)


def _dateparser_when(folded: str, phrase: str, today: dt.date) -> When | None:
    """folded: the phrase as matched (to recognise it), phrase: as typed (dateparser knows Polish with diacritics)."""
    if prefix := _PREFIX.match(folded):
        folded, phrase = folded[prefix.end():], phrase[prefix.end():]
    for pattern, instead in _INSTEAD:
        if pattern.match(folded):
            phrase = folded = pattern.sub(instead, folded)
            break
    with _PARSER_LOCK:
        data = _parser(today).get_date_data(phrase)
    if data.date_obj is None:
        return None
    date = data.date_obj.date()
    if data.period in ("day", "week"):
        return _day(date, today)
    if data.period == "month" and date.month == today.month and date.year == today.year + 1 and _is_month(folded):
        date = date.replace(year=today.year)  # "w listopadzie" said in November: this month, not next year
    return _month(date.replace(day=1), today)


def _is_month(phrase: str) -> bool:
    return re.fullmatch(rf"(?:w\s+|in\s+)?(?:{_MONTH}|may)", phrase) is not None


_PARSER_LOCK = threading.Lock()


@lru_cache(maxsize=2)
def _parser(today: dt.date) -> Any:
    """One dateparser per day (its settings hold the day relative phrases count from); imported here because
    loading it costs ~0.1 s, which commands that never read a date should not pay."""
    import dateparser  # type: ignore[import-untyped]  # no stubs published

    return dateparser.DateDataParser(
        languages=["pl", "en"],
        settings={
            "PREFER_DATES_FROM": "future",
            "RELATIVE_BASE": dt.datetime.combine(today, dt.time(12)),
            "DATE_ORDER": "DMY",
            "PREFER_DAY_OF_MONTH": "first",
            "RETURN_AS_TIMEZONE_AWARE": False,
        },
    )


# Requests: what is asked for, then whether it is asked (not a question about it).
_SITE_VISIT = re.compile(
    r"\b(przyjech\w*|przyjsc|przyjdzie\w*|odwiedz\w*|wizyt\w*|pomiar\w*|ogledzin\w*|obejrz\w*|come (?:and |to )?"
    r"(?:see|look|visit|over|round)|visit|site visit|inspection|measure\w*|look at the flat)\b"
)
_CONSULTATION = re.compile(r"\b(konsultac\w*|spotkani\w*|spotkac|consultation\w*|meeting|appointment)\b")
_CALLBACK = re.compile(
    r"\b(zadzwon\w*|oddzwon\w*|dzwon\w*|telefon\w*|kontakt\w*|skontaktuj\w*|call\w*|ring|phone me|get in touch|"
    r"contact me)\b"
)
_ASKING = re.compile(
    r"\b(chce|chcemy|chcialbym|chcialabym|chcielibysmy|prosze|prosimy|poprosze|umowic|umow\w*|zadzwon\w*|"
    r"oddzwon\w*|skontaktuj\w*|przyjedz\w*|moglby|moglaby|mozecie|moze ktos|czy ktos moze|potrzebuje|"
    r"i want|we want|i'd like|i would like|we'd like|we would like|please|call me|call us|ring me|contact me|"
    r"can someone|could someone|can you|could you|book|schedule|arrange|let's|lets)\b"
)
_ABOUT = re.compile(r"\b(ile|czy jest|is it|how much|do you|does it|jak dlugo|how long|what|co to)\b")
_CLOCK = re.compile(r"\b(?:po|przed|o|od|około|okolo|after|before|at|around|from)\s+(\d{1,2})(?:[:.](\d{2}))?"
                    r"\s*(am|pm|a\.m\.|p\.m\.)?(?!\s*(?:m|zl|pln|tys|k|dni|days)\b)")
_CLOCK_BARE = re.compile(r"\b(\d{1,2})(?::(\d{2})\s*(am|pm)?|\s*(am|pm))\b")
_PARTS_OF_DAY = (
    (re.compile(r"\b(rano|rankiem|przed poludniem|z rana|morning)\b"), "morning"),
    (re.compile(r"\b(po poludniu|popoludniu|afternoon)\b"), "afternoon"),
    (re.compile(r"\b(wieczorem|wieczor|evening|tonight)\b"), "evening"),
)
_VIDEO = re.compile(r"\b(wideo|video|zoom|teams|google meet|skype|online|wideorozmow\w*|videocall|video call)\b")
_EMAIL_CHANNEL = re.compile(r"\b(mail\w*|e-mail\w*|email\w*)\b")
_PHONE_CHANNEL = re.compile(r"\b(zadzwon\w*|oddzwon\w*|telefon\w*|call\w*|phone|ring)\b")


def parse_request(text: str, today: dt.date | None = None) -> ContactRequest | None:
    """A callback, consultation or site visit the visitor asks for ("zadzwońcie we wtorek po 17", "I want a
    consultation"); None for anything else, a question about them included ("ile kosztuje konsultacja?")."""
    folded = _folded(text)
    if _SITE_VISIT.search(folded):
        kind = "site_visit"
    elif _CONSULTATION.search(folded):
        kind = "consultation"
    elif _CALLBACK.search(folded):
        kind = "callback"
    else:
        return None
    if not _ASKING.search(folded) or (_ABOUT.search(folded) and not re.search(r"\b(call me|zadzwon)", folded)):
        return None
    day = parse_day(text, today)
    return ContactRequest(kind, day.isoformat() if day else "", _time(folded), _channel(folded, kind))


def preferred_time(text: str, today: dt.date | None = None) -> tuple[str, str]:
    """(day "YYYY-MM-DD" or "", time "HH:MM" / morning / afternoon / evening or "") named in an answer to "when shall
    we call?" ("jutro po 17", "Tuesday morning")."""
    day = parse_day(text, today)
    return (day.isoformat() if day else ""), _time(_folded(text))


def _time(folded: str) -> str:
    if match := _CLOCK.search(folded) or _CLOCK_BARE.search(folded):
        hour = int(match.group(1))
        minute = int(match.group(2) or 0)
        suffix = next((g for g in match.groups()[2:] if g), "")
        if suffix.startswith("p") and hour < 12:
            hour += 12
        elif not suffix and 1 <= hour <= 7:
            hour += 12  # "po 5", "after 5": office hours, so the afternoon
        if hour <= 23 and minute <= 59:
            return f"{hour:02d}:{minute:02d}"
    for pattern, part in _PARTS_OF_DAY:
        if pattern.search(folded):
            return part
    return ""


def _channel(folded: str, kind: str) -> str:
    if _VIDEO.search(folded):
        return "video"
    if _EMAIL_CHANNEL.search(folded):
        return "email"
    if kind == "callback" or _PHONE_CHANNEL.search(folded):
        return "phone"
    return ""
