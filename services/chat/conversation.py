"""A conversation turn: validate the message, answer from the knowledge base, take lead details, ask for consent,
hand the lead to sales.

The flow: questions are answered; once the visitor shows intent (a quote, a consultation, a request) or gives a
personal detail, the processing consent notice comes first, then one question at a time: a name, an email or a
phone (either is enough), then city, area, budget and start, each asked once and each skippable. The lead is handed
over after the marketing question, at once for a request ("call me on Tuesday"), or, for a visitor who leaves
mid-questions with their contact given, after LEAD_IDLE_MINUTES (hand_over_idle): no lead is lost. Afterwards a
correction updates the lead and its Monday.com item, and a returning visitor (the same email or phone) is linked to
their lead, whose values stay: sales is told what is new and decides.

A transcript is read with the conversation's secret, not its session id: the first reply carries a fresh secret
(256 bits) for the visitor's client, the conversation keeps only its SHA-256, and a missing or wrong secret reads as
an unknown session. A refused processing consent drops the captured details and replaces the text of every visitor
message stored in the conversation so far with a marker, so what the bot says ("I have removed them") is true.

Asking for a person (in words, with the widget's button: request_person, or by not being understood twice in a
row) hands the conversation to a person (handoff.py decides how): within opening hours and with an agent in the
inbox it waits for them ("waiting"; sales gets a Slack alert with the inbox link), otherwise a consultant calls back
("callback": consent, name, phone, preferred time, then the request to sales). While a conversation is "waiting" or
"agent" the bot is silent: the visitor's messages are stored and published to the inbox, the reply is empty. A
visitor still waiting after HANDOFF_WAIT_MINUTES is told, at their next message, that nobody could join, and the
callback path starts: production chats (Intercom, Chatwoot) fall back the same way rather than leave a visitor
waiting on nobody. Events (events.py) go out after the commit, so a stream never reads a change before it is there.

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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from services.chat import handoff as handoffs
from services.chat import leads, metrics, storage
from services.chat.cache import Cache, intent_key
from services.chat.events import EventBus
from services.chat.handoff import ASKED, BUTTON, CALLBACK, NOT_UNDERSTOOD_TWICE, SILENT, WAITING, HandoffDesk
from services.chat.knowledge import KnowledgeBase, Match, normalise
from services.chat.leads import LeadDelivery
from services.chat.sales import OPTIONAL
from services.chat.scoring import score_lead
from services.chat.settings import Settings
from services.chat.slots import SLOTS, SlotValue, extract, identifies, slot_number, slot_text
from services.chat.storage import Conversation, Lead
from services.chat.understanding import NOT_UNDERSTOOD
from services.chat.when import ContactRequest, parse_request, preferred_time, warsaw_today
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
PERSONAL = ("name", "email", "phone")
CONTACT = "contact"  # the awaited answer when the bot asks for an email or a phone, either being enough
CALLBACK_TIME = "callback_time"  # the awaited answer to "when shall we call?"
HUMAN = "human"  # the topic of asking for a person
TIMED_OUT = "timed_out"  # a visitor waited longer than HANDOFF_WAIT_MINUTES for an agent
_PENDING_PROMPTS = {"consent_processing": "processing", "consent_marketing": "marketing"}  # stage -> its question
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
    handoff: str = ""  # "", "waiting", "agent" or "callback"


@dataclass
class TranscriptEntry:
    role: str
    text: str
    created_at: dt.datetime
    seq: int = 0
    author: str = ""  # an agent's display name


@dataclass
class Transcript:
    session_id: str
    created_at: dt.datetime
    messages: list[TranscriptEntry]
    lead: LeadProgress
    consent_prompt: ConsentPrompt | None = None  # the consent question still waiting for an answer
    handoff: str = ""


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
    def __init__(
        self,
        db: Database,
        kb: KnowledgeBase,
        cache: Cache,
        settings: Settings,
        delivery: LeadDelivery,
        desk: HandoffDesk,
        events: EventBus,
        today: Callable[[], dt.date] = warsaw_today,
    ):
        """`today`: the visitor's date (Europe/Warsaw), which relative dates ("next Tuesday") resolve against."""
        self.db = db
        self.kb = kb
        self.cache = cache
        self.settings = settings
        self.delivery = delivery
        self.desk = desk
        self.events = events
        self.today = today

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
        request_person: bool = False,
    ) -> Reply:
        """`request_person`: the widget's button, the same as asking for a person in words (`text` may be empty)."""
        caller = caller or Caller()
        answered = processing_consent is not None or marketing_consent is not None
        text = self._check_message(text, answered or request_person)
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
                conv = storage.new_conversation(str(uuid.uuid4()), self.kb.language(text), _secret_hash(secret),
                                                utcnow())
            if request_person and not text:  # stored and understood as the button's label
                text = self.kb.label(HUMAN, conv.language)
            now = utcnow()
            state = conv.handoff
            if state in SILENT and not self._waited_too_long(conv, now):
                return self._silent(s, conv, text or _consent_note(processing_consent, marketing_consent), now, secret)
            person = "timed_out" if state in SILENT else BUTTON if request_person else None
            turn = self._turn(s, conv, text, processing_consent, marketing_consent, caller, person)
            user_text = turn.stored_text or text or _consent_note(processing_consent, marketing_consent)
            conv.message_count += 2
            conv.last_activity_at = now
            if secret:  # a new conversation goes in once, with what its first turn made of it
                storage.add_conversation(s, conv)
            storage.add_turn(s, conv.id, user_text, turn.reply, now)
            progress = self._progress(s, conv)
            lang = conv.language
            reply = Reply(
                conv.session_id, turn.reply, lang, turn.intent, progress, self._prompt(turn, conv), secret,
                self._suggestions(turn.suggestions, lang), self._suggestions(turn.quick_replies, lang),
                handoff=conv.handoff or "",
            )
            changed, reason, since = conv.handoff != state, conv.handoff_reason or "", conv.handoff_at
        if secret:
            metrics.CONVERSATIONS_STARTED.inc()
        if changed and reply.handoff in (WAITING, CALLBACK):
            handoffs.count(reply.handoff, reason)
        if changed and reply.handoff == WAITING:
            self.desk.alert(reply.session_id, reason, lang, since)
        if changed:
            self.events.handoff_changed(reply.session_id, reply.handoff)
        if turn.new_lead_id:
            self.delivery.hand_over(turn.new_lead_id)
            self.events.lead_changed(turn.new_lead_id)
        return reply

    def _waited_too_long(self, conv: Conversation, now: dt.datetime) -> bool:
        """Waiting for an agent longer than HANDOFF_WAIT_MINUTES: nobody is coming, a callback is arranged instead."""
        limit = dt.timedelta(minutes=self.settings.handoff_wait_min)
        return conv.handoff == WAITING and conv.handoff_at is not None and now - conv.handoff_at > limit

    def _silent(self, s: Session, conv: Conversation, text: str, now: dt.datetime, secret: str) -> Reply:
        """A person is in charge: the visitor's message is stored for them (and published to the inbox), the bot says
        nothing. Committed here, before the event goes out."""
        seq = storage.add_visitor_message(s, conv.id, text, now)
        conv.message_count += 1
        conv.last_activity_at = now
        reply = Reply(conv.session_id, "", conv.language, "handoff", self._progress(s, conv), session_secret=secret,
                      handoff=conv.handoff or "")
        s.commit()
        self.events.message_added(reply.session_id, seq)
        return reply

    def _turn(
        self,
        s: Session,
        conv: Conversation,
        text: str,
        processing: bool | None,
        marketing: bool | None,
        caller: Caller,
        person: str | None = None,
    ) -> _Turn:
        """`person`: BUTTON (the widget's button) or TIMED_OUT (nobody joined in time): a person is asked for,
        whatever the text says."""
        if text and conv.message_count:  # a new conversation's language was just detected from this text
            conv.language = self.kb.language(text, conv.language)
        if conv.followups_sent and not conv.followups_stopped:
            conv.followups_stopped = True  # the visitor answered: no more reminders
        if person and conv.stage in _PENDING_PROMPTS:
            return self._person_during_consent(s, conv, person)
        if conv.stage == "consent_processing":
            return self._processing_answer(s, conv, text, processing, marketing, caller)
        if conv.stage == "consent_marketing":
            return self._marketing_answer(s, conv, text, processing, marketing, caller)
        if processing is not None or marketing is not None:
            raise ValidationError("no consent question is pending in this conversation")
        match = self._match(text, conv.language, conv.awaiting_slot)
        return self._converse(s, conv, text, match, caller, person)

    def _person_during_consent(self, s: Session, conv: Conversation, person: str) -> _Turn:
        """A person asked for while a consent question is open: an agent joins, or the callback is arranged and the
        same question asked again (its answer leads on to the phone and the time, as for any callback)."""
        timed_out = person == TIMED_OUT
        opening = self._hand_off(s, conv, (conv.handoff_reason or ASKED) if timed_out else person, timed_out)
        if conv.handoff == WAITING:
            return _Turn(opening, HUMAN)
        kind = _PENDING_PROMPTS[conv.stage]
        return _Turn(opening + " " + self.kb.say(f"consent.{kind}", conv.language), HUMAN, prompt=kind)

    def _hand_off(self, s: Session, conv: Conversation, reason: str, timed_out: bool = False) -> str:
        """Sets the conversation's handoff (an agent joins now, or a callback) and returns what the bot says."""
        now = utcnow()
        continuing = conv.handoff == CALLBACK and conv.stage != "done"  # the callback's questions are under way
        outcome = CALLBACK if timed_out or continuing else self.desk.outcome(s, now)
        conv.handoff_reason = reason
        conv.not_understood = 0
        if outcome == WAITING:
            conv.handoff, conv.handoff_at = WAITING, now
            return self.kb.say("handoff.joining", conv.language)
        conv.handoff, conv.handoff_at = CALLBACK, conv.handoff_at or now
        why = "the bot did not understand twice" if reason == NOT_UNDERSTOOD_TWICE else "asked for a person"
        if timed_out:
            why += f"; nobody joined the chat within {self.settings.handoff_wait_min:g} minutes"
        conv.request = {**(conv.request or {}), "reason": why}
        return self.kb.say("handoff.timed_out" if timed_out else "handoff.callback", conv.language)

    def _match(self, text: str, language: str, awaiting: str | None) -> Match:
        """The knowledge-base answer, its intent cached by a hash of the message's normalised text; a message that
        may carry contact details or a name is never cached (cache.py)."""
        if identifies(text, "email" if awaiting == CONTACT else awaiting):
            return self.kb.match(text, language)
        key = intent_key(normalise(text), language)
        intent = self.cache.get(key)
        if intent is not None:
            return self.kb.answer_for(intent, language, text)
        match = self.kb.match(text, language)
        self.cache.set(key, match.intent, self.settings.cache_ttl_s)
        return match

    def _converse(
        self, s: Session, conv: Conversation, text: str, match: Match, caller: Caller, person: str | None = None
    ) -> _Turn:
        """Answer first, ask later: the answer to what was asked; details given are taken (and, once the lead
        exists, passed on to sales); questions for details come only once the visitor shows intent (a quote, a
        consultation, a site visit, a request) or gives a detail, and the processing consent notice comes before the
        first of them."""
        lang = conv.language
        about_details = match.intent in _DETAIL_TOPICS
        today = self.today()
        awaiting = conv.awaiting_slot
        found = extract(text, None if awaiting == CONTACT else awaiting, about_details and "?" not in text, today)
        request = parse_request(text, today)
        gave = bool(found.values or found.invalid or found.declined) or awaiting == CALLBACK_TIME
        lost = match.intent == NOT_UNDERSTOOD and not gave  # "nie wiem" to a question is an answer
        conv.not_understood = conv.not_understood + 1 if lost else 0
        reason = ASKED if match.intent == HUMAN else NOT_UNDERSTOOD_TWICE if conv.not_understood >= 2 else None
        if person == TIMED_OUT:
            reason = conv.handoff_reason or ASKED
        elif person is not None:
            reason = person
        handoff = reason is not None
        opening = self._hand_off(s, conv, reason, person == TIMED_OUT) if reason is not None else ""
        if conv.handoff == WAITING:  # an agent joins: the details the message held are kept for them
            conv.slots = {**(conv.slots or {}), **found.values}
            return _Turn(opening, HUMAN)
        if handoff and request is None:
            request = ContactRequest("callback", *preferred_time(text, today), "phone")
        if awaiting == CALLBACK_TIME:
            found.values.pop("start", None)  # a day to call on is not when the renovation starts
            found.values.pop("start_months", None)
            day, time = preferred_time(text, today)
            if conv.request is not None and (day or time):
                conv.request = {**conv.request, "day": day, "time": time}
        before = dict(conv.slots or {})
        conv.slots = {**before, **found.values}
        conv.asked = sorted({*conv.asked, *found.declined})
        if request is not None:
            why = (conv.request or {}).get("reason") if handoff else None  # set by _hand_off for the callback
            conv.request = {**asdict(request), **({"reason": why} if why else {})}
            conv.converted = True  # a booked call or consultation: no more reminders
        answering = awaiting is not None and gave and "?" not in text  # an answer that the matcher took for a topic
        parts = []
        if handoff:  # nobody can join the chat now: a consultant calls back, said as it is
            parts.append(opening)
        elif not (about_details or answering) or not gave:
            parts.append(match.answer)
        parts.extend(self._noted(conv, found.values, before))
        parts.extend(self.kb.say(f"invalid.{name}", lang) for name in found.invalid if name not in found.values)
        if awaiting == CONTACT and about_details and not _has_contact(conv.slots) and not found.invalid:
            parts.append(self.kb.say("invalid.contact", lang))
        intent = "lead_capture" if (about_details or answering) and found.values else match.intent
        if conv.stage == "done":
            return self._after_lead(s, conv, parts, intent, match, request)
        personal = any(name in found.values or name in found.invalid for name in PERSONAL)
        wants = match.intent in _INTENT_TOPICS or request is not None or personal or awaiting is not None
        wants = wants or (about_details and bool(found.values.keys() - {"city"}))
        if not wants:
            return _Turn(" ".join(parts), intent, suggestions=match.suggestions,
                         quick_replies=self.kb.related(match.intent))
        if conv.stage == "collecting":
            conv.stage = "consent_processing"
            conv.awaiting_slot = None
            lead_in = "consent.lead_in_callback" if handoff else "consent.lead_in"
            parts += [self.kb.say(lead_in, lang), self.kb.say("consent.processing", lang)]
            return _Turn(" ".join(parts), intent, prompt="processing")
        return self._next_step(s, conv, parts, intent, caller, retry=found.invalid)

    def _noted(self, conv: Conversation, values: dict[str, SlotValue], before: dict[str, SlotValue]) -> list[str]:
        """What the bot tells the visitor it took: "Noted: ..." (or "Updated: ..." for changed values), and that a
        city is not served, plainly."""
        lang = conv.language
        noted = [name for name in SLOTS if name in values]
        if not noted:
            return []
        changed = [name for name in noted if before.get(name) not in (None, values[name])]
        said = []
        fresh = [name for name in noted if name not in changed]
        for names, message in ((fresh, "noted"), (changed, "updated")):
            if names:
                fields = ", ".join(self.kb.say(f"slot_names.{name}", lang) for name in names)
                said.append(self.kb.say(message, lang, fields=fields))
        city = slot_text(values, "city")
        if city and city not in self.kb.served_cities:
            said.append(self.kb.say("unserved_city", lang, city=city))
        return said

    def _next_step(
        self,
        s: Session,
        conv: Conversation,
        parts: list[str],
        intent: str,
        caller: Caller,
        retry: list[str],
        marketing: bool | None = None,
    ) -> _Turn:
        """With processing consent given: the next question (name, then email or phone, then each optional detail
        once), or the lead handed over: at once for a request, else after the marketing question (unless a client
        answered it already, with both consents at once: `marketing`)."""
        lang = conv.language
        slots = conv.slots
        if "name" not in slots:
            return self._ask(conv, parts, "name", intent)
        if not _has_contact(slots):
            return self._ask(conv, parts, CONTACT, intent)
        request = conv.request
        if request is not None:
            if request.get("channel") == "phone" and not slots.get("phone") and "phone" not in conv.asked:
                conv.asked = sorted({*conv.asked, "phone"})
                return self._ask(conv, parts, "phone", intent)
            # A handoff asks when to call; a request the visitor worded ("please call me") goes at once.
            unset = bool(request.get("reason")) and not (request.get("day") or request.get("time"))
            if unset and CALLBACK_TIME not in conv.asked:
                conv.asked = sorted({*conv.asked, CALLBACK_TIME})
                return self._ask(conv, parts, CALLBACK_TIME, intent)
            return self._store_lead(s, conv, parts, marketing=False, caller=caller)
        again = [name for name in retry if name in OPTIONAL and name not in slots]
        remaining = again or [name for name in OPTIONAL if name not in slots and name not in conv.asked]
        if remaining:
            conv.asked = sorted({*conv.asked, remaining[0]})
            return self._ask(conv, parts, remaining[0], intent)
        if marketing is not None:
            return self._store_lead(s, conv, parts, marketing, caller)
        conv.awaiting_slot = None
        conv.stage = "consent_marketing"
        parts.append(self.kb.say("consent.marketing", lang))
        return _Turn(" ".join(parts), "consent", prompt="marketing")

    def _ask(self, conv: Conversation, parts: list[str], slot: str, intent: str) -> _Turn:
        conv.awaiting_slot = slot
        parts.append(self.kb.say(f"questions.{slot}", conv.language))
        return _Turn(" ".join(parts), intent)

    def _processing_answer(
        self,
        s: Session,
        conv: Conversation,
        text: str,
        processing: bool | None,
        marketing: bool | None,
        caller: Caller,
    ) -> _Turn:
        if processing is None:
            processing = yes_or_no(text)
        if processing is None:
            return self._ask_consent_again(conv, text, "processing")
        if not processing:
            return self._declined(s, conv)
        conv.stage = "details"
        thanks = [self.kb.say("consent.thanks", conv.language)]
        return self._next_step(s, conv, thanks, "consent", caller, [], marketing)

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
        return self._store_lead(s, conv, [], marketing, caller)

    def _ask_consent_again(self, conv: Conversation, text: str, kind: str) -> _Turn:
        """Neither yes nor no: take it as a detail or a correction if it is one, then ask the same question."""
        lang = conv.language
        found = extract(text, today=self.today())
        if found.values:
            before = dict(conv.slots or {})
            conv.slots = {**before, **found.values}
            lead_in = " ".join(self._noted(conv, found.values, before))
        else:
            lead_in = self.kb.say("consent.ask_again", lang)
        return _Turn(lead_in + " " + self.kb.say(f"consent.{kind}", lang), "consent", prompt=kind)

    def _declined(self, s: Session, conv: Conversation) -> _Turn:
        """Without processing consent the personal data given so far is dropped: the captured slots, and the text of
        every visitor message stored in this conversation (the details were typed there). The refusal itself is
        stored as a consent note, whatever else its message said."""
        conv.slots = {}
        conv.asked = []
        conv.request = None
        conv.stage = "collecting"
        conv.awaiting_slot = None
        storage.redact_visitor_messages(s, conv.id, self.kb.say("consent.redacted", conv.language))
        return _Turn(
            self.kb.say("consent.declined", conv.language), "consent_declined", stored_text=_consent_note(False, None)
        )

    def _store_lead(
        self, s: Session, conv: Conversation, parts: list[str], marketing: bool, caller: Caller | None
    ) -> _Turn:
        """Hand the lead over: a new one, or (a returning visitor: the same email or phone) the existing one, which
        keeps its values while sales is told what this conversation brought."""
        lang = conv.language
        values = lead_values(conv.slots, self.settings.eur_pln_rate, self.kb.served_cities)
        conv.awaiting_slot = None
        conv.stage = "done"
        conv.contact_email = slot_text(conv.slots, "email")
        conv.marketing_consent = marketing
        now = utcnow()
        existing = storage.lead_by_contact(s, values["email"], values["phone"])
        if existing is not None:
            lead = existing
            conv.lead_id = lead.id
            # The statement is this visitor's, under the email they gave here (the lead may hold another).
            leads.queue_consent(s, lead, f"return-{conv.session_id}", {
                "email": values["email"] or lead.email or "", "marketing": marketing,
                "session_id": conv.session_id, "conversation_id": str(conv.id), "stated_at": now.isoformat()})
            leads.queue_returning(s, lead, conv.session_id, _news(lead, values))
        else:
            lead = Lead(
                id=uuid.uuid4().hex, conversation_id=conv.id, language=lang, created_at=now, updated_at=now,
                processing_consent=True, marketing_consent=marketing,
                consent_text_version=self.kb.consent_version(lang),
                client_ip=(caller.client_ip or None) if caller else None,
                user_agent=(caller.user_agent or None) if caller else None,
                **values,
            )
            storage.add_lead(s, lead)
            s.flush()
            conv.lead_id = lead.id
            leads.queue_new_lead(s, lead, alert=conv.request is None and self.delivery.alert_due(lead))
        metrics.record_lead(lead, returning=existing is not None)
        requested = conv.request is not None
        if requested:
            self._pass_on_request(s, conv, lead, parts)
        if not requested:
            first_name = (slot_text(conv.slots, "name") or "").split(" ")[0]
            city = slot_text(conv.slots, "city")
            if city and city not in self.kb.served_cities:
                parts.append(self.kb.say("lead_stored_unserved", lang, name=first_name, city=city))
            else:
                parts.append(self.kb.say("lead_stored", lang, name=first_name))
        return _Turn(" ".join(parts), "lead_stored", new_lead_id=lead.id)

    def _pass_on_request(self, s: Session, conv: Conversation, lead: Lead, parts: list[str]) -> None:
        """The request goes to sales at once; the visitor hears what was passed on."""
        request = conv.request or {}
        conv.request = None
        lead.request_kind, lead.request_day = request.get("kind"), request.get("day") or None
        lead.request_time, lead.request_channel = request.get("time") or None, request.get("channel") or None
        lead.requested_at = utcnow()
        leads.queue_request(s, lead, request)
        leads.queue_item_update(s, lead)
        when = ", ".join(x for x in (request.get("day"), request.get("time")) if x)
        when = when or self.kb.say("request.soon", conv.language)
        parts.append(self.kb.say(f"request.{request.get('kind', 'callback')}", conv.language, when=when))

    def _after_lead(
        self, s: Session, conv: Conversation, parts: list[str], intent: str, match: Match, request: Any
    ) -> _Turn:
        """The lead is with sales: a correction updates it (or, a returning visitor's, goes to sales to decide), a
        request is passed on at once; anything else is answered."""
        lead = storage.lead_for_update(s, conv.lead_id) if conv.lead_id else None
        if lead is None:
            return _Turn(" ".join(parts), intent)
        values = lead_values(conv.slots, self.settings.eur_pln_rate, self.kb.served_cities)
        news = _news(lead, values)
        if news and lead.conversation_id == conv.id:
            for name in (*news, *_DERIVED):
                setattr(lead, name, values[name])
            if "email" in news:  # the ledger is kept by email: the statement goes under the right one too
                leads.queue_email(s, lead, utcnow())
            lead.updated_at = utcnow()
            leads.queue_item_update(s, lead)
        elif news:
            leads.queue_returning(s, lead, conv.session_id, news)
        if request is not None:
            self._pass_on_request(s, conv, lead, parts)
        if news or request is not None:
            return _Turn(" ".join(parts), "lead_updated", new_lead_id=lead.id)
        return _Turn(
            " ".join(parts), intent, suggestions=match.suggestions, quick_replies=self.kb.related(match.intent)
        )

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
        """What the conversation captured (with its lead's values once handed over) and what is still missing."""
        slots = conv.slots or {}
        lead = storage.lead_by_id(s, conv.lead_id) if conv.lead_id else None
        held = {name for name in SLOTS if name in slots}
        if lead is not None:
            held |= {name for name, value in (
                ("name", lead.name), ("email", lead.email), ("phone", lead.phone), ("city", lead.city),
                ("area_m2", lead.area_m2), ("budget", lead.budget_amount), ("start", lead.start)) if value is not None}
        missing = [n for n in SLOTS if n not in held]
        progress = LeadProgress([n for n in SLOTS if n in held], missing, complete=not missing)
        if lead is not None:
            progress.lead_id, progress.score = lead.id, lead.score
        return progress

    def hand_over_idle(self, idle_for: dt.timedelta, limit: int = 200) -> int:
        """Leads of visitors who gave their contact and processing consent and then left before the questions ended:
        handed over as they are (partial, no marketing consent) once idle for `idle_for`; returns how many."""
        handed = []
        with self.db.session() as s:
            for conv in storage.idle_unhanded_conversations(s, utcnow() - idle_for, limit):
                if "name" in conv.slots and _has_contact(conv.slots):
                    handed.append(self._store_lead(s, conv, [], marketing=False, caller=None).new_lead_id)
        for lead_id in handed:
            if lead_id:
                self.delivery.deliver(lead_id)
        return len(handed)

    # --- reading ----------------------------------------------------------------------------------------------

    def transcript(self, session_id: str, secret: str) -> Transcript:
        """The conversation, for the holder of its secret; NotFoundError without it, with a wrong one, or for a
        conversation that has none, exactly as for an unknown session."""
        self._check_session_id(session_id)
        with self.db.session() as s:
            conv = storage.conversation_by_session(s, session_id)
            if conv is None or not _secret_matches(secret, conv.session_secret_hash):
                raise NotFoundError("no conversation with this session_id")
            messages = [TranscriptEntry(m.role, m.text, m.created_at, m.id, m.author or "")
                        for m in storage.messages_of(s, conv.id)]
            pending = _PENDING_PROMPTS.get(conv.stage)
            prompt = self._prompt(_Turn("", "", prompt=pending), conv) if pending else None
            return Transcript(
                conv.session_id, conv.created_at, messages, self._progress(s, conv), prompt, conv.handoff or ""
            )

    def authorised(self, session_id: str, secret: str) -> int:
        """The conversation's id for the holder of its secret; errors exactly as transcript()."""
        self._check_session_id(session_id)
        with self.db.session() as s:
            conv = storage.conversation_by_session(s, session_id)
            if conv is None or not _secret_matches(secret, conv.session_secret_hash):
                raise NotFoundError("no conversation with this session_id")
            return conv.id


