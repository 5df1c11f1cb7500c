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
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import anyio.to_thread
from sqlalchemy.engine import Engine

from core.db import is_sqlite
from core.log import get_logger
from core.tracking.clicks import (
    ClickRecord,
    CodeTarget,
    click_rows,
    client_ip,
    recent_codes,
    resolve_codes,
    store_clicks,
)
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


# A cached code: (Location header, target). Tuples of strings, ints and bytes, which the garbage
# collector stops tracking: a full cache adds next to nothing to a full collection.
Entry = tuple[bytes, CodeTarget]

# Codes of messages sent up to this long before the previous fetch are asked for again: a batch's
# sent_at is stamped once its transaction has begun, a moment before it commits (core/sending.py).
# A code committed later still than that is read at its first click.
REFRESH_OVERLAP = timedelta(seconds=5)


class CodeCache:
    """An LRU of resolved codes; a code's target never changes, so entries never go stale.
    Unknown codes are not remembered (a code may be created after someone guessed it).

    Ahead of clicks: at start the codes of messages sent in the last `preload_hours` are loaded
    (newest first, `size` at most), then every `refresh_seconds` those of messages sent since,
    so that a click, which mostly comes minutes after its message, finds its code in memory.

    A code that is not in memory (sent long ago, or after the last fetch) is read at its click.
    SQLite: at once on the event loop, on one kept connection in autocommit: a WAL read by
    primary key takes microseconds, where a hop to a worker thread cost ten times that, waiting
    for the GIL behind the busy loop. Other databases: in a thread, by one task; the first miss is
    queried at once, and those that arrive meanwhile go together into the next query (`batch`
    codes at most), so a burst of first clicks costs a few round trips instead of one each.
    """

    def __init__(
        self,
        engine: Engine,
        size: int = 200_000,
        batch: int = 500,
        *,
        preload_hours: float = 0,
        refresh_seconds: float = 0,
    ) -> None:
        self.engine = engine
        self.inline = is_sqlite(engine)
        self.size = size
        self.batch = batch
        self.preload_hours = preload_hours
        self.refresh_seconds = refresh_seconds
        self.preloaded = False  # the load at start is over (or there is none)
        self.learnt = 0  # codes loaded ahead of their first click
        self.misses = 0  # codes read at a click
        self._items: OrderedDict[str, Entry] = OrderedDict()
        self._locations: dict[str, bytes] = {}  # destination -> Location header, shared by its codes
        self._connection: Any = None  # SQLite: the kept connection
        self._waiting: dict[str, list[asyncio.Future[Entry | None]]] = {}  # queued or being looked up
        self._queued: list[str] = []
        self._lookup: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def lookup(self, code: str) -> Entry | None:
        """The cached entry of `code`, or None when it is not in memory."""
        entry = self._items.get(code)
        if entry is not None:
            self._items.move_to_end(code)
        return entry

    async def get(self, code: str) -> Entry | None:
        entry = self.lookup(code)
        return entry if entry is not None else await self.fetch(code)

    async def fetch(self, code: str) -> Entry | None:
        """Read a code that is not in memory; None when it does not exist."""
        self.misses += 1
        if self.inline:
            target = self._read(code)
            return None if target is None else self._remember(target)
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

    def _remember(self, target: CodeTarget) -> Entry:
        location = self._locations.get(target.destination)
        if location is None:
            if len(self._locations) >= 10_000:
                self._locations.clear()
            location = self._locations[target.destination] = location_header(target.destination)
        entry = self._items[target.code] = (location, target)
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
                    target = found.get(code)
                    entry = None if target is None else self._remember(target)
                    for future in self._waiting.pop(code):
                        if not future.done():
                            future.set_result(entry)
        finally:
            self._lookup = None

    def start(self) -> None:
        """Start loading codes ahead of their clicks (when preload or refresh is on)."""
        if (self.preload_hours <= 0 and self.refresh_seconds <= 0) or self.size <= 0:
            self.preloaded = True
            return
        self._keeper = asyncio.get_running_loop().create_task(self._keep_up(), name="code-preload")

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()

    async def _keep_up(self) -> None:
        since = datetime.now(UTC)
        if self.preload_hours > 0:
            started = time.monotonic()
            try:
                learnt = await self._learn(since - timedelta(hours=self.preload_hours))
                log.info("short codes preloaded", codes=learnt, seconds=round(time.monotonic() - started, 2))
            except Exception as exc:  # clicks read their codes one by one meanwhile
                log.warning("short code preload failed", error=str(exc))
        self.preloaded = True
        while self.refresh_seconds > 0:
            await asyncio.sleep(self.refresh_seconds)
            fetched_at = datetime.now(UTC)
            try:
                await self._learn(since - REFRESH_OVERLAP)
            except Exception as exc:
                log.warning("short code refresh failed", error=str(exc))
                continue
            since = fetched_at

    async def _learn(self, sent_since: datetime) -> int:
        """Load the codes of messages sent since then that are not in memory; how many."""
        # The thread only tests membership, which is safe against the loop's changes under the GIL.
        targets = await anyio.to_thread.run_sync(recent_codes, self.engine, sent_since, self.size, self._items)
        for index, target in enumerate(reversed(targets)):  # oldest first: the newest stay longest
            if target.code not in self._items:
                self._remember(target)
            if index % 2000 == 1999:
                await asyncio.sleep(0)  # let redirects through
        self.learnt += len(targets)
        return len(targets)


