"""`make eval`, lead capture part: the scripted dialogues of tests/chat/eval/dialogues.yaml (issue 13, part 7) run
through the real chat service and scored on what sales receives.

Each dialogue's conversations go through ChatService in this process (its own SQLite file, the packaged knowledge
base), which talks over gRPC to a real consent server (in process, SQLite) and a real notifier process delivering to
a local Monday.com board and Slack workspace (testsupport/receivers.py). "!agree"/"!decline" answer the pending
consent prompt through SendMessage's processing_consent / marketing_consent. After each conversation the runner waits
(polling, bounded) until chat has handed everything over and the notifier has nothing pending, then reads the board's
new items and Slack's new messages. Today is fixed at the file's date (see fix_today for the seam used).

Printed, not asserted: slot precision/recall/F1 over the expected slot values (and per slot), the share of dialogues
whose lead reaches sales with the right values and the right number of items, the number of areas read as budgets,
and each failing dialogue with its first difference. The file is the frozen judge: never tune it, tune the chat.

    python -m bench.eval_dialogues [--dialogue ID ...] [--transcripts]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DIALOGUES = Path(__file__).resolve().parent.parent / "tests" / "chat" / "eval" / "dialogues.yaml"
# The slots scored for precision and recall; a request counts as two (its kind and its day).
SLOTS = ("name", "email", "phone", "city", "area_m2", "budget", "budget_currency", "start", "request_kind",
         "request_day")
TARGETS = {"slot_f1": 0.95, "dialogues": 1.0, "areas_as_budgets": 0}
AGREE, DECLINE = "!agree", "!decline"
SETTLE_TIMEOUT_S = 30.0  # the longest the runner waits for chat and the notifier to hand a dialogue's lead over


# --- the dialogues ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    items: int
    slots: Mapping[str, str]  # slot -> expected value as text; a slot of SLOTS not here must be empty
    partial: bool | None
    marketing_consent: bool | None
    consent_prompt_turn: int | None
    slack_request: bool
    slack_unserved: bool
    ignore: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Dialogue:
    id: str
    language: str
    conversations: tuple[tuple[str, ...], ...]
    expect: Expected


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def expected_slots(lead: Mapping[str, Any]) -> dict[str, str]:
    """The YAML `lead` mapping as slot texts: the request split into kind and day, empty values left out."""
    slots = {name: _text(lead.get(name)) for name in SLOTS if name in lead}
    request = lead.get("request") or {}
    slots["request_kind"] = _text(request.get("kind"))
    slots["request_day"] = _text(request.get("day"))
    return {name: value for name, value in slots.items() if value}


def parse_dialogue(raw: Mapping[str, Any]) -> Dialogue:
    expect = raw["expect"]
    lead = expect.get("lead") or {}
    unknown = set(lead) - set(SLOTS) - {"request", "partial", "marketing_consent"}
    if unknown:
        raise ValueError(f"dialogue {raw['id']}: unknown lead fields {sorted(unknown)}")
    conversations = tuple(tuple(str(turn) for turn in conv) for conv in raw["conversations"])
    if not conversations or not all(conversations):
        raise ValueError(f"dialogue {raw['id']}: every conversation needs at least one turn")
    slack = expect.get("slack") or {}
    return Dialogue(
        id=str(raw["id"]),
        language=str(raw["language"]),
        conversations=conversations,
        expect=Expected(
            items=int(expect["items"]),
            slots=expected_slots(lead),
            partial=lead.get("partial"),
            marketing_consent=lead.get("marketing_consent"),
            consent_prompt_turn=expect.get("consent_prompt_turn"),
            slack_request=bool(slack.get("request", False)),
            slack_unserved=bool(slack.get("unserved_city", False)),
            ignore=frozenset(expect.get("ignore") or ()),
        ),
    )


def load_dialogues(path: Path = DIALOGUES) -> tuple[dt.date, list[Dialogue]]:
    """The fixed date the dialogues are written for, and the dialogues; ids must be unique."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    dialogues = [parse_dialogue(raw) for raw in data["dialogues"]]
    ids = [d.id for d in dialogues]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"{path}: duplicate dialogue ids {duplicates}")
    return dt.date.fromisoformat(str(data["today"])), dialogues


# --- what sales got -----------------------------------------------------------------------------------------------


