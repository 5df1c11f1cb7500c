"""The click writer: clicks queued by the redirect, judged and stored in batches.

A click costs the redirect one append to a bounded in-process queue; a background task writes
what gathered every few milliseconds, and everything left on close: no click is lost on SIGTERM
(uvicorn finishes the requests in flight, then the app's lifespan closes the writer).

Together-filters (`JudgesTogether`: bursts, every link of a message) judge the clicks of a batch
with those of the last few seconds, which the writer keeps in memory (`window`, at most
WINDOW_CAPACITY clicks), and may re-judge those: their rows are updated. So that this costs the
redirects (whose event loop shares the GIL with the writer's thread) next to nothing, they judge
at most every `together_every` seconds (longer when a round took long, ROUND_SHARE, or under a
heavy load would read far more of the window than it judges, ROUND_READS): a batch written in
between is stored with the verdicts of the per-click filters and judged together
with a later batch, or on its own when none comes — its verdict may come a moment later than
its row, and its `on_click` listeners were told the first one (docs/bots.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Any

import anyio.to_thread
from sqlalchemy.engine import Engine

from core.db import is_sqlite
from core.hooks.contracts import BotFilter, JudgesTogether
from core.log import get_logger
from core.tracking.bots import judge_clicks, judge_together, together_window
from core.tracking.click_store import click_rows, store_clicks, update_verdicts
from core.tracking.clicks import ClickRecord

log = get_logger("textpulse.redirect")

# The clicks kept for the together-filters' window, at most (a few seconds of a heavy load).
WINDOW_CAPACITY = 100_000
# A round of the together-filters waits at least this many times its predecessor's duration: at
# most about a tenth of one core goes to judging together, however heavy the load.
ROUND_SHARE = 10
# A round reads the window before the clicks it judges: under a heavy load it waits until it judges
# at least 1/ROUND_READS as many clicks as the window holds (or the window's span has passed), so
# that each click is read about ROUND_READS times, not (span / together_every) times: at 20,000
# clicks a second, a round every 2.5 s instead of 20 rounds over every click of a 5-second window
# (docs/benchmarks.md, "The behaviour filters and the redirect").
ROUND_READS = 4


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
        filters: Sequence[BotFilter] = (),
        together: Sequence[JudgesTogether] = (),
        together_every: float = 0.25,
        interval: float = 0.005,
        batch: int = 5000,
        capacity: int = 50_000,
    ) -> None:
        self.engine = engine
        self.on_stored = on_stored
        self.filters = tuple(filters)  # bot filters, applied as clicks are stored
        self.together = tuple(together)  # bot filters that judge clicks together, over `window`
        self.together_every = together_every
        self.rejudged = 0  # stored clicks whose verdict a later round changed
        self.window: deque[ClickRecord] = deque()  # the last clicks stored, for the together-filters
        self._unjudged = 0  # how many of the window's newest are not judged together yet
        self._dirty: dict[int, ClickRecord] = {}  # stored clicks re-judged, their rows not rewritten yet
        self._next_round = 0.0  # time.monotonic() from which the next round may run
        self._last_round = 0.0  # time.monotonic() of the last round
        self._span = together_window(self.together)
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
                    if self._unjudged:
                        await self._settle()
                    return
                self._wake = wake = loop.create_future()
                if self._unjudged:  # stored clicks await their round: run it when no batch comes
                    delay = max(self._next_round - time.monotonic(), 0.0)
                    done, _ = await asyncio.wait({wake}, timeout=delay)
                    self._wake = None
                    if not done:
                        await self._settle()
                    continue
                await wake
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

    async def _settle(self) -> None:
        """Judge the clicks stored but not judged together yet, with no new batch."""
        try:
            await anyio.to_thread.run_sync(self._store, [])
        except Exception as exc:  # their rows keep the per-click verdicts
            log.warning("judging clicks together failed", error=str(exc), clicks=self._unjudged)
            self._unjudged = 0

    def _judge_and_store(self, records: list[ClickRecord], connection: Any) -> int:
        """Judge the batch alone; then, when a round is due (or the writer closes), together with the
        clicks stored before it; store it; write the verdicts that changed of clicks stored before."""
        if not self.together:
            return store_clicks(self.engine, records, self.filters, sqlite_connection=connection)
        if records:
            judge_clicks(self.engine, records, self.filters, sqlite_connection=connection)
        started = time.monotonic()
        ran = self._closing or (started >= self._next_round and self._round_pays(len(records), started))
        if ran:
            self._last_round = started
            window = self.window
            waiting = list(islice(window, len(window) - self._unjudged, None))
            clicks = waiting + records
            if clicks:
                # The window before the waiting clicks (copied in C); judge_together leaves out, for
                # each filter, those older than its own window before the first of `clicks`.
                before = list(islice(window, 0, len(window) - self._unjudged))
                fresh = {id(record) for record in records}
                for click in judge_together(self.together, clicks, before):
                    if id(click) not in fresh:  # stored already: its row is rewritten
                        self._dirty[id(click)] = click
            self._unjudged = 0
            self._next_round = time.monotonic() + max(self.together_every, ROUND_SHARE * (time.monotonic() - started))
        written = store_clicks(self.engine, records, sqlite_connection=connection, judged=True) if records else 0
        if self._dirty:  # kept until written: a failed write is tried again with the next batch
            changed = list(self._dirty.values())
            try:
                update_verdicts(self.engine, changed, sqlite_connection=connection)
            except Exception as exc:  # the batch is stored: never let its insert be tried again
                log.warning("re-judged verdicts not written yet", clicks=len(changed), error=str(exc))
            else:
                self._dirty.clear()
                self.rejudged += len(changed)
        if records:
            self.window.extend(records)
            if not ran:
                self._unjudged += len(records)
            self._prune(records[-1].clicked_at)
        return written

    def _round_pays(self, new: int, now: float) -> bool:
        """Is a round due, by what it reads? Always with no new batch (a quiet moment: `_settle`)
        and once the window's span has passed since the last; else when the clicks to judge are at
        least 1/ROUND_READS of the window."""
        if not new or now - self._last_round >= self._span.total_seconds():
            return True
        return (self._unjudged + new) * ROUND_READS >= len(self.window) - self._unjudged

    def _prune(self, newest: Any) -> None:
        """Forget the clicks no round needs any more: older than the window before the newest, once
        every click is judged together (until then, the waiting ones' window is kept), and beyond
        WINDOW_CAPACITY the oldest judged ones."""
        window, cutoff = self.window, newest - self._span * 2
        while len(window) > self._unjudged and (
            len(window) > WINDOW_CAPACITY or (not self._unjudged and window[0].clicked_at < cutoff)
        ):
            window.popleft()

    def _store(self, records: list[ClickRecord]) -> int:
        """In a worker thread, one batch at a time. SQLite: on a connection of the writer's own,
        whose page cache stays warm with the click table's last pages from batch to batch.

        That connection does not check foreign keys, a sixth of the cost of a click row (callgrind):
        a click's campaign, message, link and contact are those of its short code, read from this
        database, and Textpulse deletes none of them. (With the check on, a batch holding one
        click whose parent had gone would fail, and be retried, forever.) It is detached from the
        pool, so no other unit of work gets a connection without the check."""
        if not self.inline:
            return self._judge_and_store(records, None)
        if self._connection is None:
            connection: Any = self.engine.raw_connection()
            connection.detach()  # closed, not pooled, when the writer is done with it
            connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
            self._connection = connection
        try:
            return self._judge_and_store(records, self._connection)
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
