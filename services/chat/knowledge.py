"""The knowledge base: faq.yaml (topics, their answers and example phrasings, an answer per city) and dialogue.yaml
(the bot's own texts and the consent wording), loaded from KNOWLEDGE_DIR.

faq.yaml is checked when it is loaded, and every error names the file and line. Operators edit it without a
restart: each replica looks at the file's modification time and size at most every KNOWLEDGE_RELOAD_SECONDS (a
mounted ConfigMap changes under every replica at once) and loads a changed file; an invalid one is refused and
logged, and the previous version keeps answering. dialogue.yaml is read at start only: it holds the consent wording,
whose hash is stored with each lead, and a lead waiting for hand-over must be sent with the wording it was given.
"""
from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from services.chat import understanding
from services.chat.understanding import LANGUAGES, NOT_UNDERSTOOD, Ranking, TopicIndex, detect_language, fold

__all__ = ["LANGUAGES", "KNOWLEDGE_DIR", "KnowledgeBase", "KnowledgeError", "Match", "detect_language", "normalise"]

log = logging.getLogger(__name__)

KNOWLEDGE_DIR = Path(__file__).resolve().parent / "knowledge"
FAQ_FILE, DIALOGUE_FILE = "faq.yaml", "dialogue.yaml"

_NON_WORD = re.compile(r"[^a-z0-9@.]+|(?<!\w)\.|\.(?!\w)")
# Topics whose answer the conversation acts on by name.
REQUIRED_TOPICS = ("quote", "consultation", "site_visit", "provide_details", NOT_UNDERSTOOD)


def normalise(text: str) -> str:
    """Lower case, diacritics folded, punctuation replaced by single spaces."""
    return " ".join(_NON_WORD.sub(" ", fold(text)).split())


# A parsed YAML mapping: its values are whatever the company's files hold; the loader checks the parts it reads.
YamlDoc = dict[str, Any]  # Any: parsed YAML, shaped by the files (see above)


class KnowledgeError(ValueError):
    """An invalid knowledge file; the message starts with "<file>:<line>:"."""


class _LinedDict(dict[Any, Any]):  # Any: parsed YAML keys (dialogue.yaml numbers its follow-ups) and values
    """A YAML mapping that remembers the line it starts on (1-based)."""

    line = 0


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_lined(loader: _LineLoader, node: yaml.MappingNode) -> _LinedDict:
    mapping = _LinedDict(loader.construct_mapping(node, deep=True))
    mapping.line = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_lined)


def _read_yaml(path: Path) -> Any:  # Any: parsed YAML, checked by the caller
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else 0
        raise KnowledgeError(f"{path}:{line}: not valid YAML: {exc.problem}") from exc
    except OSError as exc:
        raise KnowledgeError(f"{path}:0: cannot be read: {exc.strerror}") from exc


@dataclass(frozen=True)
class Specific:
    forms: frozenset[str]            # folded words that select this answer
    answers: dict[str, str]


@dataclass(frozen=True)
class Topic:
    name: str
    label: dict[str, str]
    examples: tuple[str, ...]        # both languages
    answers: dict[str, str]
    specific: tuple[Specific, ...]
    related: tuple[str, ...]


@dataclass(frozen=True)
class City:
    name: str
    served: bool
    forms: frozenset[str]            # folded
    answers: dict[str, str]


@dataclass(frozen=True)
class Match:
    intent: str                       # the topic, or out_of_scope when not understood
    answer: str
    suggestions: tuple[str, ...] = ()  # topics offered instead, when not understood
    city: str | None = None            # a city the message names; its answer is part of `answer`
    score: float = 0.0


