"""A socketserver on 127.0.0.1 served from a daemon thread while a `with` block runs: the fake Slack, Monday.com
and SMTP receivers."""
from __future__ import annotations

import socketserver
import threading
from typing import Self


class ServedInBackground:
    """Subclasses build their socketserver, then call _serve(server, scheme); url is where clients reach it."""

    server: socketserver.TCPServer
    port: int
    url: str

    def _serve(self, server: socketserver.TCPServer, scheme: str) -> None:
        self.server = server
        self.port = server.server_address[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
