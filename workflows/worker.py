"""The Temporal worker: the campaign workflow, its activities, and whatever plugins register."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.worker import Worker

from core.hooks.registry import PluginRegistry
from workflows.activities import CampaignActivities
from workflows.campaign import CampaignWorkflow


def build_worker(
    client: Client, engine: Engine, registry: PluginRegistry, *, task_queue: str, max_concurrent_activities: int = 16
) -> tuple[Worker, ThreadPoolExecutor]:
    """A worker plus the thread pool its synchronous activities run in (shut it down after)."""
    activities = CampaignActivities(engine, registry)
    executor = ThreadPoolExecutor(max_workers=max_concurrent_activities, thread_name_prefix="activity")
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[CampaignWorkflow, *registry.workflows()],
        activities=[*activities.all(), *registry.activities()],
        activity_executor=executor,
        max_concurrent_activities=max_concurrent_activities,
    )
    return worker, executor