@dataclass
class Observed:
    """What one dialogue produced: the new Monday.com items (oldest first), the new Slack messages' text, the turn
    of the first conversation whose reply carried the processing consent prompt, and notes (ignored clicks,
    errors raised by a turn, a hand-over that did not settle)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    slack: list[str] = field(default_factory=list)
    processing_prompt_turn: int | None = None
    notes: list[str] = field(default_factory=list)
    error: str = ""
    transcript: list[str] = field(default_factory=list)


_NAME_END = re.compile(r"\s+[–—-]\s+")
_DAY = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_KIND = re.compile(r"\b(callback|consultation|site[ _]visit)\b", re.IGNORECASE)
_UNSERVED = re.compile(r"not served|unserved|city_served\"?\s*[:=]\s*\"?no\b|nie obsługujemy", re.IGNORECASE)
_YES = frozenset({"yes", "true", "tak", "1"})
_NO = frozenset({"no", "false", "nie", "0"})


def _column(value: Any) -> str:
    """A column value as text: Monday.com's typed columns are objects ({"email": ...}, {"phone": ...},
    {"label": ...}, {"text": ...}); a text column is the string itself."""
    if isinstance(value, Mapping):
        for key in ("email", "phone", "label", "text", "value", "date"):
            if value.get(key):
                return _text(value[key])
        return ""
    return _text(value)


def _flag(value: str) -> bool | None:
    folded = value.strip().lower()
    return True if folded in _YES else False if folded in _NO else None


def _number(value: str) -> str:
    """'55', '55.0', '55 000' -> '55': numbers compare as integers whatever their formatting."""
    digits = value.replace(" ", "").replace("\u00a0", "")
    try:
        number = float(digits)
    except ValueError:
        return value
    return str(int(number)) if number == int(number) else digits


def item_values(item: Mapping[str, Any]) -> tuple[dict[str, str], bool | None, bool | None]:
    """A board item as slot texts (empty ones left out), its partial flag and its marketing consent. The item's
    name is '<person> – <city>, <area> m²'; the columns are named after the lead fields."""
    columns = {str(k): _column(v) for k, v in (item.get("column_values") or {}).items()}
    name = _NAME_END.split(_text(item.get("name")), maxsplit=1)[0].strip()
    slots = {"name": "" if name in ("Lead", "?") else name}
    for slot in ("email", "phone", "city", "area_m2", "budget", "budget_currency", "start"):
        slots[slot] = columns.get(slot, "")
    if "budget" not in columns and columns.get("budget_pln"):  # a board without the amount in its own currency
        slots["budget"], slots["budget_currency"] = columns["budget_pln"], "PLN"
    for slot in ("area_m2", "budget"):
        slots[slot] = _number(slots[slot]) if slots[slot] else ""
    if not slots["budget"]:
        slots["budget_currency"] = ""  # a currency without an amount says nothing
    request = columns.get("request", "")
    kind = _KIND.search(request)
    day = _DAY.search(request)
    slots["request_kind"] = kind.group(1).lower().replace(" ", "_") if kind else ""
    slots["request_day"] = day.group(0) if day and kind else ""
    return ({k: v for k, v in slots.items() if v}, _flag(columns.get("partial", "")),
            _flag(columns.get("marketing_consent", "")))


def slack_mentions_request(messages: Iterable[str]) -> bool:
    return any(_KIND.search(m) for m in messages)


def slack_flags_unserved(messages: Iterable[str]) -> bool:
    return any(_UNSERVED.search(m) for m in messages)


# --- scoring ------------------------------------------------------------------------------------------------------


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, other: Counts) -> None:
        self.tp, self.fp, self.fn = self.tp + other.tp, self.fp + other.fp, self.fn + other.fn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def slot_counts(expected: Mapping[str, str], got: Mapping[str, str], ignore: Iterable[str] = ()) -> dict[str, Counts]:
    """Per slot: a right value is a true positive; a wrong one a false positive and a false negative; a value where
    none was expected a false positive; a missing expected value a false negative."""
    counts = {}
    skipped = set(ignore)
    for slot in SLOTS:
        if slot in skipped:
            continue
        want, have = expected.get(slot, ""), got.get(slot, "")
        c = Counts()
        if want and have:
            c.tp, c.fp, c.fn = (1, 0, 0) if want == have else (0, 1, 1)
        elif want:
            c.fn = 1
        elif have:
            c.fp = 1
        counts[slot] = c
    return counts


def area_read_as_budget(expected: Mapping[str, str], got: Mapping[str, str]) -> bool:
    """The bug issue 13 quotes: the area's number (55 m) came back as the budget (55, 55 000 or 55 000 000)."""
    area, budget = expected.get("area_m2", ""), got.get("budget", "")
    if not area.isdigit() or not budget.isdigit() or budget == expected.get("budget"):
        return False
    return int(budget) in {int(area) * factor for factor in (1, 1_000, 1_000_000)}


