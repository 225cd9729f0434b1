"""A conversation turn: validate the message, answer from the knowledge base, fill lead slots, ask for consent,
store and score the lead.

A transcript is read with the conversation's secret, not its session id: the first reply carries a fresh secret
(256 bits) for the visitor's client, the conversation keeps only its SHA-256, and a missing or wrong secret reads as
an unknown session. A refused processing consent drops the captured details and replaces the text of every visitor
message stored in the conversation so far with a marker, so what the bot says ("I have removed them") is true.

Turns of one session are serialised: the conversation row is locked for the whole turn (SELECT ... FOR UPDATE on
PostgreSQL; SQLite's BEGIN IMMEDIATE serialises every writer), so concurrent messages are handled one after the
other, each seeing the state the previous one left. A rejected message rolls the turn back: nothing is stored.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from services.chat import storage
from services.chat.cache import Cache, intent_key
from services.chat.knowledge import KnowledgeBase, Match, normalise
from services.chat.leads import LeadDelivery
from services.chat.scoring import score_lead
from services.chat.settings import Settings
from services.chat.slots import SLOTS, extract, identifies, slot_number, slot_text
from services.chat.storage import Conversation, Lead
from services.chat.understanding import NOT_UNDERSTOOD
from services.runtime.clock import utcnow
from services.runtime.db import Database
from services.runtime.errors import NotFoundError, ValidationError
from services.runtime.request_context import Caller

SESSION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")
_YES = frozenset(
    {"tak", "yes", "y", "t", "ok", "okay", "zgoda", "zgadzam", "sure", "agree", "oczywiscie", "jasne", "yep", "yeah"}
)
_NO = frozenset({"nie", "no", "n", "nope", "not"})
# Topics that show the visitor wants something done: the bot then asks for their details.
_INTENT_TOPICS = frozenset({"quote", "consultation", "site_visit"})
# Topics of a message that is (or may be) a detail rather than a question: a bare answer is taken as the detail.
_DETAIL_TOPICS = frozenset({"provide_details", NOT_UNDERSTOOD})


@dataclass
class LeadProgress:
    captured: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    complete: bool = False
    score: int = 0
    lead_id: str = ""


@dataclass
class ConsentChoice:
    label: str
    value: bool


@dataclass
class ConsentPrompt:
    kind: str
    text: str
    text_version: str
    required: bool
    choices: list[ConsentChoice] = field(default_factory=list)


@dataclass
class Suggestion:
    """A topic offered as a button: its label, sent back as a message, is understood as the topic."""

    topic: str
    label: str


@dataclass
class Reply:
    session_id: str
    reply: str
    language: str
    intent: str
    lead: LeadProgress
    consent_prompt: ConsentPrompt | None = None
    session_secret: str = ""  # set on the first reply of a conversation only
    suggestions: list[Suggestion] = field(default_factory=list)  # not understood: the closest topics
    quick_replies: list[Suggestion] = field(default_factory=list)  # topics that usually come next


@dataclass
class TranscriptEntry:
    role: str
    text: str
    created_at: dt.datetime


@dataclass
class Transcript:
    session_id: str
    created_at: dt.datetime
    messages: list[TranscriptEntry]
    lead: LeadProgress


@dataclass
class _Turn:
    reply: str
    intent: str
    prompt: str | None = None  # "processing" or "marketing"
    new_lead_id: str | None = None
    stored_text: str | None = None  # what to store as the visitor's message, instead of what they typed
    suggestions: tuple[str, ...] = ()  # topics offered because the message was not understood
    quick_replies: tuple[str, ...] = ()  # topics offered as a next question


def yes_or_no(text: str) -> bool | None:
    """A typed consent answer: 'tak'/'yes' -> True, 'nie'/'no' -> False, anything else None."""
    words = set(normalise(text).split())
    yes, no = bool(words & _YES), bool(words & _NO)
    return yes if yes != no else None


class ChatService:
    def __init__(self, db: Database, kb: KnowledgeBase, cache: Cache, settings: Settings, leads: LeadDelivery):
        self.db = db
        self.kb = kb
        self.cache = cache
        self.settings = settings
        self.leads = leads

    # --- validation -------------------------------------------------------------------------------------------

    def _check_session_id(self, session_id: str) -> str:
        if not SESSION_ID.match(session_id):
            raise ValidationError("session_id is malformed: expected the UUID the service returned")
        return session_id

    def _check_message(self, text: str, consent_answered: bool) -> str:
        if len(text) > self.settings.max_message_chars:
            raise ValidationError(
                f"message is too long: {len(text)} characters, at most {self.settings.max_message_chars}"
            )
        if _CONTROL.search(text):
            raise ValidationError("message contains control characters")
        if not text.strip() and not consent_answered:
            raise ValidationError("message is empty")
        return text.strip()

    # --- turns ------------------------------------------------------------------------------------------------

    def send_message(
        self,
        session_id: str,
        text: str,
        processing_consent: bool | None = None,
        marketing_consent: bool | None = None,
        caller: Caller | None = None,
    ) -> Reply:
        caller = caller or Caller()
        answered = processing_consent is not None or marketing_consent is not None
        text = self._check_message(text, answered)
        if session_id:
            self._check_session_id(session_id)
        secret = ""
        with self.db.session() as s:
            if session_id:
                conv = storage.conversation_by_session(s, session_id, lock=True)
                if conv is None:
                    raise ValidationError("session_id is unknown: start a new conversation without a session_id")
            else:
                secret = secrets.token_urlsafe(32)
                conv = storage.new_conversation(s, str(uuid.uuid4()), self.kb.language(text), _secret_hash(secret))
            turn = self._turn(s, conv, text, processing_consent, marketing_consent, caller)
            now = utcnow()
            user_text = turn.stored_text or text or _consent_note(processing_consent, marketing_consent)
            storage.add_message(s, conv.id, "user", user_text, now)
            storage.add_message(s, conv.id, "bot", turn.reply, now)
            conv.message_count += 2
            conv.last_activity_at = now
            progress = self._progress(s, conv)
            lang = conv.language
            reply = Reply(
                conv.session_id, turn.reply, lang, turn.intent, progress, self._prompt(turn, conv), secret,
                self._suggestions(turn.suggestions, lang), self._suggestions(turn.quick_replies, lang),
            )
        if turn.new_lead_id:
            self.leads.deliver(turn.new_lead_id)
        return reply

    def _turn(
        self,
        s: Session,
        conv: Conversation,
        text: str,
        processing: bool | None,
        marketing: bool | None,
        caller: Caller,
    ) -> _Turn:
        if text and conv.message_count:  # a new conversation's language was just detected from this text
            conv.language = self.kb.language(text, conv.language)
        if conv.followups_sent and not conv.followups_stopped:
            conv.followups_stopped = True  # the visitor answered: no more reminders
        if conv.stage == "consent_processing":
            return self._processing_answer(s, conv, text, processing, marketing, caller)
        if conv.stage == "consent_marketing":
            return self._marketing_answer(s, conv, text, processing, marketing, caller)
        if processing is not None or marketing is not None:
            raise ValidationError("no consent question is pending in this conversation")
        match = self._match(text, conv.language, conv.awaiting_slot)
        if conv.stage == "done":
            if match.intent == "consultation" and not conv.converted:
                conv.converted = True
                return _Turn(self.kb.say("converted", conv.language), "consultation")
            return _Turn(match.answer, match.intent, suggestions=match.suggestions,
                         quick_replies=self.kb.related(match.intent))
        return self._collect(conv, text, match)

    def _match(self, text: str, language: str, awaiting: str | None) -> Match:
        """The knowledge-base answer, its intent cached by a hash of the message's normalised text; a message that
        may carry contact details or a name is never cached (cache.py)."""
        if identifies(text, awaiting):
            return self.kb.match(text, language)
        key = intent_key(normalise(text), language)
        intent = self.cache.get(key)
        if intent is not None:
            return self.kb.answer_for(intent, language, text)
        match = self.kb.match(text, language)
        self.cache.set(key, match.intent, self.settings.cache_ttl_s)
        return match

    def _collect(self, conv: Conversation, text: str, match: Match) -> _Turn:
        """Answer first, ask later: the answer to what was asked, then a question for the next missing detail only
        once the visitor shows intent (a quote, a consultation, a site visit), gives a detail, or is already giving
        them."""
        lang = conv.language
        about_details = match.intent in _DETAIL_TOPICS
        found = extract(text, conv.awaiting_slot, about_details and "?" not in text)
        slots = dict(conv.slots or {})
        slots.update(found.values)
        conv.slots = slots
        parts = []
        if not about_details or (not found.values and not found.invalid):
            parts.append(match.answer)
        noted = [s for s in SLOTS if s in found.values]
        if noted:
            names = ", ".join(self.kb.say(f"slot_names.{s}", lang) for s in noted)
            parts.append(self.kb.say("noted", lang, fields=names))
        parts.extend(self.kb.say(f"invalid.{s}", lang) for s in found.invalid if s not in found.values)
        missing = [s for s in SLOTS if s not in slots]
        intent = "lead_capture" if about_details and noted else match.intent
        asking = match.intent in _INTENT_TOPICS or noted or found.invalid or conv.awaiting_slot is not None
        if not asking:
            return _Turn(" ".join(parts), intent, suggestions=match.suggestions,
                         quick_replies=self.kb.related(match.intent))
        if missing:
            retry = [s for s in found.invalid if s in missing]
            conv.awaiting_slot = retry[0] if retry else missing[0]
            parts.append(self.kb.say(f"questions.{conv.awaiting_slot}", lang))
            return _Turn(" ".join(parts), intent)
        conv.awaiting_slot = None
        conv.stage = "consent_processing"
        parts.append(self.kb.say("consent.processing", lang))
        return _Turn(" ".join(parts), "consent", prompt="processing")

    def _processing_answer(
        self,
        s: Session,
        conv: Conversation,
        text: str,
        processing: bool | None,
        marketing: bool | None,
        caller: Caller,
    ) -> _Turn:
        lang = conv.language
        if processing is None:
            processing = yes_or_no(text)
        if processing is None:
            return self._ask_consent_again(conv, text, "processing")
        if not processing:
            return self._declined(s, conv)
        if marketing is None:
            conv.stage = "consent_marketing"
            return _Turn(self.kb.say("consent.marketing", lang), "consent", prompt="marketing")
        return self._store_lead(s, conv, marketing, caller)

    def _marketing_answer(
        self,
        s: Session,
        conv: Conversation,
        text: str,
        processing: bool | None,
        marketing: bool | None,
        caller: Caller,
    ) -> _Turn:
        if processing is False:
            return self._declined(s, conv)
        if marketing is None:
            marketing = yes_or_no(text)
        if marketing is None:
            return self._ask_consent_again(conv, text, "marketing")
        return self._store_lead(s, conv, marketing, caller)

    def _ask_consent_again(self, conv: Conversation, text: str, kind: str) -> _Turn:
        """Neither yes nor no: take it as a correction of a slot if it is one, then ask the same question."""
        lang = conv.language
        found = extract(text)
        if found.values:
            conv.slots = {**conv.slots, **found.values}
            names = ", ".join(self.kb.say(f"slot_names.{s}", lang) for s in SLOTS if s in found.values)
            lead_in = self.kb.say("noted", lang, fields=names)
        else:
            lead_in = self.kb.say("consent.ask_again", lang)
        return _Turn(lead_in + " " + self.kb.say(f"consent.{kind}", lang), "consent", prompt=kind)

    def _declined(self, s: Session, conv: Conversation) -> _Turn:
        """Without processing consent the personal data given so far is dropped: the captured slots, and the text of
        every visitor message stored in this conversation (the details were typed there). The refusal itself is
        stored as a consent note, whatever else its message said."""
        conv.slots = {}
        conv.stage = "collecting"
        conv.awaiting_slot = None
        storage.redact_visitor_messages(s, conv.id, self.kb.say("consent.redacted", conv.language))
        return _Turn(
            self.kb.say("consent.declined", conv.language), "consent_declined", stored_text=_consent_note(False, None)
        )

    def _store_lead(self, s: Session, conv: Conversation, marketing: bool, caller: Caller) -> _Turn:
        slots = conv.slots
        lead = Lead(
            id=uuid.uuid4().hex,
            conversation_id=conv.id,
            language=conv.language,
            name=slot_text(slots, "name"),
            email=slot_text(slots, "email"),
            phone=slot_text(slots, "phone"),
            city=slot_text(slots, "city"),
            area_m2=slot_number(slots, "area_m2"),
            budget_pln=slot_number(slots, "budget"),
            start=slot_text(slots, "start"),
            start_months=slot_number(slots, "start_months"),
            score=score_lead(slots, self.kb.served_cities),
            processing_consent=True,
            marketing_consent=bool(marketing),
            consent_text_version=self.kb.consent_version(conv.language),
            client_ip=caller.client_ip or None,
            user_agent=caller.user_agent or None,
        )
        storage.add_lead(s, lead)
        conv.lead_id = lead.id
        conv.contact_email = lead.email
        conv.marketing_consent = bool(marketing)
        conv.stage = "done"
        reply = self.kb.say("lead_stored", conv.language, name=(lead.name or "").split(" ")[0])
        return _Turn(reply, "lead_stored", new_lead_id=lead.id)

    def _prompt(self, turn: _Turn, conv: Conversation) -> ConsentPrompt | None:
        if turn.prompt is None:
            return None
        return ConsentPrompt(
            kind=turn.prompt,
            text=self.kb.say(f"consent.{turn.prompt}", conv.language),
            text_version=self.kb.consent_version(conv.language),
            required=turn.prompt == "processing",
            choices=[ConsentChoice(self.kb.say(f"consent.choices.{answer}", conv.language), value)
                     for answer, value in (("agree", True), ("decline", False))],
        )

    def _suggestions(self, topics: tuple[str, ...], language: str) -> list[Suggestion]:
        return [Suggestion(t, self.kb.label(t, language)) for t in topics if t in self.kb.topics]

    def _progress(self, s: Session, conv: Conversation) -> LeadProgress:
        slots = conv.slots or {}
        captured = [name for name in SLOTS if name in slots]
        progress = LeadProgress(captured, [n for n in SLOTS if n not in slots], len(captured) == len(SLOTS))
        lead = storage.lead_by_id(s, conv.lead_id) if conv.lead_id else None
        if lead is not None:
            progress.lead_id, progress.score = lead.id, lead.score
            progress.captured, progress.missing, progress.complete = list(SLOTS), [], True
        return progress

    # --- reading ----------------------------------------------------------------------------------------------

    def transcript(self, session_id: str, secret: str) -> Transcript:
        """The conversation, for the holder of its secret; NotFoundError without it, with a wrong one, or for a
        conversation that has none, exactly as for an unknown session."""
        self._check_session_id(session_id)
        with self.db.session() as s:
            conv = storage.conversation_by_session(s, session_id)
            if conv is None or not _secret_matches(secret, conv.session_secret_hash):
                raise NotFoundError("no conversation with this session_id")
            messages = [TranscriptEntry(m.role, m.text, m.created_at) for m in storage.messages_of(s, conv.id)]
            return Transcript(conv.session_id, conv.created_at, messages, self._progress(s, conv))


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _secret_matches(secret: str, stored_hash: str | None) -> bool:
    """Constant-time: whether `secret` is the one whose hash is stored (never for an empty secret or hash)."""
    matches = hmac.compare_digest(_secret_hash(secret), stored_hash or "")
    return matches and bool(secret) and bool(stored_hash)


def _consent_note(processing: bool | None, marketing: bool | None) -> str:
    """The stored user turn when the widget answered a consent prompt with checkboxes only."""
    answers = (("processing", processing), ("marketing", marketing))
    parts = [f"{name}={'yes' if value else 'no'}" for name, value in answers if value is not None]
    return "[consent " + " ".join(parts) + "]"
