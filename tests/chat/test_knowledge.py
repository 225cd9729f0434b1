"""The knowledge base answers in the visitor's language from the YAML the company edits: every topic in both
languages, an answer per city, a checked file (errors name file and line), reloaded on change."""
import functools
import hashlib
import os
import shutil
import time

import grpc
import pytest

from deploy.local.processes import ManagedProcess, free_port, grpc_serving, python_module
from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from services.chat.knowledge import KNOWLEDGE_DIR, LANGUAGES, KnowledgeBase, KnowledgeError
from services.chat.understanding import NEVER_OFFERED, NOT_UNDERSTOOD
from testsupport.peers import PeerServer
from testsupport.waiting import wait_for

TOPICS = [
    "greeting", "goodbye", "thanks", "smalltalk", "packages", "included", "materials", "own_materials", "warranty",
    "financing", "vat_invoice", "kitchens", "bathrooms", "duration", "design_process", "site_visit", "areas",
    "living_during_work", "payment_schedule", "permits", "contact", "company", "quote", "consultation", "human",
    "privacy", "cleanup", "flooring", "electrics_plumbing", "painting", "house_renovation", "small_jobs",
    "availability", "provide_details", "out_of_scope",
]


@pytest.fixture(scope="module")
def kb():
    return KnowledgeBase.load()


@pytest.fixture
def kb_copy(tmp_path):
    folder = tmp_path / "knowledge"
    shutil.copytree(KNOWLEDGE_DIR, folder)
    return folder


def test_every_agreed_topic_has_a_label_examples_and_an_answer_in_both_languages(kb):
    assert sorted(kb.topics) == sorted(TOPICS) and len(TOPICS) >= 30
    for topic in kb.topics.values():
        assert all(topic.answers[lang] and topic.label[lang] for lang in LANGUAGES), topic.name
        assert topic.answers["pl"] != topic.answers["en"], topic.name


def test_a_suggested_topics_label_sent_back_as_a_message_is_understood_as_that_topic(kb):
    """The widget sends a tapped suggestion's label as the next message."""
    for name, topic in kb.topics.items():
        if name in NEVER_OFFERED:
            continue
        for lang in LANGUAGES:
            assert kb.rank(topic.label[lang]).topic == name, (name, lang, topic.label[lang])


@pytest.mark.parametrize(
    "text, language, topic",
    [
        ("Jaka jest gwarancja?", "pl", "warranty"),
        ("Czy jest gwarncja na prace?", "pl", "warranty"),          # typo
        ("Czy mogę rozłożyć płatność na raty?", "pl", "financing"),
        ("Czy mogę kupić płytki samemu?", "pl", "own_materials"),
        ("czy wystawiacie fakture vat", "pl", "vat_invoice"),      # no diacritics
        ("Ile kosztuje remont łazienki?", "pl", "bathrooms"),
        ("Dzień dobry, ile kosztuje wykończenie mieszkania?", "pl", "packages"),  # the question wins
        ("What warranty do you give?", "en", "warranty"),
        ("Can I pay in instalmnets?", "en", "financing"),
        ("Which materials do you use?", "en", "materials"),
        ("Can I bring my own tiles?", "en", "own_materials"),
        ("Do you do kitchens?", "en", "kitchens"),
        ("Can you come and take a look?", "en", "site_visit"),
        ("my flat area is 55 m2", "en", "provide_details"),
        ("Standard question", "en", "packages"),
        ("Price?", "en", "packages"),
        ("Good morning", "en", "greeting"),
    ],
)
def test_questions_are_understood_in_either_language_inflected_or_misspelt(kb, text, language, topic):
    assert (kb.language(text), kb.rank(text).topic) == (language, topic)


def test_a_city_gets_its_own_answer_served_or_not(kb):
    gdansk = kb.match("Do you renovate bathrooms in Gdańsk?", "en")
    assert gdansk.intent == "bathrooms" and gdansk.city == "Gdańsk"
    assert "bathroom" in gdansk.answer and "do not work in Gdańsk" in gdansk.answer
    krakow = kb.match("Czy działacie w Krakowie?", "pl")
    assert krakow.intent == "areas" and krakow.city == "Kraków" and "działamy w Krakowie" in krakow.answer
    assert set(kb.served_cities) == {"Warszawa", "Kraków", "Wrocław", "Łódź", "Poznań", "Pruszków"}


def test_a_package_named_gets_that_packages_answer(kb):
    assert kb.match("Standard question", "en").answer.startswith("The Standard package costs 1290 PLN/m²")
    assert kb.match("Ile kosztuje pakiet premium?", "pl").answer.startswith("Pakiet Premium kosztuje 1790 zł/m²")


def test_what_is_not_understood_gets_the_closest_topics_not_i_dont_understand(kb):
    unsure = kb.match("a balkon", "pl")  # a little in common with some topics, not enough for any
    assert unsure.intent == NOT_UNDERSTOOD and 2 <= len(unsure.suggestions) <= 3
    assert unsure.suggestions == kb.rank("a balkon").closest and "rozumiem" not in unsure.answer
    nothing = kb.match("balkon?", "pl")  # nothing in common: the most asked topics
    assert nothing.intent == NOT_UNDERSTOOD and nothing.suggestions == ("packages", "duration", "areas")
    weather = kb.match("What's the weather like tomorrow?", "en")
    assert weather.intent == NOT_UNDERSTOOD and weather.suggestions and "renovating" in weather.answer


