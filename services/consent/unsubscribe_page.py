"""The page behind the visible unsubscribe link of a marketing email: one button that sends the RFC 8058 POST.

Opening the link changes nothing (mail scanners open links by themselves); the button posts the form body
"List-Unsubscribe=One-Click" to the same URL, which is what a mail client's own unsubscribe button does.
"""
from __future__ import annotations

import html
from urllib.parse import quote

from services.consent.consent import ONE_CLICK_PATH

CONTENT_TYPE = "text/html; charset=utf-8"

_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="robots" content="noindex"><title>Unsubscribe - NovaHouse</title></head>
<body>
<h1>Unsubscribe from NovaHouse marketing emails</h1>
<p>You have the right to object to our marketing messages at any time. Press the button and you will receive no
more of them; nothing else is needed.</p>
<form method="post" action="{action}">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button>
</form>
</body>
</html>
"""


def render(token: str) -> bytes:
    """The page for a token already checked by ConsentService.check_unsubscribe_token."""
    action = f"{ONE_CLICK_PATH}?token={quote(token, safe='')}"
    return _PAGE.format(action=html.escape(action, quote=True)).encode()
