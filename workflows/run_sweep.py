"""Automation runs that ended without saying so: their rows are closed by the worker.

A run records its own end (completed, cancelled, failed) before its workflow closes. A workflow
can also close without running that code: terminated from Temporal's UI or CLI, timed out, or cut
off at Temporal's history limit. Every `interval` seconds the worker asks Temporal's visibility
for the automation workflows closed since it last looked (one list query, however many runs are
still running) and moves each row still `running` to the matching end, with an `error` saying
what happened. Runs that recorded their own end are not touched (a row moves only from running).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col
from temporalio.client import Client, WorkflowExecutionStatus

from core.automations import runs
from core.db import session_scope
from core.log import get_logger
from core.models import WorkflowRun
from core.statuses import RunStatus

log = get_logger("textpulse.run_sweep")

ENDS = {
    WorkflowExecutionStatus.COMPLETED: RunStatus.COMPLETED,
    WorkflowExecutionStatus.CANCELED: RunStatus.CANCELLED,
    WorkflowExecutionStatus.FAILED: RunStatus.FAILED,
    WorkflowExecutionStatus.TERMINATED: RunStatus.FAILED,
    WorkflowExecutionStatus.TIMED_OUT: RunStatus.FAILED,
}
OVERLAP = timedelta(minutes=5)  # visibility is eventually consistent: look a little further back


class RunSweeper:
    def __init__(
        self,
        engine: Engine,
        get_client: Callable[[], Awaitable[Client]],
        automation_names: list[str],
        *,
        interval: float = 300.0,
    ) -> None:
        self.engine = engine
        self.get_client = get_client
        self.names = automation_names
        self.interval = interval
        self.since = datetime.now(UTC) - timedelta(days=1)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.names and self._task is None:
            self._task = asyncio.create_task(self._run(), name="run-sweep")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # Temporal away: the next round looks again from the same time
                log.warning("run sweep failed", error=str(exc))
            await asyncio.sleep(self.interval)

    async def sweep(self) -> int:
        """Close the rows of runs that ended unrecorded since the last sweep; how many were closed."""
        began = datetime.now(UTC)
        since = (self.since - OVERLAP).strftime("%Y-%m-%dT%H:%M:%SZ")
        types = ", ".join(f"'{name}'" for name in self.names)
        query = f"WorkflowType IN ({types}) AND ExecutionStatus != 'Running' AND CloseTime > '{since}'"
        client = await self.get_client()
        ended: dict[str, WorkflowExecutionStatus] = {}
        async for execution in client.list_workflows(query):
            if execution.status in ENDS:
                ended[execution.run_id] = execution.status
        closed = await asyncio.to_thread(self._close, ended) if ended else 0
        self.since = began
        return closed

    def _close(self, ended: dict[str, WorkflowExecutionStatus]) -> int:
        ids = list(ended)
        with session_scope(self.engine, read_only=True) as session:
            open_rows = session.execute(
                select(col(WorkflowRun.id), col(WorkflowRun.temporal_run_id)).where(
                    col(WorkflowRun.temporal_run_id).in_(ids), col(WorkflowRun.status) == RunStatus.RUNNING
                )
            ).all()
        closed = 0
        for row_id, run_id in open_rows:
            status = ended[run_id]
            why = f"the workflow ended {status.name.lower()} without recording its end (e.g. terminated in Temporal)"
            if runs.finish(self.engine, int(row_id), ENDS[status], error=why):
                closed += 1
                log.warning("automation run closed by the sweep", run_id=row_id, temporal_status=status.name)
        return closed
