"""GET/HEAD /r/{code}: the hot path. A raw ASGI app, served ahead of Litestar by `RedirectFront`
(and mounted in Litestar at /r as well, for `create_app()` used on its own).

A code resolves (core/tracking/code_cache.py) to the destination stored at send time, so there
is no open redirect; a code the shortener says is not one of its own is a 404 without a lookup.
The click goes to the click writer (core/tracking/click_writer.py), which stores it within
milliseconds, and on shutdown. docs/benchmarks.md has the figures behind the choices made here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from core.tracking.click_writer import ClickWriter
from core.tracking.clicks import ClickRecord
from core.tracking.clients import Network, client_ip
from core.tracking.code_cache import CodeCache

NOT_FOUND_PAGE = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Link not found</title>"
    b"<body style='font-family:sans-serif;margin:3em'><h1>Link not found</h1>"
    b"<p>This link does not exist or was mistyped.</p></body></html>"
)
_NOT_FOUND_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"content-type", b"text/html; charset=utf-8"),
    (b"content-length", str(len(NOT_FOUND_PAGE)).encode()),
]
# Headers by which a browser or an app says it fetches ahead of a person (a prefetch, a preview):
# the click record keeps the first one's value for the bot filters (plugins/botfilters.py).
PURPOSE_HEADERS = frozenset((b"purpose", b"sec-purpose", b"x-moz", b"x-purpose"))
# Characters a URL may carry as they are (RFC 3986 reserved and unreserved, and `%` of escapes).
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]_~"


def location_header(destination: str) -> bytes:
    """`destination` as an ASCII Location value: an international host in IDNA, anything else
    outside the URL alphabet (non-ASCII, spaces, control characters) percent-encoded."""
    if destination.isascii() and destination.isprintable() and " " not in destination:
        return destination.encode()
    parts = urlsplit(destination)
    netloc = parts.netloc
    if not netloc.isascii():
        userinfo, at, hostport = netloc.rpartition("@")
        host, colon, port = hostport.partition(":")
        netloc = f"{quote(userinfo, safe=_URL_SAFE)}{at}{host.encode('idna').decode()}{colon}{port}"
    encoded = parts._replace(
        netloc=netloc,
        path=quote(parts.path, safe=_URL_SAFE),
        query=quote(parts.query, safe=_URL_SAFE),
        fragment=quote(parts.fragment, safe=_URL_SAFE),
    )
    return urlunsplit(encoded).encode()


class RedirectApp:
    """The redirect itself. `is_code` is the shortener's (`Shortener.is_code`): what it says is
    not one of its codes is answered 404 without a database read, whatever is guessed at /r."""

    def __init__(
        self,
        cache: CodeCache,
        writer: ClickWriter,
        trusted_proxies: Sequence[Network],
        is_code: Callable[[str], bool],
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.trusted_proxies = trusted_proxies
        self.is_code = is_code

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1000})
            return
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            await send(
                {
                    "type": "http.response.start",
                    "status": 405,
                    "headers": [(b"allow", b"GET, HEAD"), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        code = scope["path"].strip("/")
        entry = self.cache.lookup(code)
        if entry is None and self.is_code(code):
            entry = await self.cache.fetch(code)
        if entry is None:
            # uvicorn leaves the body out of a HEAD answer and keeps its length.
            await send({"type": "http.response.start", "status": 404, "headers": _NOT_FOUND_HEADERS})
            await send({"type": "http.response.body", "body": NOT_FOUND_PAGE})
            return
        agent = referer = forwarded = purpose = None
        for name, value in scope["headers"]:  # names are lower case in ASGI
            if name == b"user-agent":
                agent = value.decode("latin-1")
            elif name == b"referer":
                referer = value.decode("latin-1")
            elif name == b"x-forwarded-for":  # several headers are one list, in order
                forwarded = value.decode("latin-1") if forwarded is None else f"{forwarded},{value.decode('latin-1')}"
            elif name in PURPOSE_HEADERS and purpose is None:
                purpose = value.decode("latin-1")
        client = scope.get("client")
        ip = client_ip(client[0] if client else None, forwarded, self.trusted_proxies)
        record = ClickRecord(entry[1], datetime.now(UTC), ip, agent, referer, method == "HEAD", purpose=purpose)
        if not self.writer.offer(record):
            await self.writer.put(record)
        await send(
            {
                "type": "http.response.start",
                "status": 302,
                "headers": [(b"location", entry[0]), (b"cache-control", b"no-store"), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})


class RedirectFront:
    """The ASGI app uvicorn serves: `/r/...` goes straight to the redirect, the rest to Litestar.

    The redirect is also mounted in Litestar at /r (for create_app() used on its own), but on
    the hot path Litestar's exception middleware, router and scope state cost about a third of
    the time of a whole redirect (docs/benchmarks.md).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.redirect: RedirectApp = app.state.redirect_app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/r/"):
            scope["path"] = scope["path"][2:]
            await self.redirect(scope, receive, send)
        else:
            await self.app(scope, receive, send)
