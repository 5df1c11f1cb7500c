"""The short code cache: what each code resolves to, in memory ahead of its clicks.

The redirect (api/redirect.py) asks it for every click, so a lookup is a dict read; a code not in
memory is read from the database at its click. docs/benchmarks.md has the figures behind the
choices made here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
from sqlalchemy.engine import Engine

from core.db import is_sqlite
from core.log import get_logger
from core.tracking.codes import CodeTarget, recent_codes, resolve_codes

log = get_logger("textpulse.redirect")

# A cached code: (its destination as the redirect answers it, target), the first made by the
# cache's `encode_destination` (the redirect's Location header). Tuples of strings, ints and
# bytes, which the garbage collector stops tracking: a full cache adds next to nothing to a full
# collection.
Entry = tuple[bytes, CodeTarget]

# Codes of messages sent up to this long before the previous fetch are asked for again: a batch's
# sent_at is stamped once its transaction has begun, a moment before it commits
# (core/delivery/sending.py). A code committed later still than that is read at its first click.
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

    `encode_destination` turns a destination into what an entry keeps beside its target (the
    redirect's Location header), once per destination rather than once per click.
    """

    def __init__(
        self,
        engine: Engine,
        size: int = 200_000,
        batch: int = 500,
        *,
        encode_destination: Callable[[str], bytes],
        preload_hours: float = 0,
        refresh_seconds: float = 0,
    ) -> None:
        self.engine = engine
        self.encode_destination = encode_destination
        self.inline = is_sqlite(engine)
        self.size = size
        self.batch = batch
        self.preload_hours = preload_hours
        self.refresh_seconds = refresh_seconds
        self.preloaded = False  # the load at start is over (or there is none)
        self.learnt = 0  # codes loaded ahead of their first click
        self.misses = 0  # codes read at a click
        self._items: OrderedDict[str, Entry] = OrderedDict()
        self._locations: dict[str, bytes] = {}  # destination -> encoded, shared by its codes
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
            location = self._locations[target.destination] = self.encode_destination(target.destination)
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