def _has_contact(slots: dict[str, SlotValue]) -> bool:
    return bool(slots.get("email") or slots.get("phone"))


def lead_values(slots: dict[str, SlotValue], eur_pln_rate: float | None, served: tuple[str, ...]) -> dict[str, Any]:
    """The lead's columns from the conversation's slots: the budget also in PLN (a EUR budget converted at
    EUR_PLN_RATE, or left unscored), and the score."""
    amount, currency = slot_number(slots, "budget"), slot_text(slots, "budget_currency") or "PLN"
    if amount is None:
        budget_pln = None
    elif currency == "PLN":
        budget_pln = amount
    else:
        budget_pln = round(amount * eur_pln_rate) if currency == "EUR" and eur_pln_rate else None
    values: dict[str, Any] = {
        "name": slot_text(slots, "name"),
        "email": slot_text(slots, "email"),
        "phone": slot_text(slots, "phone"),
        "city": slot_text(slots, "city"),
        "area_m2": slot_number(slots, "area_m2"),
        "budget_amount": amount,
        "budget_currency": currency if amount is not None else None,
        "budget_pln": budget_pln,
        "start": slot_text(slots, "start"),
        "start_months": slot_number(slots, "start_months"),
    }
    values["score"] = score_lead({**slots, "budget": budget_pln}, served)
    return values


_DERIVED = frozenset({"budget_pln", "start_months", "score"})


def _news(lead: Lead, values: dict[str, Any]) -> dict[str, str]:
    """The values a conversation holds that its lead does not (new, or different): what a correction changes."""
    return {
        name: str(value) for name, value in values.items()
        if name not in _DERIVED and value is not None and getattr(lead, name) != value
    }


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
