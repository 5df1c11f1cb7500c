"""The Temporal worker: the campaign workflow, the automations' building blocks (activities), and
whatever plugins register (their workflows, activities and automations)."""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor, Worker

from core.hooks.registry import PluginRegistry
from core.log import log_context
from workflows.activities import CampaignActivities
from workflows.automation_activities import AutomationActivities
from workflows.campaign import CampaignWorkflow
from workflows.rescore import RescoreWorkflow
from workflows.rescore_activities import RescoreActivities


class ActivityLogContext(Interceptor):
    """Every log line of an activity says which activity, workflow and campaign it is about (and,
    for a batch, its first and last message id), whoever writes it: the activity, core, a plugin."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _BindLogContext(next)


class _BindLogContext(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        # Bound in this activity's own task: for a synchronous activity, the SDK runs it in the
        # executor thread under a copy of this task's context (contextvars.copy_context() in its
        # innermost inbound interceptor), so the thread's log lines carry these too.
        with log_context(
            activity=info.activity_type,
            workflow_id=info.workflow_id,
            attempt=info.attempt,
            **_subject(input),
        ):
            return await self.next.execute_activity(input)


def _subject(input: ExecuteActivityInput) -> dict[str, Any]:
    """The campaign and batch an activity works on: fields of its input dataclass, or a first
    parameter named `campaign_id` (sweep_callbacks takes the bare id)."""
    if not input.args:
        return {}
    first = input.args[0]
    if isinstance(first, int) and not isinstance(first, bool):
        try:
            parameters = list(inspect.signature(input.fn).parameters)
        except (TypeError, ValueError):  # a plugin's callable without a signature: no campaign to tell
            return {}
        return {"campaign_id": first} if parameters[:1] == ["campaign_id"] else {}
    return {name: getattr(first, name, None) for name in ("campaign_id", "first_message_id", "last_message_id")}


def build_worker(
    client: Client, engine: Engine, registry: PluginRegistry, *, task_queue: str, max_concurrent_activities: int = 16
) -> tuple[Worker, ThreadPoolExecutor]:
    """A worker plus the thread pool its synchronous activities run in (shut it down after)."""
    activities = CampaignActivities(engine, registry)
    automation_activities = AutomationActivities(engine, registry)
    rescore_activities = RescoreActivities(engine, registry)
    executor = ThreadPoolExecutor(max_workers=max_concurrent_activities, thread_name_prefix="activity")
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[CampaignWorkflow, RescoreWorkflow, *registry.workflows()],
        activities=[*activities.all(), *automation_activities.all(), *rescore_activities.all(), *registry.activities()],
        activity_executor=executor,
        max_concurrent_activities=max_concurrent_activities,
        interceptors=[ActivityLogContext()],
    )
    return worker, executor
