"""Group commit for status callbacks: each waits for the transaction that stored it.

A campaign of a million messages brings two or three million delivery callbacks. Those that
arrive while a batch is being written form the next batch: one thread hop parses them all (the
provider's `parse_status`, which may block) and stores them in one transaction
(`core.delivery.status.ingest_callbacks`). Each callback is answered only after its transaction
committed, so an answered callback is a stored one. The app's lifespan starts the writer and
closes it, once what is pending is written.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from core.delivery.status import Callback, IngestOutcome, StatusListener, ingest_callbacks
from core.hooks.contracts import StatusUpdate, WebhookError, WebhookRequest
from core.log import get_logger
from core.statuses import MessageStatus

log = get_logger("textpulse.webhooks")

MAX_BATCH = 500
# After a batch, the writer waits while callbacks keep coming (in steps, at most LINGER seconds)
# before it takes the next: the callers it just answered send their next callbacks within about a
# millisecond, and without the wait they formed a batch of their own. At 32 connections batches
# then alternated between two halves of 16, each paying the transaction's fixed cost (about 2 ms on
# PostgreSQL: round trips, the statement triggers, the commit); together they hold 32
# (docs/benchmarks.md, "Status callbacks").
LINGER = 0.002
LINGER_STEP = 0.001
# Plain strings: a provider's status is looked up here once per update.
_STATUSES = frozenset(status.value for status in MessageStatus)


class StoreFailed(Exception):
    """The database refused a batch of callbacks several times; the provider should retry.

    Not a `TextpulseError`: the callback is fine, the database is not (a 503, not a 4xx)."""


@dataclass
class _Pending:
    provider: Any
    request: WebhookRequest
    future: asyncio.Future[IngestOutcome]
    callback: Callback | None = None


class StatusWriter:
    """Writes status callbacks in batches, each answered once its batch committed. A callback the
    provider refuses fails alone, with its 4xx (a `WebhookError`)."""

    def __init__(
        self,
        engine: Engine,
        on_change: StatusListener | None = None,
        max_batch: int = MAX_BATCH,
        linger: float = LINGER,
    ) -> None:
        self.engine = engine
        self.on_change = on_change
        self.max_batch = max_batch
        self.linger = linger
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        # One thread: batches are written one after the other, and a hop costs less than anyio's.
        self._thread: ThreadPoolExecutor | None = None
        self.start()

    def start(self) -> None:
        """Ready to write (again, after a close)."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="status-writer")

    async def close(self) -> None:
        """Write what is pending, answering its callbacks, then let the writer's thread go."""
        while self._task is not None:
            await asyncio.shield(self._task)
        if self._thread is not None:
            thread, self._thread = self._thread, None
            thread.shutdown(wait=False)  # idle: the last batch is written

    async def submit(self, provider: Any, request: WebhookRequest) -> IngestOutcome:
        loop = asyncio.get_running_loop()
        item = _Pending(provider, request, loop.create_future())
        self._pending.append(item)
        if self._task is None:  # the drain task runs only while there is work
            self._task = loop.create_task(self._drain(), name="status-writer")
        return await item.future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                await self._write(batch)
                await self._gather(len(batch))
        finally:
            self._task = None

    async def _gather(self, written: int) -> None:
        """Wait (at most `linger`) while callbacks keep arriving and the next batch is smaller than
        the last one: the callers just answered are about to send theirs."""
        waited, seen = 0.0, -1
        while waited < self.linger and seen != len(self._pending) < written:
            seen = len(self._pending)
            await asyncio.sleep(LINGER_STEP)
            waited += LINGER_STEP

    def _parse(self, batch: list[_Pending]) -> list[_Pending]:
        """Parse in the worker thread; answers refused ones at once (thread-safe), returns the rest."""
        parsed: list[_Pending] = []
        for item in batch:
            try:
                updates = checked_updates(item.provider.parse_status(item.request), item.provider.name)
            except Exception as exc:
                item.future.get_loop().call_soon_threadsafe(_settle, item.future, None, exc)
                continue
            raw = {"content_type": item.request.content_type, "body": item.request.body.decode("utf-8", "replace")}
            item.callback = Callback(item.provider.name, updates, raw)
            parsed.append(item)
        return parsed

    def _parse_and_store(self, batch: list[_Pending]) -> tuple[list[_Pending], list[IngestOutcome] | Exception]:
        parsed = self._parse(batch)
        try:
            return parsed, ingest_callbacks(
                self.engine, [i.callback for i in parsed if i.callback], on_change=self.on_change
            )
        except Exception as exc:  # a locked, restarting or deadlocked database: the batch rolled back
            return parsed, exc

    async def _write(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        parsed, result = await loop.run_in_executor(self._thread, self._parse_and_store, batch)
        for attempt in range(1, 4):
            if not isinstance(result, Exception):
                break
            log.warning("status callbacks not stored, retrying", error=str(result), attempt=attempt, size=len(parsed))
            await asyncio.sleep(0.05 * 2**attempt)
            result = await loop.run_in_executor(self._thread, self._store, parsed)
        if isinstance(result, Exception):
            if len(parsed) > 1:  # keep one bad callback from failing the others
                for item in parsed:
                    single = await loop.run_in_executor(self._thread, self._store, [item])
                    _settle(
                        item.future,
                        None if isinstance(single, Exception) else single[0],
                        StoreFailed(f"the callback could not be stored: {single}")
                        if isinstance(single, Exception)
                        else None,
                    )
                return
            log.error("status callback not stored", error=str(result))
            for item in parsed:
                _settle(item.future, None, StoreFailed(f"the callback could not be stored: {result}"))
            return
        for item, outcome in zip(parsed, result, strict=True):
            _settle(item.future, outcome, None)

    def _store(self, items: list[_Pending]) -> list[IngestOutcome] | Exception:
        try:
            return ingest_callbacks(self.engine, [i.callback for i in items if i.callback], on_change=self.on_change)
        except Exception as exc:
            return exc


def _settle(future: asyncio.Future[IngestOutcome], outcome: IngestOutcome | None, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(outcome)  # type: ignore[arg-type]


def checked_updates(updates: Any, provider: str) -> list[StatusUpdate]:
    """What the plugin parsed must fit our columns; a request that does not is refused whole."""
    if not isinstance(updates, list | tuple) or not all(isinstance(u, StatusUpdate) for u in updates):
        raise TypeError(f"provider {provider!r}: parse_status must return a list of StatusUpdate")
    for upd in updates:
        if not isinstance(upd.provider_message_id, str) or not upd.provider_message_id.strip():
            raise WebhookError(400, "the message id is missing or empty")
        if len(upd.provider_message_id) > 100:
            raise WebhookError(400, f"the message id is longer than 100 characters: {upd.provider_message_id[:40]!r}…")
        if upd.status not in _STATUSES:
            raise WebhookError(400, f"status must be one of {', '.join(MessageStatus)}, got {upd.status!r}")
        if upd.error_code is not None and len(str(upd.error_code)) > 40:
            raise WebhookError(400, "the error code is longer than 40 characters")
    return list(updates)