@dataclass
class Verdict:
    dialogue: Dialogue
    counts: dict[str, Counts]
    difference: str  # the first difference from what was expected; empty when the dialogue is right
    area_as_budget: bool
    lead_right: bool  # the item count, every slot, partial and marketing consent right (consent turn, Slack aside)


def judge(dialogue: Dialogue, observed: Observed) -> Verdict:
    """Scores one dialogue: the slots of the first item (the lead as first created and then updated) against the
    expectation, and whether everything sales got is right, with the first difference found."""
    want = dialogue.expect
    got, partial, marketing = item_values(observed.items[0]) if observed.items else ({}, None, None)
    counts = slot_counts(want.slots, got, want.ignore)
    differences = []
    if observed.error:
        differences.append(f"error: {observed.error}")
    if len(observed.items) != want.items:
        differences.append(f"{len(observed.items)} Monday.com items, expected {want.items}")
    for slot in SLOTS:
        if slot not in want.ignore and want.slots.get(slot, "") != got.get(slot, ""):
            differences.append(f"{slot}: got {got.get(slot, '')!r}, expected {want.slots.get(slot, '')!r}")
    if want.items:
        if want.partial is not None and partial != want.partial:
            differences.append(f"partial: got {partial}, expected {want.partial}")
        if want.marketing_consent is not None and marketing != want.marketing_consent:
            differences.append(f"marketing_consent: got {marketing}, expected {want.marketing_consent}")
    lead_right = not differences
    if want.consent_prompt_turn is not None and observed.processing_prompt_turn != want.consent_prompt_turn:
        differences.append(f"processing consent prompt at turn {observed.processing_prompt_turn}, "
                           f"expected at turn {want.consent_prompt_turn}")
    if slack_mentions_request(observed.slack) != want.slack_request:
        differences.append(f"Slack mentions a request: {not want.slack_request}, expected {want.slack_request}")
    if slack_flags_unserved(observed.slack) != want.slack_unserved:
        differences.append(f"Slack flags an unserved city: {not want.slack_unserved}, expected {want.slack_unserved}")
    return Verdict(dialogue, counts, differences[0] if differences else "", area_read_as_budget(want.slots, got),
                   lead_right)


@dataclass
class Summary:
    per_slot: dict[str, Counts]
    total: Counts
    correct: int
    leads_right: int
    dialogues: int
    areas_as_budgets: int
    failing: list[Verdict]


def summarise(verdicts: list[Verdict]) -> Summary:
    per_slot = {slot: Counts() for slot in SLOTS}
    total = Counts()
    for verdict in verdicts:
        for slot, counts in verdict.counts.items():
            per_slot[slot].add(counts)
            total.add(counts)
    failing = [v for v in verdicts if v.difference]
    return Summary(per_slot, total, len(verdicts) - len(failing), sum(v.lead_right for v in verdicts), len(verdicts),
                   sum(v.area_as_budget for v in verdicts), failing)


def report(summary: Summary, dialogues: list[Dialogue], seam: str, out: Callable[[str], None] = print) -> None:
    languages = {lang: sum(d.language == lang for d in dialogues) for lang in sorted({d.language for d in dialogues})}
    turns = sum(len(c) for d in dialogues for c in d.conversations)
    conversations = sum(len(d.conversations) for d in dialogues)
    out(f"lead capture dialogues: {summary.dialogues} run of {len(dialogues)} "
        f"({', '.join(f'{k} {v}' for k, v in languages.items())}; {conversations} conversations, {turns} turns); "
        f"today fixed by {seam}")
    t = summary.total
    out(f"  slot precision {t.precision:6.1%}  recall {t.recall:6.1%}  F1 {t.f1:.3f}  "
        f"(tp {t.tp}, fp {t.fp}, fn {t.fn})   target F1 >= {TARGETS['slot_f1']}")
    for slot, c in summary.per_slot.items():
        out(f"    {slot:<16} P {c.precision:6.1%}  R {c.recall:6.1%}  F1 {c.f1:.3f}  (tp {c.tp}, fp {c.fp}, fn {c.fn})")
    def share(count: int) -> str:
        return f"{count}/{summary.dialogues} = {count / summary.dialogues if summary.dialogues else 0.0:.1%}"

    out(f"  dialogues whose lead reaches sales with the right values and number of items: {share(summary.leads_right)}")
    out(f"  dialogues entirely right (also the consent prompt's turn and Slack): {share(summary.correct)}"
        f"   target: every dialogue")
    out(f"  areas read as budgets: {summary.areas_as_budgets}   target {TARGETS['areas_as_budgets']}")
    if summary.failing:
        out("  failing dialogues (first difference):")
        for verdict in summary.failing:
            out(f"    {verdict.dialogue.id}: {verdict.difference}")