class Faq:
    """One checked version of faq.yaml, with its retrieval index."""

    def __init__(self, doc: Any, path: Path):  # Any: parsed YAML, checked here
        self.path = path
        top = self._mapping(doc, "the file")
        self.low_confidence = self._texts(top, "low_confidence")
        self.topics: dict[str, Topic] = {}
        for entry in self._list(top, "topics"):
            topic = self._topic(entry)
            if topic.name in self.topics:
                raise self._error(entry, f"topic {topic.name!r} is defined twice")
            self.topics[topic.name] = topic
        for name in REQUIRED_TOPICS:
            if name not in self.topics:
                raise self._error(top, f"topic {name!r} is required")
        for topic in self.topics.values():
            for other in topic.related:
                if other not in self.topics:
                    raise KnowledgeError(f"{path}:0: topic {topic.name!r} relates to unknown topic {other!r}")
        self.offered = tuple(str(t) for t in top.get("out_of_scope_topics") or ())
        for name in self.offered:
            if name not in self.topics:
                raise self._error(top, f"out_of_scope_topics names unknown topic {name!r}")
        self.cities = tuple(self._city(entry) for entry in self._list(top, "cities"))
        self.served_cities = tuple(c.name for c in self.cities if c.served)
        self._city_forms = {form: city for city in self.cities for form in city.forms}

    @cached_property
    def index(self) -> TopicIndex:
        """The retrieval index (seconds of CPU: every example lemmatised), built on first use, so a manage command
        that answers no visitor never pays for it; the server builds it before serving (KnowledgeBase.warm_up)."""
        return TopicIndex({name: topic.examples for name, topic in self.topics.items()}, cities=self._city_forms)

    # --- checks, each naming the file and line ---------------------------------------------------------------

    def _error(self, node: Any, message: str) -> KnowledgeError:  # Any: a parsed YAML node
        return KnowledgeError(f"{self.path}:{getattr(node, 'line', 0)}: {message}")

    def _mapping(self, node: Any, what: str) -> _LinedDict:  # Any: a parsed YAML node
        if not isinstance(node, _LinedDict):
            raise self._error(node, f"{what} must be a mapping")
        return node

    def _list(self, parent: _LinedDict, key: str) -> list[Any]:  # Any: parsed YAML items
        value = parent.get(key)
        if not isinstance(value, list) or not value:
            raise self._error(parent, f"{key!r} must be a non-empty list")
        return value

    def _texts(self, parent: _LinedDict, key: str) -> dict[str, str]:
        value = parent.get(key)
        if not isinstance(value, _LinedDict):
            raise self._error(parent, f"{key!r} needs a text per language ({', '.join(LANGUAGES)})")
        for lang in LANGUAGES:
            if not isinstance(value.get(lang), str) or not value[lang].strip():
                raise self._error(value, f"{key!r} has no {lang!r} text")
        return {lang: " ".join(value[lang].split()) for lang in LANGUAGES}

    def _topic(self, node: Any) -> Topic:  # Any: a parsed YAML node
        entry = self._mapping(node, "a topic")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise self._error(entry, "a topic needs a name")
        examples = entry.get("examples")
        if not isinstance(examples, _LinedDict):
            raise self._error(entry, f"topic {name!r} needs examples per language ({', '.join(LANGUAGES)})")
        phrases: list[str] = []
        for lang in LANGUAGES:
            listed = examples.get(lang)
            if not isinstance(listed, list) or not listed:
                raise self._error(examples, f"topic {name!r} has no {lang!r} examples")
            phrases.extend(str(p) for p in listed)
        specific = []
        for item in entry.get("specific") or ():
            item = self._mapping(item, f"a specific answer of topic {name!r}")
            forms = item.get("forms")
            if not isinstance(forms, list) or not forms:
                raise self._error(item, f"a specific answer of topic {name!r} needs forms")
            specific.append(Specific(frozenset(fold(str(f)) for f in forms), self._texts(item, "answers")))
        return Topic(name, self._texts(entry, "label"), tuple(phrases), self._texts(entry, "answers"),
                     tuple(specific), tuple(str(r) for r in entry.get("related") or ()))

    def _city(self, node: Any) -> City:  # Any: a parsed YAML node
        entry = self._mapping(node, "a city")
        name, forms, served = entry.get("name"), entry.get("forms"), entry.get("served")
        if not isinstance(name, str) or not isinstance(forms, list) or not isinstance(served, bool):
            raise self._error(entry, "a city needs a name, forms and served (true or false)")
        folded = frozenset(fold(str(f)) for f in [name, *forms])
        return City(name, served, folded, self._texts(entry, "answers"))

    # --- answers ---------------------------------------------------------------------------------------------

    def city_in(self, text: str) -> City | None:
        for word in normalise(text).split():
            if word in self._city_forms:
                return self._city_forms[word]
        return None

    def without_cities(self, text: str) -> str:
        return " ".join(w for w in text.split() if normalise(w) not in self._city_forms)

    def answer(self, topic: str, language: str, text: str = "") -> str:
        found = self.topics[topic]
        words = set(normalise(text).split())
        for specific in found.specific:
            if words & specific.forms:
                return specific.answers[language]
        return found.answers[language]


@dataclass(frozen=True)
class _Stamp:
    mtime_ns: int
    size: int


def _stamp(path: Path) -> _Stamp | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return _Stamp(stat.st_mtime_ns, stat.st_size)


