"""What a visitor's message is about, and in which language: lemmatisation (simplemma), typo tolerance (rapidfuzz),
ranked retrieval (BM25, rank-bm25) over the knowledge base's example phrasings, and language detection (lingua,
restricted to Polish and English).

A message is reduced to terms: numbers, emails and phones become placeholder terms (a visitor giving details looks
alike whatever the digits), every word is lemmatised (Polish first, then English) and folded (lower case, no
diacritics, so "łazienki", "łazienkę" and "lazienka" meet), and a word the knowledge base does not know is replaced
by the closest one it does (a typo), when one is close enough. Each topic's example phrasings, reduced the same way,
form one BM25 document; the best-scoring topic wins when its score reaches MIN_SCORE, otherwise the message is not
understood and the closest topics are offered. The choices (one document per topic, the threshold, lingua's
confidence) were measured on the development corpus: see the chat README.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache

import simplemma
from lingua import Language, LanguageDetector, LanguageDetectorBuilder
from rank_bm25 import BM25Okapi  # type: ignore[import-untyped]  # the package ships no type information
from rapidfuzz import fuzz, process

LANGUAGES = ("pl", "en")
NOT_UNDERSTOOD = "out_of_scope"
# Topics that are no question to offer a visitor as a button.
NEVER_OFFERED = frozenset({NOT_UNDERSTOOD, "provide_details"})
# BM25's term-frequency saturation and length normalisation; b below the usual 0.75 because a topic's document is
# as long as its list of examples, which says nothing about the topic (chosen on the development corpus).
BM25_K1, BM25_B = 1.2, 0.5
# A topic must score at least this (BM25) to be taken as understood; chosen on the development corpus.
MIN_SCORE = 2.0
# Greetings and thanks give way to a question in the same message ("Dzień dobry, ile kosztuje remont?").
SOCIAL_TOPICS = frozenset({"greeting", "thanks", "goodbye"})
QUESTION_OVER_GREETING = 0.7  # ... when the question scores at least this fraction of the greeting
# A word of the message that stands for a whole class (a city's name): matched as the class.
CITY = "zzcity"
# How close (rapidfuzz ratio, 0-100) an unknown word must be to a known one to be read as it.
TYPO_SIMILARITY = 80
MIN_TYPO_LENGTH = 4
# Below this lingua confidence, or with fewer letters ("ok", "tak"), a message says too little to change the
# conversation's language.
MIN_LANGUAGE_CONFIDENCE = 0.75
MIN_LETTERS = 4

_FOLD = str.maketrans("ąćęłńóśźżĄĆĘŁŃÓŚŹŻ²", "acelnoszzACELNOSZZ2")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?:\+|00)?\d(?:[\s-]?\d){8,}")
_AREA = re.compile(r"\d+(?:[.,]\d+)?\s*(?:m2|m²|m\^2|mkw|metr\w*|sq\.?\s?m|sqm|square\s+met\w*)(?!\w)", re.IGNORECASE)
_MONEY = re.compile(r"\d[\d\s.,]*\s*(?:tys\.?|tysi\w*|k|mln|zł|zl|pln|euro|eur)(?!\w)", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
# A capitalised word after "I am" / "jestem" ...: a name (the introduction itself stays as words).
_NAME = re.compile(
    r"(?P<intro>\b(?:się|imię|jestem|name is|i am|i'm|im))\s+(?-i:[A-ZĄĆĘŁŃÓŚŹŻ][a-ząćęłńóśźż]+)", re.IGNORECASE
)
# (placeholder, what it stands for, what of the match stays as words)
_PLACEHOLDERS = (("zzemail", _EMAIL, " "), ("zzphone", _PHONE, " "), ("zzarea", _AREA, " "),
                 ("zzmoney", _MONEY, " "), ("zznumber", _NUMBER, " "), ("zzname", _NAME, r"\g<intro> "))
# What says nothing about a message's language: amounts and their currency, numbers, emails, units.
PLACEHOLDER_TERMS = frozenset({CITY, *(placeholder for placeholder, _, _ in _PLACEHOLDERS)})
_LANGUAGE_NOISE = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|\d[\d\s.,]*\s*(?:tys\.?|k|mln|zł|zl|pln|m2|m²|mkw|sqm)?(?!\w)|\b(?:zł|zl|pln)\b",
    re.IGNORECASE,
)

_LETTER = re.compile(r"[^\W\d_]")
_SENTENCE_END = re.compile(r"[.!?;]+")


@cache
def _detector() -> LanguageDetector:
    """lingua restricted to Polish and English, its models loaded in one go (about a second of CPU): built by
    warm_up() when the server starts, never by a manage command that answers no visitor."""
    builder = LanguageDetectorBuilder.from_languages(Language.POLISH, Language.ENGLISH)
    return builder.with_preloaded_language_models().build()


def warm_up() -> None:
    """Load the language models now rather than on the first visitor's message."""
    _detector()

