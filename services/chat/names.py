"""Whether some words look like a person's name ("Anna", "jan kowalski", "Mary-Jane O'Neil").

Rules, not a first-name list: the one on PyPI (gender-guesser) is unmaintained since 2016, GPL-licensed, takes
0.8 s and 21 MB to load, and still lists "Tak", "Ok", "Hi" and "May" as names, so the rules below would be needed
anyway; a list would also turn away the visitors whose names it lacks. A name is 1-4 words of letters, each with a
vowel, none of them a city, a yes/no, a greeting, a language or a word visitors use to ask for things.
"""
from __future__ import annotations

import re

from services.chat.understanding import fold

_NAME_WORD = re.compile(r"^[^\W\d_]+(?:['’-][^\W\d_]+)*$")
# Plain vowels (Latin with their accents, Cyrillic): keyboard mashing such as "ąęśćź" has none.
_VOWEL = re.compile(r"[aeiouyóáéíúàèìòùäëïöüâêîôûåæøãõаеёиоуыэюяіїє]")
# Folded words that are never part of a name: answers, greetings, fillers, languages, what visitors ask about.
NOT_NAME_WORDS = frozenset(
    [
        "tak", "nie", "ok", "okay", "okej", "yes", "no", "nope", "yeah", "yep", "sure", "jasne", "dobrze", "zgoda",
        "zgadzam", "sie", "agree", "thanks", "thank", "you", "dzieki", "dziekuje", "prosze", "please", "hej", "hi",
        "hello", "hey", "czesc", "witam", "witaj", "dzien", "dobry", "dobranoc", "good", "morning", "evening",
        "afternoon", "polish", "english", "polski", "polska", "angielski", "ukrainski", "ukrainian", "german",
        "niemiecki", "russian", "rosyjski", "pl", "en", "i", "im", "i'm", "i'd", "id", "me", "my", "mine", "we", "us",
        "our", "you", "your", "a", "an", "the", "to", "of", "for", "and", "or", "but", "not", "is", "am", "are", "be",
        "like", "want", "would", "quote", "price", "cost", "costs", "offer", "estimate", "consultation", "visit",
        "call", "phone", "email", "mail", "number", "name", "city", "flat", "house", "budget", "area", "start", "help",
        "question", "info", "information", "details", "contact", "later", "skip", "pass", "none", "nothing", "unknown",
        "ja", "jestem", "mam", "moje", "moj", "moja", "nazywam", "imie", "nazwisko", "chce", "chcialbym", "chcialabym",
        "wycena", "wyceny", "cena", "koszt", "oferta", "konsultacja", "wizyta", "telefon", "numer", "mieszkanie", "dom",
        "remont", "budzet", "metraz", "miasto", "termin", "pytanie", "pomoc", "kontakt", "nie", "wiem", "pomin", "brak",
        "nic", "zaraz", "asap", "teraz", "potem", "pozniej", "anonim", "anonymous", "test", "bye", "goodbye", "cheers",
        "pa", "papa", "widzenia", "narazie", "welcome", "sorry", "przepraszam", "price", "here", "tutaj"
    ]
)


def looks_like_name(text: str, cities: frozenset[str] = frozenset()) -> bool:
    """Whether text (already cut to the candidate words) is a person's name; cities: folded forms of city names."""
    words = text.split()
    if not 1 <= len(words) <= 4 or len(text) > 60:
        return False
    for word in words:
        folded = fold(word).replace("’", "'")
        if not _NAME_WORD.match(word) or len(word) < 2 or not _VOWEL.search(word.lower()):
            return False
        if folded in NOT_NAME_WORDS or folded in cities:
            return False
    return True


def as_name(text: str) -> str:
    """A name as stored: each word capitalised as typed otherwise ("jan kowalski" -> "Jan Kowalski")."""
    return " ".join(word[:1].upper() + word[1:] for word in text.split())