# --- running ------------------------------------------------------------------------------------------------------


def fix_today(chat: Any, today: dt.date) -> str:
    """Makes the chat service see `today` as the current date in Warsaw. Prefers the service's own clock seam (a
    `today` callable on ChatService); the date helpers' module function otherwise (services.chat.when.warsaw_today,
    replaced in every chat module that imported it). Returns which seam was used."""
    for attribute in ("today", "_today"):
        if callable(getattr(chat, attribute, None)):
            setattr(chat, attribute, lambda: today)
            return f"ChatService.{attribute}"
    patched = []
    for name, module in list(sys.modules.items()):
        if name.startswith("services.chat") and callable(getattr(module, "warsaw_today", None)):
            setattr(module, "warsaw_today", lambda: today)  # noqa: B010 - a module attribute mypy cannot see
            patched.append(name)
    if patched:
        return "warsaw_today replaced in " + ", ".join(sorted(patched))
    return "NOTHING (no seam found: relative dates resolve against the real date)"


class World:
    """The consent server, the notifier process, the Monday.com and Slack receivers, shared by all dialogues; each
    dialogue gets a chat app of its own on a fresh SQLite file."""

    def __init__(self, directory: Path, consent_addr: str, notifier: Any, monday: Any, slack: Any, today: dt.date):
        self.directory, self.consent_addr, self.notifier = directory, consent_addr, notifier
        self.monday, self.slack, self.today = monday, slack, today
        self.seam = ""
        self._count = 0

    @contextlib.contextmanager
    def chat_app(self) -> Iterator[Any]:
        from services.chat.app import build
        from services.chat.settings import Settings

        self._count += 1
        url = f"sqlite:///{self.directory / f'chat-{self._count}.db'}"
        app = build(Settings(url, consent_addr=self.consent_addr, notifier_addr=self.notifier.addr,
                             peer_timeout_s=5.0, scheduler_enabled=False, knowledge_reload_s=3600.0))
        try:
            app.migrate()
            self.seam = fix_today(app.chat, self.today)
            yield app
        finally:
            app.close()

    def board_ids(self) -> set[str]:
        return set(self.monday.responder.items)

    def slack_seen(self) -> int:
        return len(self.slack.requests)

    def settle(self, app: Any) -> str:
        """Waits (bounded) until chat has nothing left to hand over and the notifier nothing pending; a note when
        it did not settle in time."""
        from testsupport.waiting import poll

        leads = getattr(app, "leads", None)
        pending, retry = getattr(leads, "pending_count", None), getattr(leads, "retry_pending", None)

        def chat_done() -> bool:
            if pending is None:
                return True
            if pending() and retry is not None:
                retry()  # what a peer refused is retried as the periodic job would, without waiting for it
            return pending() == 0

        def notifier_done() -> bool:
            return self.notifier.stats().pending == 0

        if not poll(chat_done, SETTLE_TIMEOUT_S, interval=0.1):
            return f"chat still had leads to hand over after {SETTLE_TIMEOUT_S:.0f} s"
        if not poll(notifier_done, SETTLE_TIMEOUT_S, interval=0.05):
            return f"the notifier still had deliveries pending after {SETTLE_TIMEOUT_S:.0f} s"
        return ""

    def run(self, dialogue: Dialogue) -> Observed:
        observed = Observed()
        before_items, before_slack = self.board_ids(), self.slack_seen()
        try:
            with self.chat_app() as app:
                for number, conversation in enumerate(dialogue.conversations, 1):
                    self._converse(app, conversation, number, observed)
                    if note := self.settle(app):
                        observed.notes.append(note)
        except Exception as exc:  # noqa: BLE001 - one dialogue's failure must not stop the others
            observed.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            observed.transcript.append(traceback.format_exc(limit=6))
        board = self.monday.responder.items
        observed.items = [board[i] for i in sorted(set(board) - before_items, key=int)]
        observed.slack = [_slack_text(r) for r in list(self.slack.requests)[before_slack:]]
        return observed

    def _converse(self, app: Any, turns: tuple[str, ...], number: int, observed: Observed) -> None:
        session, pending = "", None
        for index, turn in enumerate(turns, 1):
            where = f"conversation {number} turn {index}"
            kwargs: dict[str, Any] = {}
            if turn in (AGREE, DECLINE):
                kind = getattr(pending, "kind", "")
                if kind not in ("processing", "marketing"):
                    observed.notes.append(f"{where}: {turn} with no consent prompt pending, ignored")
                    observed.transcript.append(f"  visitor> {turn}   (ignored: no prompt pending)")
                    continue
                kwargs[f"{kind}_consent"] = turn == AGREE
                text = ""
            else:
                text = turn
            observed.transcript.append(f"  visitor> {turn}")
            try:
                reply = app.chat.send_message(session, text, **kwargs)
            except Exception as exc:  # a turn the service refused: noted, the visitor goes on (a first one ends it)
                observed.notes.append(f"{where}: {type(exc).__name__}: {exc}")
                observed.transcript.append(f"  ERROR {type(exc).__name__}: {exc}")
                if not session:
                    raise
                continue
            session = reply.session_id or session
            pending = getattr(reply, "consent_prompt", None)
            kind = getattr(pending, "kind", "")
            if number == 1 and kind == "processing" and observed.processing_prompt_turn is None:
                observed.processing_prompt_turn = index
            lead = getattr(reply, "lead", None)
            observed.transcript.append(
                f"  bot[{reply.intent}{', prompt ' + kind if kind else ''}]> {reply.reply}"
                + (f"   (captured {list(lead.captured)}, missing {list(lead.missing)})" if lead is not None else "")
            )


