"""A real SMTP server on 127.0.0.1 for tests: records every message and fails on command.

A small socketserver implementation of the commands smtplib uses (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT),
so it needs neither the deprecated `smtpd` module nor a third-party package.
"""
from __future__ import annotations

import email
import email.policy
import socketserver
import threading
from dataclasses import dataclass

from testsupport.serving import ServedInBackground


@dataclass
class ReceivedEmail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None, "the message has no text/plain part"
        return str(part.get_content())


class SmtpReceiver(ServedInBackground):
    """fail(451, times=3) answers three messages with a temporary error, fail(550) refuses every recipient."""

    def __init__(self):
        self.messages: list[ReceivedEmail] = []
        self.attempts = 0  # every message offered (MAIL FROM), delivered or not
        self._failures: list[list] = []  # [code, times or None]
        self._lock = threading.Lock()
        receiver = self

        class Handler(socketserver.StreamRequestHandler):
            timeout = 30

            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")
                self.wfile.flush()

            def handle(self) -> None:
                self.reply("220 127.0.0.1 test SMTP ready")
                mail_from, failure = "", None
                rcpts: list[str] = []
                while True:
                    raw = self.rfile.readline(65536)
                    if not raw:
                        return
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    verb = line[:4].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250-127.0.0.1" if verb == "EHLO" else "250 127.0.0.1")
                        if verb == "EHLO":
                            self.reply("250-8BITMIME")
                            self.reply("250 SMTPUTF8")
                    elif verb == "MAIL":
                        mail_from, rcpts, failure = line.split(":", 1)[1].strip(), [], receiver._next_failure()
                        self.reply("250 OK")
                    elif verb == "RCPT":
                        if failure and failure >= 500:
                            self.reply(f"{failure} recipient refused")
                        else:
                            rcpts.append(line.split(":", 1)[1].strip().strip("<>"))
                            self.reply("250 OK")
                    elif verb == "DATA":
                        if not rcpts:
                            self.reply("554 no valid recipients")
                            continue
                        self.reply("354 end with <CRLF>.<CRLF>")
                        data = self._read_data()
                        if data is None:
                            return  # the client died before the final ".": a real server discards the message
                        if failure:
                            self.reply(f"{failure} try again later")
                        else:
                            receiver._store(ReceivedEmail(mail_from, rcpts, data))
                            self.reply("250 OK queued")
                    elif verb == "RSET":
                        mail_from, rcpts, failure = "", [], None
                        self.reply("250 OK")
                    elif verb == "NOOP":
                        self.reply("250 OK")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("502 command not implemented")

            def _read_data(self) -> bytes | None:
                lines = []
                while True:
                    raw = self.rfile.readline(1 << 20)
                    if not raw:
                        return None
                    if raw in (b".\r\n", b".\n"):
                        break
                    lines.append(raw[1:] if raw.startswith(b"..") else raw)
                return b"".join(lines).replace(b"\r\n", b"\n")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._serve(Server(("127.0.0.1", 0), Handler), "smtp")

    def fail(self, code: int = 451, times: int | None = None) -> None:
        with self._lock:
            self._failures.append([code, times])

    def recover(self) -> None:
        with self._lock:
            self._failures.clear()

    def to(self, address: str) -> list[ReceivedEmail]:
        with self._lock:
            return [m for m in self.messages if address in m.rcpt_tos]

    def _next_failure(self) -> int | None:
        with self._lock:
            self.attempts += 1
            while self._failures:
                code, times = self._failures[0]
                if times is None:
                    return code
                if times <= 1:
                    self._failures.pop(0)
                else:
                    self._failures[0][1] = times - 1
                if times >= 1:
                    return code
            return None

    def _store(self, message: ReceivedEmail) -> None:
        with self._lock:
            self.messages.append(message)
