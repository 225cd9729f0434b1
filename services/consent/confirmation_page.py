"""The pages behind the link of a verification email: one button (opening the link changes and reveals nothing),
and the result the button's POST shows."""
from __future__ import annotations

import html
import json
from urllib.parse import quote

from services.consent.verification import CONFIRM_PATH, ERASE, EXPORT, STATUS, Done

CONTENT_TYPE = "text/html; charset=utf-8"
JSON_TYPE = "application/json"

_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="robots" content="noindex"><meta name="referrer" content="no-referrer">
<title>{title} - NovaHouse</title></head>
<body>
<h1>{title}</h1>
{content}
</body>
</html>
"""

_ASK = {
    ERASE: ("Erase your data", "Press the button to withdraw every consent given with this address and erase the "
            "personal details NovaHouse holds about you (conversations, contact details). This cannot be undone.",
            "Erase my data"),
    STATUS: ("Your consent status", "Press the button to see which consents NovaHouse holds for this address.",
             "Show my consent status"),
    EXPORT: ("Your data", "Press the button to download, as one JSON document, everything NovaHouse holds about "
             "you: conversations, leads, consent history and the messages sent about you.", "Download my data"),
}


def _page(title: str, content: str) -> bytes:
    return _PAGE.format(title=html.escape(title), content=content).encode()


def render_confirmation(token: str, action: str) -> bytes:
    """The page for a token already checked by VerifiedRequests.check."""
    title, text, button = _ASK[action]
    target = html.escape(f"{CONFIRM_PATH}?token={quote(token, safe='')}", quote=True)
    form = (f'<p>{html.escape(text)}</p>\n<form method="post" action="{target}">\n'
            f'<input type="hidden" name="confirm" value="yes">\n<button type="submit">{html.escape(button)}</button>\n'
            "</form>")
    return _page(title, form)


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def render_done(done: Done) -> tuple[str, bytes]:
    """(content type, body) of the answer to the page's POST: the export's JSON document, else a page."""
    if done.action == EXPORT:
        return JSON_TYPE, json.dumps(done.document, ensure_ascii=False, indent=2).encode()
    return CONTENT_TYPE, _result_page(done)


def _result_page(done: Done) -> bytes:
    status = done.status
    if done.action == ERASE:
        return _page("Your data is being erased", (
            "<p>Every consent given with this address is withdrawn, and the erasure of your personal details has "
            "started; it completes within minutes. You will receive no more emails from NovaHouse.</p>"
        ))
    if not status.last_action:
        return _page("Your consent status", (
            f"<p>Nothing is on record for {html.escape(status.email)}.</p>"
        ))
    when = status.last_action_at.isoformat(timespec="seconds") if status.last_action_at else ""
    rows = (
        f"<tr><th>Address</th><td>{html.escape(status.email)}</td></tr>\n"
        f"<tr><th>Processing of your data</th><td>{_yes_no(status.processing_consent)}</td></tr>\n"
        f"<tr><th>Marketing emails</th><td>{_yes_no(status.marketing_consent)}</td></tr>\n"
        f"<tr><th>Last change</th><td>{html.escape(status.last_action)} at {html.escape(when)}</td></tr>"
    )
    return _page("Your consent status", f"<table>\n{rows}\n</table>")
