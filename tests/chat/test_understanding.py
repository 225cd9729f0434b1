"""The understanding parts on their own: words reduced to lemmas and placeholders, typos read as the known word,
the language of a message, and ranking with a threshold, on a small index built here."""
import pytest

from services.chat.understanding import NOT_UNDERSTOOD, TopicIndex, detect_language, words


def test_inflected_forms_and_forms_without_diacritics_meet_in_one_lemma():
    assert words("łazienki") == words("łazienkę") == words("łazienka") == ["lazienka"]
    assert words("Remontujecie") == ["remontowac"]
    assert words("bathrooms") == ["bathroom"]


def test_details_become_placeholders_whatever_their_digits():
    assert words("my flat area is 55 m2") == words("my flat area is 70 m²")
    assert "zzarea" in words("mieszkanie ma 45 m2")
    assert "zzmoney" in words("250 000 zł") and "zzmoney" in words("budżet 150 tys.")
    assert "zzemail" in words("jan@example.com") and "zzphone" in words("600 700 800")
    assert "zzname" in words("mam na imię Kasia") and "zzname" not in words("I am interested")


@pytest.fixture(scope="module")
def index():
    return TopicIndex({
        "warranty": ["gwarancja", "jaka gwarancja", "warranty", "how long is the warranty"],
        "financing": ["raty", "kredyt", "instalments", "loan"],
        "greeting": ["dzień dobry", "hello"],
        NOT_UNDERSTOOD: ["pogoda", "weather"],
    }, cities=["gdańsk", "gdańsku"], min_score=0.5)  # BM25 scores are small over four documents


def test_a_typo_is_read_as_the_closest_known_word(index):
    assert index.terms("gwarncja") == ["gwarancja"]
    assert index.terms("instalmnets") == ["instalment"]
    assert index.rank("waranty?").topic == "warranty"


def test_below_the_threshold_nothing_is_understood_and_the_closest_topics_are_named(index):
    assert index.rank("xyzzy qwerty").topic == NOT_UNDERSTOOD and index.rank("xyzzy qwerty").closest == ()
    assert index.rank("weather today").topic == NOT_UNDERSTOOD
    assert NOT_UNDERSTOOD not in index.rank("weather and warranty").closest


def test_a_question_wins_over_the_greeting_before_it(index):
    assert index.rank("Dzień dobry").topic == "greeting"
    assert index.rank("Dzień dobry, jaka gwarancja?").topic == "warranty"


def test_a_city_name_is_matched_as_a_city(index):
    assert index.terms("w Gdańsku") == ["w", "zzcity"]


@pytest.mark.parametrize(
    "text, previous, language",
    [
        ("Good morning", None, "en"),
        ("Price?", None, "en"),
        ("Ile kosztuje remont lazienki", None, "pl"),        # no diacritics
        ("250 000 zł", "en", "en"),                          # an amount says nothing about the language
        ("Our budget is 250 000 zł", "pl", "en"),
        ("Dzień dobry! Do you renovate kitchens?", None, "en"),  # the question's language, not the greeting's
        ("ok", "en", "en"),                                  # too little to change the conversation's language
        ("600 700 800", None, "pl"),
    ],
)
def test_the_language_of_a_message(text, previous, language):
    assert detect_language(text, previous) == language
