"""A real browser for the widget's tests: Debian's headless Chromium (/usr/bin/chromium, installed by `make
browser`) driven by Playwright, which is never allowed to download a browser of its own; a host page served from
another origin; and axe-core (tests/gateway/node_modules, from its lock file) run inside a page."""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Page, sync_playwright

from testsupport import contracts
from testsupport.serving import ServedInBackground

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
AXE = Path(__file__).resolve().parents[1] / "tests" / "gateway" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "data" / "screenshots"


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium; as root it needs --no-sandbox."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"no browser at {CHROMIUM}: `make browser` installs Debian's chromium")
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


class Console:
    """Everything a page wrote to its console and every uncaught error, for assertions on CSP violations."""

    def __init__(self, page: Page):
        self.lines: list[str] = []
        page.on("console", lambda message: self.lines.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.lines.append(f"pageerror: {error}"))

    def csp_violations(self) -> list[str]:
        return [line for line in self.lines if "Content Security Policy" in line]


def screenshot(page: Page, name: str) -> Path:
    """A PNG under data/screenshots/ (not versioned) for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def axe_violations(page: Page, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict]:
    """axe-core's WCAG 2.x A/AA violations of the page as it is now (shadow roots included), of the given impacts.
    The library is evaluated through the DevTools protocol, which the page's CSP does not govern."""
    if not AXE.exists():
        raise RuntimeError(f"no axe-core at {AXE}: `make browser` installs it (npm ci in tests/gateway)")
    page.evaluate(AXE.read_text() + "\n;0")
    result = page.evaluate(
        "async () => (await axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})).violations"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target)}))")
    return [violation for violation in result if violation["impact"] in impacts]


class HostPage(ServedInBackground):
    """A third-party site on its own origin (http://127.0.0.1:<port>): one page embedding the widget with its one
    script tag from the gateway at gateway_url."""

    def __init__(self, port: int, gateway_url: str, lang: str = "auto"):
        tag = f'<script src="{gateway_url}/widget/v1/widget.js" data-lang={json.dumps(lang)} async></script>'
        body = ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>A partner's site</title></head>"
                f"<body><main><h1>A partner's renovation blog</h1><p>Ask NovaHouse in the chat.</p></main>{tag}"
                "</body></html>").encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._serve(ThreadingHTTPServer(("127.0.0.1", port), Handler), "http")


def record_rest_calls(page: Page) -> None:
    """Every REST call of the page that a service answered (2xx) counts as a call of its RPC for the contract coverage
    check (testsupport/contracts.py), as Gateway.rest() counts a test's own calls."""
    def seen(response) -> None:
        rpc = contracts.rpc_for_rest(response.request.method, urlsplit(response.url).path)
        if rpc and 200 <= response.status < 300:
            contracts.RECORDED.add(rpc)

    page.on("response", seen)
