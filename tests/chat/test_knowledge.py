"""The knowledge base answers in the visitor's language, deterministically, from the YAML the company edits."""
import hashlib

import pytest

from services.chat.knowledge import KnowledgeBase, detect_language


@pytest.fixture(scope="module")
def kb():
    return KnowledgeBase.load()


@pytest.mark.parametrize(
    "text, language, intent",
    [
        ("Dzień dobry", "pl", "greeting"),
        ("Ile kosztuje wykończenie za metr?", "pl", "packages"),
        ("Jak długo trwa remont?", "pl", "duration"),
        ("Gdzie działacie?", "pl", "areas"),
        ("Jak wygląda konsultacja z projektantem?", "pl", "consultation"),
        ("Chcę umówić konsultację", "pl", "book"),
        ("Podajcie kontakt do biura", "pl", "contact"),
        ("Dziękuję!", "pl", "thanks"),
        ("Hello there", "en", "greeting"),
        ("How much does the premium package cost?", "en", "packages"),
        ("How long does a renovation take?", "en", "duration"),
        ("Which cities do you serve?", "en", "areas"),
        ("Can I talk to a designer?", "en", "consultation"),
        ("Thank you", "en", "thanks"),
        ("Are you a bot?", "en", "smalltalk"),
    ],
)
def test_questions_get_the_matching_answer_in_the_visitors_language(kb, text, language, intent):
    detected = detect_language(text)
    match = kb.match(text, detected)
    assert (detected, match.intent) == (language, intent)
    assert match.answer == kb.answer_for(intent, language)


def test_the_answer_follows_the_language_pl_and_en_texts_differ(kb):
    assert kb.match("cennik", "pl").answer != kb.match("cennik", "en").answer
    assert "zł" in kb.match("cennik", "pl").answer and "PLN" in kb.match("price", "en").answer


def test_unknown_question_falls_back_to_offering_a_designers_call(kb):
    match = kb.match("qwerty zxcv", "en")
    assert match.intent == "fallback" and "designer" in match.answer


def test_matching_is_deterministic_and_ties_go_to_the_intent_listed_first(kb):
    # "umówić" (book) and "konsultację" (consultation) each cover one word; book is listed first.
    results = {kb.match("Chcę umówić konsultację", "pl").intent for _ in range(20)}
    assert results == {"book"}


def test_a_message_without_language_clues_keeps_the_conversations_language():
    assert detect_language("jan@example.com", previous="en") == "en"
    assert detect_language("600 700 800", previous="pl") == "pl"
    assert detect_language("Zażółć", previous="en") == "pl"


def test_every_intent_answers_in_both_languages_and_the_consent_version_is_the_hash_of_its_wording(kb):
    for intent in kb.intents:
        assert intent.answers["pl"] and intent.answers["en"], intent.name
        assert intent.patterns, intent.name
    for language in ("pl", "en"):
        wording = kb.consent_wording(language)
        assert kb.say("consent.processing", language) in wording and kb.say("consent.marketing", language) in wording
        assert kb.consent_version(language) == hashlib.sha256(wording.encode()).hexdigest()
    assert kb.consent_version("pl") != kb.consent_version("en")
    for kind in ("processing", "marketing"):
        assert kb.say(f"consent.{kind}", "pl") != kb.say(f"consent.{kind}", "en")


def test_a_knowledge_base_without_a_fallback_answer_is_refused():
    with pytest.raises(ValueError, match="fallback"):
        KnowledgeBase({"intents": [], "fallback": {"pl": "x"}}, {"consent": {"version": "v1"}})
