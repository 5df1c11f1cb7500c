"""GET/HEAD /r/{code}: the hot path. A raw ASGI app, served ahead of Litestar by `RedirectFront`
(and mounted in Litestar at /r as well, for `create_app()` used on its own).

A code resolves (cached) to the destination stored at send time, so there is no open redirect.
The click goes into a bounded in-process queue that a background task writes in batches every
few milliseconds, and that is drained on shutdown: no click is lost on SIGTERM (uvicorn finishes
the requests in flight, then the lifespan shutdown closes the writer). docs/benchmarks.md has the
figures behind the choices made here.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import anyio.to_thread
from sqlalchemy.engine import Engine

from core.clicks import ClickRecord, CodeTarget, client_ip, resolve_codes, store_clicks
from core.db import is_sqlite
from core.log import get_logger
from plugins.shortener import is_wellformed_code

log = get_logger("textpulse.redirect")

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


# A cached code: (Location header, *CodeTarget fields). A plain tuple of strings, ints and bytes,
# which the garbage collector stops tracking: a full cache adds nothing to a full collection.
Entry = tuple[Any, ...]


class CodeCache:
    """An LRU of resolved codes; a code's target never changes, so entries never go stale.
    Unknown codes are not remembered (a code may be created after someone guessed it).

    SQLite: a miss is read at once on the event loop, on one kept connection in autocommit. A WAL
    read by primary key takes a few microseconds; a hop to a worker thread cost ten times that,
    waiting for the GIL behind the busy loop.
    Other databases: misses are looked up in a thread by one task; the first miss is queried at
    once, and those that arrive meanwhile go together into the next query (`batch` codes at most),
    so a burst of first clicks costs a few round trips instead of one each.
    """

    def __init__(self, engine: Engine, size: int = 100_000, batch: int = 500) -> None:
        self.engine = engine
        self.inline = is_sqlite(engine)
        self.size = size
        self.batch = batch
        self._items: OrderedDict[str, Entry] = OrderedDict()
        self._connection: Any = None  # SQLite: the kept connection
        self._waiting: dict[str, list[asyncio.Future[Entry | None]]] = {}  # queued or being looked up
        self._queued: list[str] = []
        self._lookup: asyncio.Task[None] | None = None

    async def get(self, code: str) -> Entry | None:
        entry = self._items.get(code)
        if entry is not None:
            self._items.move_to_end(code)
            return entry
        if self.inline:
            return self._remember(code, self._read(code))
        # One future per request: a client that hangs up cancels only its own.
        future: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
        waiters = self._waiting.get(code)
        if waiters is None:
            self._waiting[code] = [future]
            self._queued.append(code)
            if self._lookup is None:
                self._lookup = asyncio.get_running_loop().create_task(self._look_up(), name="code-lookup")
        else:
            waiters.append(future)
        return await future

    def _read(self, code: str) -> CodeTarget | None:
        if self._connection is None:
            self._connection = self.engine.raw_connection()
            # Codes are read at random across the whole table: map the file rather than copy
            # pages through read() calls, and keep more of them (this connection only).
            self._connection.driver_connection.execute("PRAGMA mmap_size = 268435456")
            self._connection.driver_connection.execute("PRAGMA cache_size = -65536")
        try:
            return resolve_codes(self.engine, [code], sqlite_connection=self._connection).get(code)
        except Exception:
            connection, self._connection = self._connection, None
            connection.invalidate()  # a fresh connection for the next miss
            raise

    def _remember(self, code: str, target: CodeTarget | None) -> Entry | None:
        if target is None:
            return None
        entry = self._items[code] = (location_header(target.destination), *target)
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return entry

    async def _look_up(self) -> None:
        try:
            while self._queued:
                batch = self._queued[: self.batch]
                del self._queued[: self.batch]
                try:
                    found = await anyio.to_thread.run_sync(resolve_codes, self.engine, batch)
                except Exception as exc:  # these requests answer 500; the next miss tries again
                    log.warning("code lookup failed", error=str(exc), codes=len(batch))
                    for code in batch:
                        for future in self._waiting.pop(code):
                            if not future.done():
                                future.set_exception(exc)
                    continue
                for code in batch:
                    entry = self._remember(code, found.get(code))
                    for future in self._waiting.pop(code):
                        if not future.done():
                            future.set_result(entry)
        finally:
            self._lookup = None


class ClickWriter:
    """Batches click rows: flushed every `interval` seconds or `batch` rows, and on close.

    The queue is bounded: when the database falls behind by `capacity` clicks, redirects wait
    for room (back-pressure) rather than drop clicks or grow memory without limit.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        on_stored: Any = None,
        interval: float = 0.005,
        batch: int = 1000,
        capacity: int = 50_000,
    ) -> None:
        self.engine = engine
        self.on_stored = on_stored
        self.interval = interval
        self.batch = batch
        self.queue: asyncio.Queue[ClickRecord | None] = asyncio.Queue(maxsize=capacity)
        self._task: asyncio.Task[None] | None = None
        self.written = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="click-writer")

    async def put(self, record: ClickRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            await self.queue.put(record)  # back-pressure instead of losing clicks

    async def _run(self) -> None:
        closing = False
        while not closing:
            first = await self.queue.get()
            if first is None:
                closing = True
                first_batch: list[ClickRecord] = []
            else:
                await asyncio.sleep(self.interval)
                first_batch = [first]
            while True:  # drain what is queued, in batches
                records = first_batch
                first_batch = []
                while len(records) < self.batch and not self.queue.empty():
                    item = self.queue.get_nowait()
                    if item is None:
                        closing = True
                    else:
                        records.append(item)
                if records:
                    await self._flush(records)
                if self.queue.empty() or not closing:
                    break

    async def _flush(self, records: list[ClickRecord]) -> None:
        for attempt in range(10):
            try:
                rows = await anyio.to_thread.run_sync(store_clicks, self.engine, records)
                break
            except Exception as exc:  # a locked or restarting database: retry, never drop
                log.warning("click write failed, retrying", error=str(exc), attempt=attempt, clicks=len(records))
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
        else:
            log.error("clicks could not be written", clicks=len(records))
            return
        self.written += len(rows)
        if self.on_stored:
            self.on_stored(rows)

    async def close(self) -> None:
        """Write every queued click, then stop."""
        if self._task is None:
            return
        await self.queue.put(None)
        await self._task
        self._task = None


class RedirectApp:
    def __init__(self, cache: CodeCache, writer: ClickWriter, trusted_proxies: tuple[Any, ...]) -> None:
        self.cache = cache
        self.writer = writer
        self.trusted_proxies = trusted_proxies

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
        entry = await self.cache.get(code) if is_wellformed_code(code) else None
        if entry is None:
            # uvicorn leaves the body out of a HEAD answer and keeps its length.
            await send({"type": "http.response.start", "status": 404, "headers": _NOT_FOUND_HEADERS})
            await send({"type": "http.response.body", "body": NOT_FOUND_PAGE})
            return
        agent = referer = forwarded = None
        for name, value in scope["headers"]:  # names are lower case in ASGI
            if name == b"user-agent":
                agent = value.decode("latin-1")
            elif name == b"referer":
                referer = value.decode("latin-1")
            elif name == b"x-forwarded-for":  # several headers are one list, in order
                forwarded = value.decode("latin-1") if forwarded is None else f"{forwarded},{value.decode('latin-1')}"
        client = scope.get("client")
        ip = client_ip(client[0] if client else None, forwarded, self.trusted_proxies)
        await self.writer.put(
            ClickRecord(CodeTarget._make(entry[1:]), datetime.now(UTC), ip, agent, referer, method == "HEAD")
        )
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
