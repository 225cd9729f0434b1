"""Command-line chat client: talk to the NovaHouse chatbot through the gateway's REST API.

Interactive:   python -m services.chat.client
Scripted:      python -m services.chat.client --message "Dzień dobry" --message "Ile kosztuje remont?"
Continue:      python -m services.chat.client --session <session id> --message "tak"
A consent question is answered by typing "tak"/"yes" or "nie"/"no". Exit with Ctrl-D or /quit.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import requests

Reply = dict[str, Any]  # a reply of the gateway's JSON API; Any: parsed JSON, read with .get() and defaults


class ChatClient:
    def __init__(self, base_url: str, session_id: str = "", timeout_s: float = 30.0):
        self.url = base_url.rstrip("/") + "/api/chatbot/chat"
        self.session_id = session_id
        self.timeout_s = timeout_s
        self.http = requests.Session()

    def send(self, message: str) -> Reply:
        """One message; returns the JSON reply. Raises RuntimeError with the gateway's reason on a refusal."""
        payload = {"session_id": self.session_id, "message": message}
        response = self.http.post(self.url, json=payload, timeout=self.timeout_s)
        try:
            body: Reply = response.json()
        except ValueError:
            body = {"message": response.text}
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {body.get('message') or body.get('error') or body}")
        self.session_id = body.get("session_id") or body.get("sessionId") or self.session_id
        return body


def render(body: Reply) -> str:
    lead = body.get("lead") or {}
    lines = [f"bot> {body.get('reply', '')}"]
    if lead.get("lead_id"):
        lines.append(f"     (lead stored, score {lead.get('score', 0)})")
    elif lead.get("missing") is not None and lead.get("captured"):
        missing = ", ".join(lead.get("missing") or []) or "-"
        lines.append(f"     (captured: {', '.join(lead['captured'])}; missing: {missing})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.chat.client", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_url = os.environ.get("CHAT_GATEWAY_URL", "http://127.0.0.1:8080")
    parser.add_argument("--url", default=default_url, help="gateway URL")
    parser.add_argument("--session", default="", help="continue this conversation")
    parser.add_argument("--message", action="append", default=[], help="send this message (repeatable); no prompt")
    parser.add_argument("--json", action="store_true", help="print the raw JSON replies")
    args = parser.parse_args(argv)

    client = ChatClient(args.url, args.session)
    show = (lambda body: json.dumps(body, ensure_ascii=False)) if args.json else render

    def exchange(text: str) -> bool:
        try:
            print(show(client.send(text)), flush=True)
            return True
        except (RuntimeError, requests.RequestException) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return False

    if args.message:
        ok = all([exchange(text) for text in args.message])  # noqa: C419 - a list: every message is sent, even after a failure
        print(f"session: {client.session_id}", file=sys.stderr)
        return 0 if ok else 1

    print(f"NovaHouse chat at {args.url} (Ctrl-D or /quit to leave)")
    while True:
        try:
            text = input("you> ")
        except EOFError:
            break
        if text.strip() == "/quit":
            break
        if text.strip():
            exchange(text)
    print(f"\nsession: {client.session_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
