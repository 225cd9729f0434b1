"""Who a person is in chat's tables: every conversation and lead about them, found once for both the access request
(export.py) and the erasure (privacy.py), so what an export lists is exactly what an erasure removes.

The search starts from the email, or from the phone of a person who gave only a phone (an operator's request, after
an identity check), and follows what links records to one person until nothing new is found:
- the email: leads with it, conversations that captured it or whose messages contain it, in any case;
- a phone: leads with it, conversations that captured it, and messages holding it however it was typed ("+48 601 602
  699", "601-602-699", "0048601602699", "(+48) 601602699"), read by phonenumbers' matcher and by runs of digits, but
  never as part of a longer number;
- a full name (two words or more; one word is shared by too many people), in any case;
- linkage: the lead of each conversation and the conversation of each lead, and the phones and full names captured
  in them; by phone, also the emails captured where that phone was found, which are the person's too.
A conversation found by the person's own email, or by the phone the search started from, is theirs. One found only
through a phone or name captured along the way is someone else's (who typed the same number or name) when it
captured an email that is not the person's, or, found by name alone, a phone that is not theirs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import phonenumbers
from sqlalchemy.orm import Session

from services.chat import storage
from services.chat.slots import normalise_email, normalise_phone, slot_text
from services.chat.storage import Conversation, Lead
from services.runtime.errors import ValidationError

# A number typed with separators: digits with spaces, dashes, dots, brackets or slashes between them.
_DIGIT_RUN = re.compile(r"\d(?:[\s\u00a0\-.()/]*\d)*")


@dataclass
class Subject:
    """What was found: the conversations (with why each was taken), the leads, and the person's identifiers."""

    conversations: list[Conversation] = field(default_factory=list)
    leads: list[Lead] = field(default_factory=list)
    found_by: dict[int, set[str]] = field(default_factory=dict)
    emails: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)  # as captured


def checked_email(email: str) -> str:
    """The email normalised as chat stores it; ValidationError when it is missing or malformed."""
    normalised = normalise_email(email or "")
    if normalised is None or len(normalised) > 254:
        raise ValidationError("email is missing or malformed")
    return normalised


def checked_phone(phone: str) -> str:
    """The phone as chat stores it (E.164), from any format; ValidationError unless it is a phone number."""
    normalised = normalise_phone(phone or "")
    if normalised is None:
        raise ValidationError("phone is missing or malformed (a Polish number, or any with its country code)")
    return normalised


def checked_subject(email: str, phone: str) -> tuple[str, str]:
    """(email, "") or ("", phone), normalised; ValidationError unless exactly one of the two is given."""
    if bool((email or "").strip()) == bool((phone or "").strip()):
        raise ValidationError("give exactly one of email or phone")
    return (checked_email(email), "") if (email or "").strip() else ("", checked_phone(phone))


def _national(phone: str) -> tuple[str, str]:
    """(the national significant number, the country code) of an E.164 number: '+48601602699' -> ('601602699', '48')."""
    number = phonenumbers.parse(phone)
    return phonenumbers.national_significant_number(number), str(number.country_code)


def mentions_phone(text: str, phone: str) -> bool:
    """Whether `text` holds the E.164 `phone` in any format a person may type it."""
    national, country = _national(phone)
    typed_forms = {national, "0" + national, country + national, "00" + country + national}
    for run in _DIGIT_RUN.finditer(text):
        if re.sub(r"\D", "", run.group(0)) in typed_forms:
            return True
    matcher = phonenumbers.PhoneNumberMatcher(text, "PL", leniency=phonenumbers.Leniency.POSSIBLE)
    return any(phonenumbers.format_number(m.number, phonenumbers.PhoneNumberFormat.E164) == phone for m in matcher)


def conversations_mentioning_phone(s: Session, phone: str) -> set[int]:
    """Conversations that captured the phone or whose messages hold it in any format."""
    candidates = storage.messages_with_digits(s, _national(phone)[0])
    return {cid for cid, text in candidates if mentions_phone(text, phone)} | storage.conversation_ids_capturing(
        s, phone
    )


def _full_names(conversations: list[Conversation], leads: list[Lead]) -> set[str]:
    names = {slot_text(c.slots, "name") for c in conversations} | {lead.name for lead in leads}
    return {n.strip() for n in names if n and n.strip()}