def test_language_ignores_currency_numbers_and_city_names_and_keeps_the_previous_one_without_clues(kb):
    assert kb.language("250 000 zł", previous="en") == "en"
    assert kb.language("Our budget is 250 000 zł", previous="pl") == "en"
    assert kb.language("jan@example.com", previous="en") == "en"
    assert kb.language("600 700 800", previous="pl") == "pl"
    assert kb.language("Do you work in Łódź?") == "en"
    assert kb.language("Zażółć gęślą jaźń", previous="en") == "pl"


def test_the_consent_version_is_the_hash_of_its_wording(kb):
    for language in LANGUAGES:
        wording = kb.consent_wording(language)
        assert kb.say("consent.processing", language) in wording and kb.say("consent.marketing", language) in wording
        assert kb.consent_version(language) == hashlib.sha256(wording.encode()).hexdigest()
    assert kb.consent_version("pl") != kb.consent_version("en")


def test_an_invalid_file_is_refused_with_its_file_and_line(kb_copy):
    faq = kb_copy / "faq.yaml"
    text = faq.read_text(encoding="utf-8")
    faq.write_text(text.replace("      en: Goodbye! I am here if you have more questions.\n", ""), encoding="utf-8")
    line = text[: text.index("  - name: goodbye")].count("\n") + 1
    with pytest.raises(KnowledgeError, match=rf"faq\.yaml:{line + 6}: 'answers' has no 'en' text"):
        KnowledgeBase.load(kb_copy)
    faq.write_text(text.replace("label: {pl: \"Dziękuję\"", "label: {pl: \"Dziękuję\" ]"), encoding="utf-8")
    with pytest.raises(KnowledgeError, match=r"faq\.yaml:\d+: not valid YAML"):
        KnowledgeBase.load(kb_copy)


def test_an_edit_is_taken_on_the_next_check_and_an_invalid_one_keeps_the_previous_version(kb_copy, caplog):
    live = KnowledgeBase.load(kb_copy, reload_s=0.0)
    faq = kb_copy / "faq.yaml"
    text = faq.read_text(encoding="utf-8")
    old = "Remont mieszkania do 60 m² trwa zwykle 6–10 tygodni"
    assert live.match("Ile trwa remont?", "pl").answer.startswith(old)
    faq.write_text(text.replace(old, "Remont trwa teraz 5–8 tygodni"), encoding="utf-8")
    _touch_later(faq)
    assert live.match("Ile trwa remont?", "pl").answer.startswith("Remont trwa teraz 5–8 tygodni")

    faq.write_text(text.replace("  - name: duration\n", "  - nme: duration\n"), encoding="utf-8")
    _touch_later(faq)
    assert live.match("Ile trwa remont?", "pl").answer.startswith("Remont trwa teraz 5–8 tygodni")
    assert "knowledge base not reloaded" in caplog.text and "faq.yaml:" in caplog.text


def test_two_chat_replicas_on_one_knowledge_dir_both_serve_an_edited_answer_without_a_restart(kb_copy, tmp_path):
    """As with a ConfigMap mounted into every pod: the operator edits the file once, each replica notices."""
    peers = PeerServer().start()
    replicas = []
    try:
        for n in (1, 2):
            data, port = tmp_path / f"replica{n}", free_port()
            data.mkdir()
            env = {**os.environ, "GRPC_PORT": str(port), "DATA_DIR": str(data), "CONSENT_ADDR": peers.address,
                   "NOTIFIER_ADDR": peers.address, "KNOWLEDGE_DIR": str(kb_copy), "KNOWLEDGE_RELOAD_SECONDS": "0.2"}
            env.pop("REDIS_URL", None)
            env.pop("DATABASE_URL", None)
            process = ManagedProcess(f"chat-{n}", python_module("services.chat.server"), env, data).start()
            replicas.append((process, f"127.0.0.1:{port}"))
        for process, address in replicas:
            process.wait_until(functools.partial(grpc_serving, address), 60, "SERVING")

        def answers() -> list[str]:
            replies = []
            for _, address in replicas:
                with grpc.insecure_channel(address) as channel:
                    request = chat_pb2.SendMessageRequest(message="Ile trwa remont?")
                    replies.append(chat_pb2_grpc.ChatStub(channel).SendMessage(request, timeout=10).reply)
            return replies

        old, new = "Remont mieszkania do 60 m² trwa zwykle 6–10 tygodni", "Remont trwa teraz 5–8 tygodni"
        assert all(reply.startswith(old) for reply in answers())
        faq = kb_copy / "faq.yaml"
        faq.write_text(faq.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
        _touch_later(faq)
        wait_for(lambda: all(reply.startswith(new) for reply in answers()), 30, "both replicas serving the edit")
        assert all(process.running for process, _ in replicas)  # the same processes: no restart
    finally:
        for process, _ in replicas:
            process.stop()
        peers.stop()


def _touch_later(path):
    """A distinct modification time even on a file system with coarse timestamps."""
    later = time.time() + 2
    os.utime(path, (later, later))