class ClickWriter:
    """Batches click rows: written when `interval` seconds have passed since the first one
    waiting, `batch` rows at a time, and all of them on close.

    The queue is a plain list (a click costs one append) and bounded: when the database falls
    behind by `capacity` clicks, redirects wait for room (back-pressure) rather than drop clicks
    or grow memory without limit.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        on_stored: Callable[[list[dict[str, Any]]], Any] | None = None,
        filters: Sequence[Any] = (),
        interval: float = 0.005,
        batch: int = 5000,
        capacity: int = 50_000,
    ) -> None:
        self.engine = engine
        self.on_stored = on_stored
        self.filters = tuple(filters)  # bot filters, applied as clicks are stored
        self.interval = interval
        self.batch = batch
        self.capacity = capacity
        self.written = 0
        self.batches = 0  # transactions that wrote clicks
        self.inline = is_sqlite(engine)
        self._connection: Any = None  # SQLite: the writer's own connection
        self._pending: list[ClickRecord] = []
        self._wake: asyncio.Future[None] | None = None  # the writer waits for a first click
        self._room: asyncio.Event | None = None  # redirects wait for room in a full queue
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        """Clicks waiting to be written."""
        return len(self._pending)

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="click-writer")

    def offer(self, record: ClickRecord) -> bool:
        """Queue a click unless the queue is full."""
        if len(self._pending) >= self.capacity:
            return False
        self._pending.append(record)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        return True

    async def put(self, record: ClickRecord) -> None:
        while not self.offer(record):  # back-pressure instead of losing clicks
            if self._room is None:
                self._room = asyncio.Event()
            await self._room.wait()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
            if not self._closing and len(self._pending) < self.batch:
                await asyncio.sleep(self.interval)  # let a batch gather
            records = self._pending[: self.batch]
            del self._pending[: self.batch]
            room, self._room = self._room, None
            if room is not None:
                room.set()
            await self._flush(records)

    async def _flush(self, records: list[ClickRecord]) -> None:
        attempt = 0
        while True:
            try:
                written = await anyio.to_thread.run_sync(self._store, records)
                break
            except Exception as exc:  # a locked or restarting database: retry, never drop
                attempt += 1
                if self._closing and attempt >= 10:
                    log.error("clicks could not be written", clicks=len(records), error=str(exc))
                    return
                log.warning("click write failed, retrying", error=str(exc), attempt=attempt, clicks=len(records))
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
        self.written += written
        self.batches += 1
        if self.on_stored is not None:
            try:
                self.on_stored(click_rows(records))
            except Exception as exc:  # a plugin's failure does not stop the writer
                log.warning("on_click hook failed", error=str(exc))

    def _store(self, records: list[ClickRecord]) -> int:
        """In a worker thread, one batch at a time. SQLite: on a connection of the writer's own,
        whose page cache stays warm with the click table's last pages from batch to batch.

        That connection does not check foreign keys, a sixth of the cost of a click row (callgrind):
        a click's campaign, message, link and contact are those of its short code, read from this
        database, and Textpulse deletes none of them. (With the check on, a batch holding one
        click whose parent had gone would fail, and be retried, forever.) It is detached from the
        pool, so no other unit of work gets a connection without the check."""
        if not self.inline:
            return store_clicks(self.engine, records, self.filters)
        if self._connection is None:
            connection = self.engine.raw_connection()
            connection.detach()  # closed, not pooled, when the writer is done with it
            connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
            self._connection = connection
        try:
            return store_clicks(self.engine, records, self.filters, sqlite_connection=self._connection)
        except Exception:
            connection, self._connection = self._connection, None
            connection.close()  # a fresh connection for the retry (detached: close really closes)
            raise

    async def close(self) -> None:
        """Write every queued click, then stop."""
        if self._task is None:
            return
        self._closing = True
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        await self._task
        self._task = None
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()


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
        entry = self.cache.lookup(code)
        if entry is None and is_wellformed_code(code):
            entry = await self.cache.fetch(code)
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
        record = ClickRecord(entry[1], datetime.now(UTC), ip, agent, referer, method == "HEAD")
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