def _contacts(conversation: Conversation, leads: dict[str, Lead]) -> tuple[set[str], set[str]]:
    """The emails and phones a conversation captured (its slots, its lead)."""
    lead = leads.get(conversation.lead_id or "")
    emails = {conversation.contact_email, slot_text(conversation.slots, "email"), lead.email if lead else None}
    phones = {slot_text(conversation.slots, "phone"), lead.phone if lead else None}
    return {e for e in emails if e}, {p for p in phones if p}


class _Search:
    def __init__(self, s: Session, email: str, phone: str):
        self.s = s
        self.found = Subject(emails={email} if email else set(), phones={phone} if phone else set())
        self.seed_phone = phone
        self.leads: dict[str, Lead] = {}
        self.searched: set[str] = set()

    def run(self) -> Subject:
        self._take(*self._matches())
        if self.seed_phone:  # the emails captured where the phone was found are the person's
            for conversation in self.found.conversations:
                self.found.emails |= _contacts(conversation, self.leads)[0]
        while self._identifiers() - self.searched:
            self._take(*self._matches())
        return self._result()

    def _identifiers(self) -> set[str]:
        f = self.found
        return {f"email:{e}" for e in f.emails} | {f"phone:{p}" for p in f.phones} | {f"name:{n}" for n in f.names}

    def _matches(self) -> tuple[dict[int, set[str]], dict[int, set[str]]]:
        """Conversations found by the person's own contacts (theirs) and by what was captured along the way."""
        direct: dict[int, set[str]] = {}
        candidates: dict[int, set[str]] = {}
        for identifier in sorted(self._identifiers() - self.searched):
            kind, _, value = identifier.partition(":")
            self.searched.add(identifier)
            if kind == "email":
                for lead in storage.leads_by_email(self.s, value):
                    self.leads[lead.id] = lead
                    direct.setdefault(lead.conversation_id, set()).add("email")
                for cid in storage.conversation_ids_with_email(self.s, value):
                    direct.setdefault(cid, set()).add("email")
            elif kind == "phone":
                target = direct if value == self.seed_phone else candidates
                cids = conversations_mentioning_phone(self.s, value)
                for cid in cids | {lead.conversation_id for lead in storage.leads_by_phone(self.s, value)}:
                    target.setdefault(cid, set()).add("phone")
            elif len(value.split()) >= 2:
                for cid in storage.conversation_ids_mentioning(self.s, value.lower()):
                    candidates.setdefault(cid, set()).add("name")
        return direct, candidates

    def _take(self, direct: dict[int, set[str]], candidates: dict[int, set[str]]) -> None:
        found_by = self.found.found_by
        for cid, why in direct.items():
            found_by.setdefault(cid, set()).update(why)
        new = {cid: why for cid, why in candidates.items() if cid not in found_by}
        for cid, why in candidates.items():
            if cid in found_by:
                found_by[cid] |= why
        their_leads = {lead.id: lead for lead in storage.leads_of_conversations(self.s, new)}
        for conversation in storage.conversations_by_ids(self.s, new):
            emails, phones = _contacts(conversation, their_leads)
            foreign_phone = new[conversation.id] == {"name"} and bool(phones - self.found.phones)
            if not (emails - self.found.emails) and not foreign_phone:
                found_by[conversation.id] = new[conversation.id]
        self._link()

    def _link(self) -> None:
        """The leads of the conversations, the conversations of the leads, and what they captured."""
        found_by = self.found.found_by
        for lead in list(self.leads.values()):
            found_by.setdefault(lead.conversation_id, {"lead"})
        for lead in storage.leads_of_conversations(self.s, found_by):
            self.leads[lead.id] = lead
        self.found.conversations = storage.conversations_by_ids(self.s, found_by)
        leads = [lead for lead in self.leads.values() if lead.conversation_id in found_by]
        self.found.phones |= {p for c in self.found.conversations for p in _contacts(c, self.leads)[1]}
        self.found.names |= _full_names(self.found.conversations, leads)

    def _result(self) -> Subject:
        found = self.found
        found.conversations.sort(key=lambda c: c.id)
        found.leads = sorted((lead for lead in self.leads.values() if lead.conversation_id in found.found_by),
                             key=lambda lead: lead.id)
        return found


def find_subject(s: Session, email: str, phone: str) -> Subject:
    """Everything about the person with this (already checked) email, or this phone when the email is empty."""
    return _Search(s, email, phone).run()