_CODES = {Language.POLISH: "pl", Language.ENGLISH: "en"}


def fold(text: str) -> str:
    """Lower case, Polish diacritics folded."""
    return text.lower().translate(_FOLD)


@lru_cache(maxsize=65536)
def _lemma(word: str) -> str:
    """The folded lemma of one lower-cased word: Polish dictionary first, then English (simplemma's greedy mode off,
    so an unknown word stays as it is)."""
    return fold(simplemma.lemmatize(word, lang=("pl", "en")))


def words(text: str, cities: frozenset[str] = frozenset()) -> list[str]:
    """The message as folded lemmas, with placeholders for emails, phones, areas, amounts, other numbers, names after
    an introduction and the (folded) city names given."""
    terms: list[str] = []
    for placeholder, pattern, kept in _PLACEHOLDERS:
        text, count = pattern.subn(kept, text)
        terms.extend([placeholder] * count)
    return [CITY if fold(w) in cities else _lemma(w) for w in _WORD.findall(text.lower())] + terms


def detect_language(text: str, previous: str | None = None) -> str:
    """'pl' or 'en'. Numbers, amounts with their currency ("250 000 zł") and emails are ignored; a message with too
    little left to tell (lingua's confidence below MIN_LANGUAGE_CONFIDENCE) keeps the conversation's language
    `previous`, and without one takes lingua's best guess (Polish when nothing at all is left)."""
    rest = _LANGUAGE_NOISE.sub(" ", text)
    if not _WORD.search(rest):
        return previous or "pl"
    # The question, not the greeting before it: "Dzień dobry! Do you renovate kitchens?" is English.
    rest = max(_SENTENCE_END.split(rest), key=lambda sentence: len(_WORD.findall(sentence)))
    best = _detector().compute_language_confidence_values(rest)[0]
    if previous in LANGUAGES and (best.value < MIN_LANGUAGE_CONFIDENCE or len(_LETTER.findall(rest)) < MIN_LETTERS):
        return previous
    return _CODES[best.language]


@dataclass(frozen=True)
class Ranking:
    topic: str                       # the understood topic, or NOT_UNDERSTOOD
    score: float                     # the best BM25 score
    closest: tuple[str, ...]         # the best-scoring topics, best first (at most three)


class TopicIndex:
    """BM25 over each topic's example phrasings, one document per topic, with typo correction against its
    vocabulary."""

    def __init__(self, examples: Mapping[str, Iterable[str]], cities: Iterable[str] = (),
                 min_score: float = MIN_SCORE):
        self.topics = tuple(examples)
        self._cities = frozenset(fold(c) for c in cities)
        documents = [[w for phrase in examples[topic] for w in words(phrase, self._cities)] for topic in self.topics]
        self.vocabulary = sorted({w for doc in documents for w in doc})
        self._known = frozenset(self.vocabulary)
        self.bm25 = BM25Okapi(documents, k1=BM25_K1, b=BM25_B)
        self.min_score = min_score
        self._corrections: dict[str, str] = {}

    def terms(self, text: str) -> list[str]:
        """The message's words as the index knows them: a typo replaced by the closest known word."""
        return [self._correct(w) for w in words(text, self._cities)]

    def _correct(self, word: str) -> str:
        if word in self._known or word in PLACEHOLDER_TERMS or len(word) < MIN_TYPO_LENGTH:
            return word
        known = self._corrections.get(word)
        if known is None:
            best = process.extractOne(word, self.vocabulary, scorer=fuzz.ratio, score_cutoff=TYPO_SIMILARITY)
            known = best[0] if best else word
            if len(self._corrections) < 65536:
                self._corrections[word] = known
        return known

    def rank(self, text: str) -> Ranking:
        terms = self.terms(text)
        scores = self.bm25.get_scores(terms) if terms else [0.0] * len(self.topics)
        order = sorted(range(len(self.topics)), key=lambda i: -scores[i])
        if self.topics[order[0]] in SOCIAL_TOPICS:
            question = next((i for i in order if self.topics[i] not in SOCIAL_TOPICS), order[0])
            if scores[question] >= max(self.min_score, QUESTION_OVER_GREETING * scores[order[0]]):
                order.remove(question)
                order.insert(0, question)
        closest = tuple(self.topics[i] for i in order[:3] if scores[i] > 0 and self.topics[i] not in NEVER_OFFERED)
        best = float(scores[order[0]])
        topic = self.topics[order[0]] if best >= self.min_score else NOT_UNDERSTOOD
        return Ranking(topic, best, closest)
