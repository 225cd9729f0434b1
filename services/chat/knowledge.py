"""The knowledge base (knowledge/faq.yaml, knowledge/dialogue.yaml): language detection and intent matching.

Matching is deterministic: both the message and every pattern are normalised (lower case, Polish diacritics
folded, punctuation dropped); a pattern matches when its words appear consecutively as whole words. The intent
whose matched patterns cover the most words wins; ties go to the intent listed first in the file.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KNOWLEDGE_DIR = Path(__file__).resolve().parent / "knowledge"
LANGUAGES = ("pl", "en")

_FOLD = str.maketrans("ąćęłńóśźżĄĆĘŁŃÓŚŹŻ²", "acelnoszzACELNOSZZ2")
_NON_WORD = re.compile(r"[^a-z0-9@.]+|(?<!\w)\.|\.(?!\w)")
_POLISH_LETTERS = re.compile(r"[ąćęłńóśźż]", re.IGNORECASE)
_PL_WORDS = frozenset({
    "jest", "nie", "tak", "sie", "czy", "jak", "ile", "na", "w", "z", "do", "mam", "chce", "chcialbym", "mieszkanie",
    "mieszkania", "dzien", "dobry", "czesc", "prosze", "dziekuje", "dzieki", "witam", "remont", "remontu", "kosztuje",
    "moj", "moje", "jestem", "nazywam", "metrow", "budzet", "zl", "od", "za", "tys", "miesiac", "miesiace", "miesiecy",
    "kiedy", "gdzie", "jaki", "jaka", "pakiet", "cena"
})
_EN_WORDS = frozenset({
    "the", "is", "are", "how", "much", "what", "hello", "hi", "my", "i", "want", "would", "like", "flat", "apartment",
    "renovation", "cost", "does", "thanks", "thank", "you", "please", "name", "email", "phone", "budget", "long",
    "take", "do", "where", "yes", "no", "in", "months", "month", "next", "start", "which", "a", "an", "of", "it"
})


def normalise(text: str) -> str:
    """Lower case, diacritics folded, punctuation replaced by single spaces."""
    return " ".join(_NON_WORD.sub(" ", text.lower().translate(_FOLD)).split())


def detect_language(text: str, previous: str = "pl") -> str:
    """'pl' or 'en' for one message; a message with no clue (a bare email, a number) keeps the previous one."""
    if _POLISH_LETTERS.search(text):
        return "pl"
    words = normalise(text).split()
    pl = sum(w in _PL_WORDS for w in words)
    en = sum(w in _EN_WORDS for w in words)
    if pl == en:
        return previous if previous in LANGUAGES else "pl"
    return "pl" if pl > en else "en"


# A parsed YAML mapping: its values are whatever the company's files hold; _check and the tests of the shipped
# files make sure the parts the code reads are there.
YamlDoc = dict[str, Any]  # Any: parsed YAML, shaped by the files (see above)


@dataclass(frozen=True)
class Intent:
    name: str
    patterns: tuple[tuple[str, ...], ...]  # normalised, split into words
    answers: dict[str, str]


@dataclass(frozen=True)
class Match:
    intent: str
    answer: str


class KnowledgeBase:
    def __init__(self, faq: YamlDoc, dialogue: YamlDoc):
        self.served_cities: tuple[str, ...] = tuple(faq.get("served_cities") or ())
        self.intents = tuple(self._intent(entry) for entry in faq["intents"])
        self.fallback: dict[str, str] = faq["fallback"]
        self.dialogue = dialogue
        self._check()

    @classmethod
    def load(cls, folder: Path = KNOWLEDGE_DIR) -> KnowledgeBase:
        faq = yaml.safe_load((folder / "faq.yaml").read_text(encoding="utf-8"))
        dialogue = yaml.safe_load((folder / "dialogue.yaml").read_text(encoding="utf-8"))
        return cls(faq, dialogue)

    @staticmethod
    def _intent(entry: YamlDoc) -> Intent:
        phrases = {normalise(str(p)) for lang in LANGUAGES for p in entry["patterns"].get(lang, ())}
        return Intent(
            name=entry["name"],
            patterns=tuple(tuple(p.split()) for p in sorted(phrases) if p),
            answers={lang: " ".join(str(entry["answers"][lang]).split()) for lang in LANGUAGES},
        )

    def _check(self) -> None:
        for lang in LANGUAGES:
            if not self.fallback.get(lang):
                raise ValueError(f"knowledge base: fallback has no {lang!r} answer")
        for kind in ("processing", "marketing"):
            if not all(self.dialogue.get("consent", {}).get(kind, {}).get(lang) for lang in LANGUAGES):
                raise ValueError(f"knowledge base: dialogue.yaml needs consent.{kind} in every language")

    def match(self, text: str, language: str) -> Match:
        words = normalise(text).split()
        best: tuple[int, Intent] | None = None
        for intent in self.intents:
            weight = sum(len(p) for p in intent.patterns if _contains(words, p))
            if weight and (best is None or weight > best[0]):
                best = (weight, intent)
        if best is None:
            return Match("fallback", self.fallback[language])
        return Match(best[1].name, best[1].answers[language])

    def answer_for(self, intent: str, language: str) -> str:
        for candidate in self.intents:
            if candidate.name == intent:
                return candidate.answers[language]
        return self.fallback[language]

    def say(self, path: str, language: str, **values: object) -> str:
        """A dialogue text by dotted path, e.g. say('questions.email', 'pl')."""
        node: Any = self.dialogue  # Any: a walk down parsed YAML, whose shape only the files define
        for part in path.split("."):
            node = node[int(part) if isinstance(node, dict) and part.isdigit() and int(part) in node else part]
        return " ".join(str(node[language]).split()).format(**values)

    def consent_wording(self, language: str) -> str:
        """The exact consent text a visitor in this language is shown: the processing and the marketing prompt."""
        return "\n\n".join(self.say(f"consent.{kind}", language) for kind in ("processing", "marketing"))

    def consent_version(self, language: str) -> str:
        """The wording's own identity (the consent service stores the text under this hash): it cannot drift from
        the text the way a hand-typed label could."""
        return hashlib.sha256(self.consent_wording(language).encode()).hexdigest()  # SHA-256, hex


def _contains(words: list[str], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(tuple(words[i : i + n]) == phrase for i in range(len(words) - n + 1))
