"""The files Envoy serves on the public listener (gateway/site/): the chat widget, the demo page and the privacy
notice, and the sales inbox's two pages (/inbox/, which Envoy's JWT filter keeps to signed-in staff, and the public
/inbox/login) with their script and style sheet, as direct responses built into the rendered config.

Why direct responses and not a static file service: five small files that change only with a release need no
process, port, health check or image of their own; the config is rendered from the files at start, so the bytes
and the hashed names come from one read and one Envoy never serves a mix of two releases.

Names: the widget and the pages' style sheet are served under a content hash (`widget.<hash>.js`, cached a year,
immutable); the stable `/widget/v1/widget.js` that sites embed is a few lines (cached 5 minutes) that load the
hashed file of the same release, and the pages (never cached without revalidation) name the hashed style sheet.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SITE = Path(__file__).resolve().parent / "site"
WIDGET_PREFIX = "/widget/v1/"
LOADER_PATH = WIDGET_PREFIX + "widget.js"
MAX_FILE_BYTES = 256 * 1024  # Envoy's max_direct_response_body_size_bytes on the public route config

# Content-Security-Policy of each kind of response. The pages allow their own hashed style sheet and, on the demo
# page, the widget's script and its calls to this origin; the widget's styles are a constructed style sheet in its
# shadow root, which needs no 'unsafe-inline'. Scripts and style sheets themselves get the strictest policy.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
NOTICE_CSP = "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
ASSET_CSP = "default-src 'none'; frame-ancestors 'none'"

IMMUTABLE = "public, max-age=31536000, immutable"
LOADER_CACHE = "public, max-age=300"
PAGE_CACHE = "no-cache"
STAFF_PAGE_CACHE = "no-store"  # a staff page is never kept by a shared cache or the browser's history
INBOX_PATH = "/inbox/"
LOGIN_PATH = "/inbox/login"


@dataclass(frozen=True)
class Asset:
    """A file served under its content hash."""
    source: str   # name in gateway/site/ and the stable name pages refer to ("/site.css")
    path: str     # the hashed URL path
    body: str
    content_type: str


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _hashed(source: str, url_dir: str, content_type: str) -> Asset:
    body = (SITE / source).read_text(encoding="utf-8")
    stem, _, suffix = source.rpartition(".")
    return Asset(source, f"{url_dir}{stem}.{_digest(body)}.{suffix}", body, content_type)


def loader(widget: Asset) -> str:
    """The stable script sites embed: it adds the hashed widget of this release, with the embedding tag's data-*
    settings. During a rolling update its request may reach a replica of the previous release, which does not have
    the new name: one retry a second later goes to another."""
    return (
        "/* NovaHouse chat widget loader: loads the widget of the current release. */\n"
        "(function(){var s=document.currentScript;if(!s)return;var tries=0;\n"
        "function load(){var w=document.createElement('script');"
        f"w.src=new URL({widget.path!r},s.src).href;w.async=true;"
        "for(var k in s.dataset)w.dataset[k]=s.dataset[k];"
        "w.onerror=function(){w.remove();if(++tries<2)setTimeout(load,1000);};"
        "document.head.appendChild(w);}\nload();})();\n"
    )


def _route(path: str, body: str, content_type: str, cache: str, csp: str, status: int = 200) -> dict[str, Any]:
    if len(body.encode()) > MAX_FILE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_FILE_BYTES} bytes, the gateway's direct response limit")
    headers = {"content-type": content_type, "cache-control": cache, "content-security-policy": csp,
               "x-content-type-options": "nosniff", "referrer-policy": "strict-origin-when-cross-origin"}
    action: dict[str, Any] = {"status": status}
    if body:
        action["body"] = {"inline_string": body}
    return {
        "match": {"path": path},
        "direct_response": action,
        "response_headers_to_add": [{"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
                                    for k, v in headers.items()],
    }


def _page(source: str, assets: list[Asset]) -> str:
    """The page with each stable asset name replaced by its hashed path."""
    text = (SITE / source).read_text(encoding="utf-8")
    for asset in assets:
        text = text.replace(f'"/{asset.source}"', f'"{asset.path}"')
    return text


def assets() -> tuple[Asset, Asset]:
    """(the widget, the pages' style sheet), each under its content hash."""
    return (_hashed("widget.js", WIDGET_PREFIX, "application/javascript; charset=utf-8"),
            _hashed("site.css", "/", "text/css; charset=utf-8"))


def inbox_assets() -> tuple[Asset, Asset]:
    """(the inbox's script, its style sheet): public like the widget (no data in them), so the login page can
    load them too."""
    return (_hashed("inbox.js", "/", "application/javascript; charset=utf-8"),
            _hashed("inbox.css", "/", "text/css; charset=utf-8"))


def routes() -> list[dict[str, Any]]:
    """Envoy routes (direct responses) for every visitor-facing file."""
    widget, css = assets()
    html = "text/html; charset=utf-8"
    return [
        _route("/", _page("index.html", [css]), html, PAGE_CACHE, PAGE_CSP),
        _route("/privacy", _page("privacy.html", [css]), html, PAGE_CACHE, NOTICE_CSP),
        _route(LOADER_PATH, loader(widget), "application/javascript; charset=utf-8", LOADER_CACHE, ASSET_CSP),
        _route(widget.path, widget.body, widget.content_type, IMMUTABLE, ASSET_CSP),
        _route(css.path, css.body, css.content_type, IMMUTABLE, ASSET_CSP),
        # Browsers ask for it on every page; an empty answer instead of a 404 in every visitor's console.
        _route("/favicon.ico", "", "image/x-icon", LOADER_CACHE, ASSET_CSP, status=204),
        *inbox_routes(),
    ]


def inbox_routes() -> list[dict[str, Any]]:
    """The inbox's pages and files; which of them need a staff token is the JWT filter's rules
    (gateway/envoy.yaml.tmpl), not these routes."""
    script, css = inbox_assets()
    html = "text/html; charset=utf-8"
    return [
        _route(INBOX_PATH, _page("inbox.html", [script, css]), html, STAFF_PAGE_CACHE, PAGE_CSP),
        _route(LOGIN_PATH, _page("login.html", [script, css]), html, STAFF_PAGE_CACHE, PAGE_CSP),
        {"match": {"path": INBOX_PATH.rstrip("/")}, "redirect": {"path_redirect": INBOX_PATH}},
        _route(script.path, script.body, script.content_type, IMMUTABLE, ASSET_CSP),
        _route(css.path, css.body, css.content_type, IMMUTABLE, ASSET_CSP),
    ]


ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


def allowed_origins(value: str) -> list[str]:
    """ALLOWED_ORIGINS: a comma list of exact site origins (scheme://host[:port]); no wildcard, no path."""
    origins = [item.strip().rstrip("/") for item in value.split(",") if item.strip()]
    for origin in origins:
        if not ORIGIN.match(origin):
            raise ValueError(f"ALLOWED_ORIGINS: {origin!r} is not an origin like https://www.example.pl")
    if not origins:
        raise ValueError("ALLOWED_ORIGINS names no origin")
    return origins