class KnowledgeBase:
    """The current faq.yaml (reloaded when it changes) and dialogue.yaml (read once)."""

    def __init__(self, folder: Path = KNOWLEDGE_DIR, reload_s: float = 5.0):
        self.folder = Path(folder)
        self.reload_s = reload_s
        faq_path = self.folder / FAQ_FILE
        self._stamp = _stamp(faq_path)
        self._faq = Faq(_read_yaml(faq_path), faq_path)
        self.dialogue: YamlDoc = self._dialogue(self.folder / DIALOGUE_FILE)
        self._next_check = time.monotonic() + reload_s
        self._reloading = threading.Lock()

    @classmethod
    def load(cls, folder: Path = KNOWLEDGE_DIR, reload_s: float = 5.0) -> KnowledgeBase:
        return cls(folder, reload_s)

    @staticmethod
    def _dialogue(path: Path) -> YamlDoc:
        doc = _read_yaml(path)
        if not isinstance(doc, dict):
            raise KnowledgeError(f"{path}:1: must be a mapping")
        for kind in ("processing", "marketing"):
            texts = (doc.get("consent") or {}).get(kind) or {}
            if not all(isinstance(texts, dict) and texts.get(lang) for lang in LANGUAGES):
                raise KnowledgeError(f"{path}:{getattr(doc, 'line', 1)}: needs consent.{kind} in every language")
        return doc

    def warm_up(self) -> None:
        """Build the retrieval index and load the language models before the first visitor's message."""
        self._faq.index  # noqa: B018 - the property builds it
        understanding.warm_up()

    # --- reloading -------------------------------------------------------------------------------------------

    @property
    def faq(self) -> Faq:
        """The current version, after a cheap look at the file at most every reload_s seconds."""
        if time.monotonic() >= self._next_check and self._reloading.acquire(blocking=False):
            try:
                self._next_check = time.monotonic() + self.reload_s
                self.reload_if_changed()
            finally:
                self._reloading.release()
        return self._faq

    def reload_if_changed(self) -> bool:
        """Load faq.yaml if its modification time or size changed; an invalid file keeps the current version (and is
        logged with its file and line). True when a new version was taken."""
        path = self.folder / FAQ_FILE
        stamp = _stamp(path)
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            faq = Faq(_read_yaml(path), path)
            faq.index  # noqa: B018 - built here, before the swap, so no visitor waits for it
        except KnowledgeError as exc:
            log.error("knowledge base not reloaded, the previous version stays: %s", exc)
            return False
        self._faq = faq
        log.info("knowledge base reloaded from %s: %d topics, %d cities", path, len(faq.topics), len(faq.cities))
        return True

    # --- understanding and answers ---------------------------------------------------------------------------

    @property
    def served_cities(self) -> tuple[str, ...]:
        return self.faq.served_cities

    @property
    def topics(self) -> dict[str, Topic]:
        return self.faq.topics

    def language(self, text: str, previous: str | None = None) -> str:
        """The message's language (see understanding.detect_language); city names, which say nothing about it
        ("Do you work in Łódź?"), are left out."""
        return detect_language(self.faq.without_cities(text), previous)

    def rank(self, text: str) -> Ranking:
        return self.faq.index.rank(text)

    def match(self, text: str, language: str) -> Match:
        ranking = self.faq.index.rank(text)
        return self.answer_for(ranking.topic, language, text, ranking)

    def answer_for(self, topic: str, language: str, text: str = "", ranking: Ranking | None = None) -> Match:
        """The reply to a message understood as `topic`: the topic's answer (or the one specific to a word of the
        message), followed by the answer for a city the message names; when not understood, the closest topics."""
        faq = self.faq
        if topic not in faq.topics:
            topic = NOT_UNDERSTOOD
        if topic == NOT_UNDERSTOOD:
            ranking = ranking or faq.index.rank(text)
            if ranking.topic == NOT_UNDERSTOOD and ranking.score < faq.index.min_score and ranking.closest:
                return Match(topic, faq.low_confidence[language], ranking.closest, None, ranking.score)
            return Match(topic, faq.topics[topic].answers[language], faq.offered[:3], None, ranking.score)
        answer = faq.answer(topic, language, text)
        city = faq.city_in(text) if topic not in ("greeting", "goodbye", "thanks") else None
        if city is not None:  # asked where we work and named the city: that city's answer is the answer
            answer = city.answers[language] if topic == "areas" else f"{answer} {city.answers[language]}"
        return Match(topic, answer, (), city.name if city else None, ranking.score if ranking else 0.0)

    def label(self, topic: str, language: str) -> str:
        return self.faq.topics[topic].label[language]

    def related(self, topic: str) -> tuple[str, ...]:
        found = self.faq.topics.get(topic)
        return found.related if found else ()

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
