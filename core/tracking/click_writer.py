"""The click writer: clicks queued by the redirect, judged and stored in batches.

A click costs the redirect one append to a bounded in-process queue; a background task writes
what gathered every few milliseconds, and everything left on close: no click is lost on SIGTERM
(uvicorn finishes the requests in flight, then the app's lifespan closes the writer).

Together-filters (`JudgesTogether`: bursts, every link of a message) judge in a process of
their own (core/tracking/together.py): each stored batch is handed to it, it judges the clicks
together with those of the last few seconds, and the verdicts it changes come back and are
written over their rows (`update_verdicts`) — a moment later than the row, and the click's
`on_click` listeners were told the first verdict (docs/bots.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

import anyio.to_thread
from sqlalchemy.engine import Engine

from core.db import is_sqlite
from core.hooks.contracts import BotFilter, JudgesTogether
from core.log import get_logger
from core.tracking.click_store import click_rows, store_clicks, update_verdicts
from core.tracking.clicks import ClickRecord
from core.tracking.together import Judge, from_verdict

log = get_logger("textpulse.redirect")


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
        self.rejudged = 0  # stored clicks whose verdict the judge changed
        self._judge: Judge | None = None  # the process that judges clicks together
        self._changed: list[tuple[Any, ...]] = []  # re-judged verdicts, their rows not rewritten yet
        self._changed_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
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
        self._loop = asyncio.get_running_loop()
        if self.together and self._judge is None:
            self._judge = Judge(self.together, self._rejudged, together_every=self.together_every)
            self._judge.start()
        self._task = self._loop.create_task(self._run(), name="click-writer")

    def _rejudged(self, records: list[tuple[Any, ...]]) -> None:
        """From the judge's reader thread: verdicts to write; wake the writer."""
        with self._changed_lock:
            self._changed.extend(records)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: close() writes them
                loop.call_soon_threadsafe(self._poke)

    def _poke(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

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
            if self._changed:
                await self._write_verdicts()
            if not self._pending:
                if self._closing:
                    return
                self._wake = wake = loop.create_future()
                if self._changed:  # came while the last write ran
                    self._wake = None
                    continue
                await wake
                self._wake = None
                continue
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

    async def _write_verdicts(self) -> None:
        """Write the verdicts the judge changed over their rows; kept for the next try on failure."""
        with self._changed_lock:
            changed, self._changed = self._changed, []
        try:
            await anyio.to_thread.run_sync(self._update, changed)
        except Exception as exc:  # a locked database: tried again with the next wake-up
            log.warning("re-judged verdicts not written yet", clicks=len(changed), error=str(exc))
            with self._changed_lock:
                self._changed[:0] = changed
            await asyncio.sleep(0.05)
            return
        self.rejudged += len(changed)

    def _update(self, verdicts: list[tuple[Any, ...]]) -> None:
        """In a worker thread (the clicks are made here, not on the judge's reader thread)."""
        changed = [from_verdict(v) for v in verdicts]
        if not self.inline:
            update_verdicts(self.engine, changed)
            return
        try:
            update_verdicts(self.engine, changed, sqlite_connection=self._sqlite())
        except Exception:
            connection, self._connection = self._connection, None
            if connection is not None:
                connection.close()  # a fresh connection for the retry
            raise

    def _judge_and_store(self, records: list[ClickRecord], connection: Any) -> int:
        """Judge the batch with the per-click filters and store it; hand it to the judge of clicks
        together."""
        written = store_clicks(self.engine, records, self.filters, sqlite_connection=connection)
        if self._judge is not None:
            try:  # stored: nothing after this may fail the batch (it would be stored again)
                self._judge.send(records)
            except Exception as exc:
                log.warning("clicks not judged together", clicks=len(records), error=str(exc))
        return written

    def _sqlite(self) -> Any:
        if self._connection is None:
            connection: Any = self.engine.raw_connection()
            connection.detach()  # closed, not pooled, when the writer is done with it
            connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
            self._connection = connection
        return self._connection

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
        try:
            return self._judge_and_store(records, self._sqlite())
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
        judge, self._judge = self._judge, None
        if judge is not None:  # a last round over what waits; its verdicts written
            await anyio.to_thread.run_sync(judge.close)
            for _ in range(5):
                if not self._changed:
                    break
                await self._write_verdicts()
            if self._changed:
                log.error("re-judged verdicts could not be written", clicks=len(self._changed))
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()
