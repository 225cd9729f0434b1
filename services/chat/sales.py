"""What sales gets about a lead: the fields of its Monday.com item and the text of its Slack alerts.

The item's columns are lead fields (LEAD_FIELDS) renamed to the board's column ids by MONDAY_COLUMNS, so a board
with other column ids needs configuration, not code. A Slack alert carries the contact details, the score with the
rules that gave it, and a one-line summary, so whoever reads it can call without opening anything else.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from services.chat.scoring import Reason, breakdown
from services.chat.storage import Lead
from services.runtime.config import ConfigError

LEAD_FIELDS = (
    "email", "phone", "city", "city_served", "area_m2", "budget", "budget_currency", "budget_pln", "start", "score",
    "score_reasons", "partial", "missing", "request", "language", "marketing_consent", "lead_id", "session_id",
    "status",
)
# Fields left off the item unless MONDAY_COLUMNS names their column: a board's status column takes only its own
# labels, so the inbox's status (new, contacted, won, lost) goes to a column set up for it, never to one by chance.
OPT_IN = frozenset({"status"})
OPTIONAL = ("city", "area_m2", "budget", "start")  # a lead without one of these is handed over as partial


def parse_monday_columns(raw: str) -> dict[str, str]:
    """MONDAY_COLUMNS: 'email=email_mk1,phone=phone_3,...' renames fields; 'budget_pln=' leaves one out; a field not
    named keeps its own name as the column id, but for those in OPT_IN, which are left out."""
    columns = {name: "" if name in OPT_IN else name for name in LEAD_FIELDS}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, sep, column = (x.strip() for x in part.partition("="))
        if not sep or name not in columns:
            raise ConfigError(
                f"MONDAY_COLUMNS part {part!r}: expected <field>=<column id>, the field one of "
                f"{', '.join(LEAD_FIELDS)}"
            )
        columns[name] = column
    return columns


@dataclass(frozen=True)
class Alert:
    title: str
    text: str
    fields: dict[str, str]


@dataclass(frozen=True)
class SalesView:
    served_cities: Callable[[], tuple[str, ...]]  # the knowledge base's, as it is now (it reloads)
    monday_columns: Mapping[str, str]
    eur_pln_rate: float | None  # EUR_PLN_RATE; None: a EUR budget is not scored and is flagged

    def missing(self, lead: Lead) -> list[str]:
        values = {"city": lead.city, "area_m2": lead.area_m2, "budget": lead.budget_amount, "start": lead.start}
        return [name for name in OPTIONAL if values[name] is None]

    def served(self, lead: Lead) -> bool:
        return lead.city is None or lead.city in self.served_cities()

    def reasons(self, lead: Lead) -> list[Reason]:
        return breakdown(scoring_slots(lead), self.served_cities())

    def fields(self, lead: Lead, session_id: str) -> dict[str, str]:
        missing = self.missing(lead)
        return {
            "email": lead.email or "",
            "phone": lead.phone or "",
            "city": lead.city or "",
            "city_served": "" if lead.city is None else ("yes" if self.served(lead) else "no"),
            "area_m2": _text(lead.area_m2),
            "budget": _text(lead.budget_amount),
            "budget_currency": lead.budget_currency or "",
            "budget_pln": _text(lead.budget_pln),
            "start": lead.start or "",
            "score": str(lead.score),
            "score_reasons": "; ".join(str(r) for r in self.reasons(lead)),
            "partial": "yes" if missing else "no",
            "missing": ", ".join(missing),
            "request": request_text(lead),
            "language": lead.language,
            "marketing_consent": "yes" if lead.marketing_consent else "no",
            "lead_id": lead.id,
            "session_id": session_id,
            "status": lead.status,
        }

    def monday(self, lead: Lead, session_id: str) -> tuple[str, dict[str, str]]:
        """The item's name and its column values by the board's column ids."""
        fields = self.fields(lead, session_id)
        columns = {self.monday_columns[name]: value for name, value in fields.items() if self.monday_columns[name]}
        return item_name(lead), columns

    def flags(self, lead: Lead) -> list[str]:
        """What sales must look at before calling."""
        flags = []
        if not self.served(lead):
            flags.append(f"city not served: {lead.city}")
        if lead.budget_currency == "EUR" and lead.budget_pln is None:
            flags.append("budget in EUR and no EUR_PLN_RATE configured: not scored")
        return flags

    def lead_alert(self, lead: Lead, session_id: str) -> Alert:
        kind = "Partial lead" if self.missing(lead) else "Lead"
        return Alert(f"{kind}: {lead.score}/100", self.summary(lead), self._alert_fields(lead, session_id))

    def request_alert(self, lead: Lead, session_id: str, request: Mapping[str, str]) -> Alert:
        title = f"{request.get('kind', 'callback').replace('_', ' ').capitalize()} request: {_request_when(request)}"
        fields = self._alert_fields(lead, session_id)
        if request.get("reason"):  # the visitor asked for a person, or the bot failed them
            fields["reason"] = request["reason"]
        return Alert(title, self.summary(lead), fields)

    def returning_alert(self, lead: Lead, session_id: str, news: Mapping[str, str]) -> Alert:
        """A returning visitor gave other values than the lead holds: sales decides which are right."""
        changes = ", ".join(f"{name}: {value}" for name, value in sorted(news.items())) or "nothing new"
        fields = {**self._alert_fields(lead, session_id), "new_conversation": session_id}
        return Alert("Returning visitor", f"{self.summary(lead)} New in this conversation: {changes}.", fields)

    def summary(self, lead: Lead) -> str:
        where = lead.city or "an unknown city"
        size = f"a {lead.area_m2} m² flat" if lead.area_m2 else "a flat of unknown size"
        parts = [f"{lead.name or 'A visitor'} ({lead.language}) wants a renovation of {size} in {where}"]
        if lead.budget_amount is not None:
            parts.append(f"budget {lead.budget_amount} {lead.budget_currency or 'PLN'}")
        if lead.start:
            parts.append(f"start {lead.start}")
        if missing := self.missing(lead):
            parts.append(f"missing: {', '.join(missing)}")
        parts.extend(self.flags(lead))
        return "; ".join(parts) + "."

    def _alert_fields(self, lead: Lead, session_id: str) -> dict[str, str]:
        fields = self.fields(lead, session_id)
        keep = ("email", "phone", "city", "city_served", "area_m2", "budget", "budget_currency", "start", "score",
                "score_reasons", "missing", "request", "lead_id")
        return {"name": lead.name or "", **{k: fields[k] for k in keep if fields[k]}}


def scoring_slots(lead: Lead) -> dict[str, str | int | None]:
    return {
        "email": lead.email, "phone": lead.phone, "name": lead.name, "city": lead.city, "area_m2": lead.area_m2,
        "budget": lead.budget_pln, "start_months": lead.start_months,
    }


def item_name(lead: Lead) -> str:
    return f"{lead.name or 'Lead'} – {lead.city or '?'}, {lead.area_m2 or '?'} m²"


def request_text(lead: Lead) -> str:
    if not lead.request_kind:
        return ""
    request = {"kind": lead.request_kind, "day": lead.request_day or "", "time": lead.request_time or "",
               "channel": lead.request_channel or ""}
    return f"{lead.request_kind.replace('_', ' ')}: {_request_when(request)}"


def _request_when(request: Mapping[str, str]) -> str:
    parts = [request.get("day") or "any day", request.get("time") or "any time"]
    if request.get("channel"):
        parts.append(f"by {request['channel']}")
    return ", ".join(parts)


def _text(value: int | None) -> str:
    return "" if value is None else str(value)
