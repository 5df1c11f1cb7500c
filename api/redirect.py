"""GET/HEAD /r/{code}: the hot path. A raw ASGI app mounted in Litestar.

A code resolves (cached) to the destination stored at send time, so there is no open
redirect. The click goes into a bounded in-process queue that a background task writes in
batches every few milliseconds, and that is drained on shutdown: no click is lost on SIGTERM.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from sqlalchemy.engine import Engine

from core.clicks import ClickRecord, CodeTarget, client_ip, resolve_code, store_clicks
from core.log import get_logger
from plugins.shortener import is_wellformed_code

log = get_logger("textpulse.redirect")

NOT_FOUND_PAGE = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Link not found</title>"
    b"<body style='font-family:sans-serif;margin:3em'><h1>Link not found</h1>"
    b"<p>This link does not exist or was mistyped.</p></body></html>"
)


class CodeCache:
    """An LRU of resolved codes; a code's target never changes, so entries never go stale."""

    def __init__(self, engine: Engine, size: int = 100_000) -> None:
        self.engine = engine
        self.size = size
        self._items: OrderedDict[str, CodeTarget] = OrderedDict()

    async def get(self, code: str) -> CodeTarget | None:
        target = self._items.get(code)
        if target is not None:
            self._items.move_to_end(code)
            return target
        target = await anyio.to_thread.run_sync(resolve_code, self.engine, code)
        if target is not None:
            self._items[code] = target
            if len(self._items) > self.size:
                self._items.popitem(last=False)
        return target


class ClickWriter:
    """Batches click rows: flushed every `interval` seconds or `batch` rows, and on close."""

    def __init__(self, engine: Engine, *, on_stored: Any = None, interval: float = 0.005, batch: int = 1000,
                 capacity: int = 50_000) -> None:
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
        await self.queue.put(record)  # waits when full: back-pressure instead of losing clicks

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
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed", [(b"allow", b"GET, HEAD")])
            return
        code = scope["path"].strip("/")
        target = await self.cache.get(code) if is_wellformed_code(code) else None
        if target is None:
            await _respond(send, 404, NOT_FOUND_PAGE if method == "GET" else b"",
                           [(b"content-type", b"text/html; charset=utf-8")])
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        peer = scope["client"][0] if scope.get("client") else None
        forwarded = headers.get(b"x-forwarded-for")
        agent, referer = headers.get(b"user-agent"), headers.get(b"referer")
        await self.writer.put(ClickRecord(
            target=target,
            clicked_at=datetime.now(UTC),
            ip=client_ip(peer, forwarded.decode("latin-1") if forwarded else None, self.trusted_proxies),
            user_agent=agent.decode("latin-1") if agent else None,
            referer=referer.decode("latin-1") if referer else None,
            probe=method == "HEAD",
        ))
        await _respond(send, 302, b"", [(b"location", target.destination.encode())])


async def _respond(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"cache-control", b"no-store"), (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})