def _slack_text(received: Any) -> str:
    try:
        return json.dumps(received.json(), ensure_ascii=False)
    except ValueError:
        return received.body.decode("utf-8", "replace")


@contextlib.contextmanager
def world(today: dt.date) -> Iterator[World]:
    """Starts the shared parts: receivers, the notifier process (fast retries), the consent server in process."""
    from testsupport.consent import running_consent
    from testsupport.notifier import NotifierProcess
    from testsupport.receivers import SLACK_BOT_TOKEN, HttpReceiver, MondayBoard, SlackWorkspace

    with tempfile.TemporaryDirectory(prefix="eval-dialogues-") as tmp, \
            HttpReceiver(respond=MondayBoard) as monday, HttpReceiver(respond=SlackWorkspace) as slack:
        directory = Path(tmp)
        (directory / "consent").mkdir()
        env = {
            "SLACK_API_URL": f"{slack.url}/api", "SLACK_BOT_TOKEN": SLACK_BOT_TOKEN, "SLACK_CHANNEL": "C0SALES",
            "MONDAY_API_URL": f"{monday.url}/v2",
        }
        (directory / "notifier").mkdir()
        notifier = NotifierProcess(directory / "notifier", env)
        try:
            notifier.start()
            with running_consent("sqlite", directory / "consent") as consent:
                yield World(directory, consent.address, notifier, monday, slack, today)
        finally:
            notifier.stop()


def run(dialogues: list[Dialogue], today: dt.date, transcripts: bool = False,
        out: Callable[[str], None] = print) -> Summary:
    verdicts = []
    seam = "(not reached)"
    started = time.monotonic()
    with world(today) as w:
        for dialogue in dialogues:
            observed = w.run(dialogue)
            seam = w.seam or seam
            verdict = judge(dialogue, observed)
            verdicts.append(verdict)
            if transcripts and verdict.difference:
                out(f"--- {dialogue.id}: {verdict.difference}")
                for line in observed.transcript:
                    out(line)
                for note in observed.notes:
                    out(f"  note: {note}")
                for item in observed.items:
                    out(f"  monday: {json.dumps(item, ensure_ascii=False)}")
                for message in observed.slack:
                    out(f"  slack: {message[:400]}")
    summary = summarise(verdicts)
    report(summary, dialogues, seam, out)
    out(f"  ({time.monotonic() - started:.0f} s)")
    return summary


def evaluate(only: Iterable[str] = (), transcripts: bool = False) -> Summary:
    """Runs the dialogues of the file (or those named) and prints the figures."""
    today, dialogues = load_dialogues()
    wanted = set(only)
    if wanted:
        unknown = wanted - {d.id for d in dialogues}
        if unknown:
            raise ValueError(f"no dialogue with id {sorted(unknown)}")
        dialogues = [d for d in dialogues if d.id in wanted]
    return run(dialogues, today, transcripts=transcripts)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialogue", action="append", default=[], help="run only this dialogue id (repeatable)")
    parser.add_argument("--transcripts", action="store_true", help="print the failing dialogues' transcripts")
    args = parser.parse_args(argv)
    evaluate(args.dialogue, args.transcripts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
