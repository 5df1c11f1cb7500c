"""The building blocks of automation workflows: a base class whose methods are the blocks.

    @workflow.defn(name="my_automation")
    class Mine(AutomationWorkflow):
        @workflow.run
        async def run(self, start: AutomationStart) -> dict[str, Any]:
            return await self.execute(start, self.steps)

        async def steps(self) -> None:
            params = self.params(MyParams)
            ...

`execute` records the run (the API's `GET /api/workflows/runs/{id}`), runs `steps`, and records
how it ended: completed, cancelled (`POST .../cancel`), or failed (an activity refused, or a
step raised `ApplicationError`). The blocks (docs/workflows.md):
- `params(T)`: the run's params as the registered params type;
- `wait_for(kinds, timeout_seconds=…)`: the first event of the contact (click, reply, delivery,
  conversion) since the run began, or None at the timeout; events come as signals;
- `sleep(seconds)`, `sleep_until(epoch)`: durable timers;
- `count_audience(audience)`, `send_campaign(...)` + `wait_for_campaign(id)`: a campaign of the run
  (its own campaign row, sent by the campaign workflow as a child, with every stat);
- `text_contact(step, body, ...)`: one text to the run's contact in the step's campaign;
- `contact()`, `stats(campaign_id)`, `report()` (store `self.progress` now).

Deterministic like every workflow: no I/O, no clock but `workflow.now()`, no randomness but
`workflow.random()`. Everything that touches the world is an activity of
`workflows.automation_activities`. Changing what a running workflow does goes behind
`workflow.patched` (docs/workflows.md "Versioning").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    FailureError,
    WorkflowAlreadyStartedError,
    is_cancelled_exception,
)
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from core.automations.spec import decode_params
    from core.statuses import FINAL_CAMPAIGN_STATUSES, CampaignKind, RunStatus
    from workflows.automation_activities import AutomationActivities
    from workflows.automation_inputs import (
        EVENT_SIGNAL,
        AutomationStart,
        CampaignSendInput,
        CampaignStateResult,
        ContactEvent,
        ContactInfoResult,
        CountAudienceInput,
        FinishRunInput,
        ProgressInput,
        RegisterRunInput,
        TextContactInput,
        TextContactResult,
    )
    from workflows.inputs import CampaignInput

T = TypeVar("T")

SHORT = timedelta(seconds=30)
SEND = timedelta(minutes=5)
SEND_HEARTBEAT = timedelta(seconds=30)
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
CAMPAIGN_ENDED = "campaign_ended"  # the relay's kind for a campaign's end (`name`: its status)
RUN_CANCELLED = "RunCancelled"  # an activity found the run cancelled (by the API) before Temporal said so
MAX_POLL_SECONDS = 3600.0


class AutomationWorkflow:
    """Subclass it, decorate the subclass with `@workflow.defn(name=...)`, and give it a
    `@workflow.run` method that returns `await self.execute(start, self.steps)`."""

    def __init__(self) -> None:
        self.start = AutomationStart(automation="")
        self.run_id = 0  # the API's id of this run
        self.progress: dict[str, Any] = {}  # counts the automation chooses (the run's `progress`)
        self.events: list[ContactEvent] = []
        self.started_at_epoch = 0.0

    @workflow.signal(name=EVENT_SIGNAL)
    def _on_event(self, event: ContactEvent) -> None:
        if event not in self.events:  # the relay may tell one event twice (a signal and a start)
            self.events.append(event)

    # -- the run ---------------------------------------------------------------------------
    async def execute(self, start: AutomationStart, steps: Callable[[], Awaitable[None]]) -> dict[str, Any]:
        self.start = start
        info = workflow.info()
        self.started_at_epoch = info.start_time.timestamp()
        if start.event is not None:
            self._on_event(start.event)
        self.run_id = await workflow.execute_activity_method(
            AutomationActivities.register_run,
            RegisterRunInput(
                workflow=start.automation or info.workflow_type,
                workflow_id=info.workflow_id,
                temporal_run_id=info.run_id,
                params=start.params,
                contact_id=start.contact_id,
                campaign_id=start.campaign_id,
                trigger=start.trigger,
                started_at_epoch=self.started_at_epoch,
            ),
            start_to_close_timeout=SHORT,
            retry_policy=RETRY,
        )
        try:
            await steps()
        except Exception as exc:  # (asyncio.CancelledError is a BaseException: below)
            if is_cancelled_exception(exc) or (isinstance(exc, ApplicationError) and exc.type == RUN_CANCELLED):
                await self._end(RunStatus.CANCELLED)
                raise
            await self._end(RunStatus.FAILED, error=_why(exc) if isinstance(exc, FailureError) else repr(exc))
            if isinstance(exc, (ActivityError, ChildWorkflowError, ApplicationError)):
                raise
            # A bug in the steps: the run fails, saying why, rather than retrying its task forever.
            raise ApplicationError(
                f"the automation failed: {exc!r}", type=type(exc).__name__, non_retryable=True
            ) from exc
        except asyncio.CancelledError:
            await self._end(RunStatus.CANCELLED)
            raise
        await self._end(RunStatus.COMPLETED)
        return {"run_id": self.run_id, "status": RunStatus.COMPLETED, "progress": self.progress}

    async def _end(self, status: str, *, error: str | None = None) -> None:
        await workflow.execute_activity_method(
            AutomationActivities.finish_run,
            FinishRunInput(self.run_id, status, dict(self.progress), error),
            start_to_close_timeout=SHORT,
            retry_policy=RETRY,
        )

    # -- blocks ----------------------------------------------------------------------------
    def params(self, params_type: type[T]) -> T:
        """The run's params as `params_type` (checked against it before the run started)."""
        value: T = decode_params(params_type, self.start.params)
        return value

    @property
    def contact_id(self) -> int:
        if self.start.contact_id is None:
            raise ApplicationError("this run is about no contact", non_retryable=True)
        return self.start.contact_id

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await workflow.sleep(seconds)

    async def sleep_until(self, epoch: float) -> None:
        await self.sleep(epoch - workflow.now().timestamp())

    def find_event(
        self,
        kinds: Sequence[str],
        *,
        since_epoch: float | None = None,
        name: str | None = None,
        campaign_id: int | None = None,
    ) -> ContactEvent | None:
        """The first event received of one of `kinds` (at or after `since_epoch`, default the
        run's start), of event `name` and campaign `campaign_id` when given."""
        since = self.started_at_epoch if since_epoch is None else since_epoch
        for event in self.events:
            if event.kind not in kinds or (name is not None and event.name != name):
                continue
            if campaign_id is not None and event.campaign_id != campaign_id:
                continue
            if event.kind != CAMPAIGN_ENDED and event.at_epoch and event.at_epoch < since - 1:
                continue  # (a second of slack: the clocks of the database and of Temporal)
            return event
        return None

    async def wait_for(
        self,
        kinds: str | Sequence[str],
        *,
        timeout_seconds: float,
        since_epoch: float | None = None,
        name: str | None = None,
        campaign_id: int | None = None,
    ) -> ContactEvent | None:
        """Wait until the contact did one of `kinds` (click, reply, delivery, conversion; `name`:
        the conversion's event name or the delivery's status), or `timeout_seconds` passed (None)."""
        wanted = (kinds,) if isinstance(kinds, str) else tuple(kinds)

        def found() -> ContactEvent | None:
            return self.find_event(wanted, since_epoch=since_epoch, name=name, campaign_id=campaign_id)

        if (event := found()) is not None or timeout_seconds <= 0:
            return event
        try:
            await workflow.wait_condition(lambda: found() is not None, timeout=timedelta(seconds=timeout_seconds))
        except TimeoutError:
            return None
        return found()

    async def contact(self, contact_id: int | None = None) -> ContactInfoResult:
        return await workflow.execute_activity_method(
            AutomationActivities.contact_info,
            contact_id if contact_id is not None else self.contact_id,
            start_to_close_timeout=SHORT,
            retry_policy=RETRY,
        )

    async def count_audience(self, audience: dict[str, Any]) -> int:
        """How many contacts an audience (API.md "Campaign body") holds now."""
        return await workflow.execute_activity_method(
            AutomationActivities.count_audience,
            CountAudienceInput(audience),
            start_to_close_timeout=SEND,
            retry_policy=RETRY,
        )

    async def send_campaign(
        self,
        name: str,
        body: str,
        audience: dict[str, Any],
        *,
        kind: str = CampaignKind.AUTOMATION,
        parent_id: int | None = None,
        provider: str | None = None,
        **settings: Any,
    ) -> int:
        """Create and launch a campaign of this run (`name` unique within the run), sent by the
        campaign workflow `campaign-<id>` started as a child; its id (wait with `wait_for_campaign`)."""
        made = await workflow.execute_activity_method(
            AutomationActivities.create_campaign,
            CampaignSendInput(
                run_id=self.run_id,
                name=name,
                body=body,
                audience=audience,
                kind=kind,
                parent_id=parent_id,
                provider=provider,
                **settings,
            ),
            start_to_close_timeout=SEND,
            retry_policy=RETRY,
        )
        if made.campaign_id == 0:
            raise ApplicationError("the run was cancelled", type=RUN_CANCELLED, non_retryable=True)
        # Started even when an earlier attempt of the activity made the campaign (it started no
        # workflow then); a campaign workflow of that id running already is the one.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await workflow.start_child_workflow(
                "CampaignWorkflow",
                CampaignInput(**made.campaign_input),
                id=made.workflow_id,
                parent_close_policy=ParentClosePolicy.ABANDON,  # a cancel reaches it as a campaign cancel
            )
        return made.campaign_id

    async def campaign_state(self, campaign_id: int) -> CampaignStateResult:
        return await workflow.execute_activity_method(
            AutomationActivities.campaign_state, campaign_id, start_to_close_timeout=SHORT, retry_policy=RETRY
        )

    async def wait_for_campaign(self, campaign_id: int) -> CampaignStateResult:
        """Until the campaign has ended (completed, cancelled, failed): told by a signal, and
        looked at after `poll_seconds` besides, then twice as long each time up to an hour (a
        campaign scheduled days ahead costs a few history events an hour, not hundreds)."""
        poll = max(self.start.poll_seconds, 0.1)
        while True:
            state = await self.campaign_state(campaign_id)
            if state.status in FINAL_CAMPAIGN_STATUSES:
                return state
            seen = len(self.events)
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda seen=seen: any(  # type: ignore[misc]
                        e.kind == CAMPAIGN_ENDED and e.campaign_id == campaign_id for e in self.events[seen:]
                    ),
                    timeout=timedelta(seconds=poll),
                )
            poll = min(poll * 2, MAX_POLL_SECONDS)

    async def text_contact(
        self,
        step: str,
        body: str,
        *,
        contact_id: int | None = None,
        provider: str = "fake",
        stop_on: Sequence[str] = (),
        since_epoch: float | None = None,
        **settings: Any,
    ) -> TextContactResult:
        """Text the contact once for this run in the step's campaign, unless they opted out or did
        one of `stop_on` since `since_epoch` (default: the run's start); quiet hours wait."""
        while True:
            result = await workflow.execute_activity_method(
                AutomationActivities.text_contact,
                TextContactInput(
                    run_id=self.run_id,
                    automation=self.start.automation or workflow.info().workflow_type,
                    step=step,
                    contact_id=contact_id if contact_id is not None else self.contact_id,
                    body=body,
                    provider=provider,
                    stop_on=list(stop_on),
                    since_epoch=self.started_at_epoch if since_epoch is None else since_epoch,
                    progress=dict(self.progress),
                    **settings,
                ),
                start_to_close_timeout=SEND,
                heartbeat_timeout=SEND_HEARTBEAT,
                retry_policy=RETRY,
            )
            if result.status != "deferred" or result.resume_at_epoch is None:
                return result
            await self.sleep_until(result.resume_at_epoch)

    async def stats(self, campaign_id: int) -> dict[str, Any]:
        """The campaign's stats summary (API.md "Stats summary")."""
        return await workflow.execute_activity_method(
            AutomationActivities.campaign_stats, campaign_id, start_to_close_timeout=SHORT, retry_policy=RETRY
        )

    async def report(self) -> None:
        """Store `self.progress` as the run's progress now (it is stored at the end anyway)."""
        await workflow.execute_activity_method(
            AutomationActivities.progress,
            ProgressInput(self.run_id, dict(self.progress)),
            start_to_close_timeout=SHORT,
            retry_policy=RETRY,
        )


def _why(exc: FailureError) -> str:
    cause: BaseException | None = exc
    while isinstance(cause, FailureError) and cause.cause is not None:
        cause = cause.cause
    return str(cause or exc)
