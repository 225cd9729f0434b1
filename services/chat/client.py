"""Command-line chat client: talk to the NovaHouse chatbot through the gateway's REST API.

Interactive:   python -m services.chat.client
Scripted:      python -m services.chat.client --message "Dzień dobry" --message "Ile kosztuje remont?"
Continue:      python -m services.chat.client --session <session id> --message "tak"
Transcript:    python -m services.chat.client --session <session id> --secret <secret> --transcript
A consent question is answered by typing "tak"/"yes" or "nie"/"no". Exit with Ctrl-D or /quit.
The first reply of a conversation carries its secret, printed on leaving with the session id: only the secret reads
the transcript (sent in the x-session-secret header, never in the URL).
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
    def __init__(self, base_url: str, session_id: str = "", secret: str = "", timeout_s: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.session_id = session_id
        self.secret = secret
        self.timeout_s = timeout_s
        self.http = requests.Session()

    def send(self, message: str) -> Reply:
        """One message; returns the JSON reply. Raises RuntimeError with the gateway's reason on a refusal."""
        payload = {"session_id": self.session_id, "message": message}
        body = _checked(self.http.post(self.base_url + "/api/chatbot/chat", json=payload, timeout=self.timeout_s))
        self.session_id = body.get("session_id") or self.session_id
        self.secret = body.get("session_secret") or self.secret
        return body

    def transcript(self) -> Reply:
        """The conversation so far (needs its secret). Raises RuntimeError with the gateway's reason on a refusal."""
        url = f"{self.base_url}/api/chatbot/conversations/{self.session_id}"
        return _checked(self.http.get(url, headers={"x-session-secret": self.secret}, timeout=self.timeout_s))


def _checked(response: requests.Response) -> Reply:
    try:
        body: Reply = response.json()
    except ValueError:
        body = {"message": response.text}
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {body.get('message') or body.get('error') or body}")
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


def render_transcript(body: Reply) -> str:
    names = {"user": "you", "bot": "bot"}
    return "\n".join(f"{names.get(m.get('role', ''), '?')}> {m.get('text', '')}" for m in body.get("messages") or [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.chat.client", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_url = os.environ.get("CHAT_GATEWAY_URL", "http://127.0.0.1:8080")
    parser.add_argument("--url", default=default_url, help="gateway URL")
    parser.add_argument("--session", default="", help="continue this conversation")
    parser.add_argument("--secret", default="", help="the conversation's secret (for --transcript)")
    parser.add_argument("--transcript", action="store_true", help="print the transcript after the messages")
    parser.add_argument("--message", action="append", default=[], help="send this message (repeatable); no prompt")
    parser.add_argument("--json", action="store_true", help="print the raw JSON replies")
    args = parser.parse_args(argv)

    client = ChatClient(args.url, args.session, args.secret)
    def raw(body: Reply) -> str:
        return json.dumps(body, ensure_ascii=False)

    show, show_transcript = (raw, raw) if args.json else (render, render_transcript)

    def exchange(text: str) -> bool:
        try:
            print(show(client.send(text)), flush=True)
            return True
        except (RuntimeError, requests.RequestException) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return False

    def print_transcript() -> bool:
        try:
            print(show_transcript(client.transcript()), flush=True)
            return True
        except (RuntimeError, requests.RequestException) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return False

    def leave() -> None:
        if client.secret and not args.secret:
            print(f"secret: {client.secret}", file=sys.stderr)  # shown once: the client keeps it nowhere
        print(f"session: {client.session_id}", file=sys.stderr)

    if args.message or args.transcript:
        ok = all([exchange(text) for text in args.message])  # noqa: C419 - a list: every message is sent, even after a failure
        if args.transcript:
            ok = print_transcript() and ok
        leave()
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
    print()
    leave()
    return 0


if __name__ == "__main__":
    sys.exit(main())
