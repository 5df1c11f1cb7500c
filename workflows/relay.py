"""The automation relay: what was stored reaches the automations, within a second, in batches.

A plugin of its own on the process's plugin manager (name `automation_relay`), so it hears every
`on_reply`, `on_conversion`, `on_contact_created` and `on_campaign_status` the process announces,
after the commit. The two hot paths tell it in batches, without hook payloads: the click writer
(`clicks_stored`) and the status writer (`statuses_stored`), which cost one test while no
automation listens (no `click` trigger on, no run about a contact running: looked up every
second, and set at once by a start in this process), so the redirect and the webhooks pay
nothing for automations nobody runs. What it hears is appended to a queue; a task on the event
loop takes what came every `interval` seconds and, per batch:
- signals each event (`contact_event`) to the running runs about its contact, found in one query
  (`workflow_run` by contact and status), and a campaign's end to the runs about that campaign or
  that made it;
- starts the automations whose trigger it is (those plugins.toml turns on) with signal-with-start
  under a deterministic id, so one event never starts two runs for one contact:
  `automation-<name>-<contact id>` (`contact_created`: only ever one; `click`, `reply`,
  `conversion`: one at a time, the next event signalled to it) and
  `automation-<name>-campaign-<id>` (`campaign_completed`, campaigns of kind `campaign` only).
Signals are for speed, not for truth: a run checks the contact's record before it sends
(`core.automations.sends`), and a wait for a campaign looks at it now and then should a signal be
lost with a process that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from core.automations import runs
from core.automations.spec import Automation
from core.hooks.contracts import CampaignStatusChanged, ContactCreated, ConversionRecorded, ReplyReceived
from core.hooks.hookspecs import hookimpl
from core.hooks.payloads import messages_status_changed
from core.hooks.registry import PluginRegistry
from core.log import get_logger
from core.statuses import FINAL_CAMPAIGN_STATUSES, CampaignKind, CampaignStatus, MessageStatus
from workflows.automation_inputs import EVENT_SIGNAL, AutomationStart, ContactEvent

log = get_logger("textpulse.relay")

PLUGIN_NAME = "automation_relay"
DELIVERY_STATUSES = (MessageStatus.DELIVERED, MessageStatus.UNDELIVERED, MessageStatus.FAILED)
# Campaign statuses a run hears of: the ends (a wait for a campaign returns on them).
CAMPAIGN_END = "campaign_ended"
MAX_BATCH = 5000
REFRESH = 1.0  # seconds between looks for running automations about contacts
START_ATTEMPTS = 8  # a failed start is tried again after 2, 4, … 60 s
CONCURRENT_CALLS = 32


def _epoch(value: Any) -> float:
    return float(value.timestamp()) if value is not None else 0.0


class AutomationRelay:
    def __init__(
        self,
        engine: Engine,
        registry: PluginRegistry,
        get_client: Callable[[], Awaitable[Client]],
        *,
        task_queue: str,
        interval: float = 0.1,
        poll_seconds: float = 60.0,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.get_client = get_client
        self.task_queue = task_queue
        self.settings = registry.context.settings
        self.interval = interval
        self.poll_seconds = poll_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[ContactEvent] = []
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._users = 0
        self._closing = False
        self._wake = asyncio.Event()
        self.signalled = 0
        self.started = 0
        # Does anything want clicks and delivery reports: a click trigger turned on (fixed), or
        # runs about contacts running (looked up every REFRESH seconds, and set at once when this
        # process starts one).
        self._click_trigger = any(
            "click" in a.triggers and a.trigger_params is not None for a in registry.automations().values()
        )
        self._runs_waiting = False
        self._looked_at = 0.0
        # Starts that failed, due again: (automation, trigger, event, attempts so far).
        self._retrying: list[tuple[Automation, str, ContactEvent, int]] = []

    # -- who uses it -----------------------------------------------------------------------
    @classmethod
    def attach(
        cls,
        engine: Engine,
        registry: PluginRegistry,
        get_client: Callable[[], Awaitable[Client]],
        **options: Any,
    ) -> AutomationRelay:
        """The process's relay on this registry: made and registered by the first to ask."""
        existing = registry.pm.get_plugin(PLUGIN_NAME)
        if isinstance(existing, AutomationRelay):
            return existing
        relay = cls(engine, registry, get_client, **options)
        registry.pm.register(relay, name=PLUGIN_NAME)
        return relay

    async def start(self) -> None:
        """Begin relaying (each user calls it; the first starts the task)."""
        self._users += 1
        if self._task is None:
            self._closing = False
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="automation-relay")

    async def close(self) -> None:
        """Relay what is queued, then stop (when the last user closes it)."""
        self._users -= 1
        if self._users > 0 or self._task is None:
            return
        task, self._task = self._task, None
        self._closing = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self.flush()
        self._loop = None

    # -- what it hears (any thread) -------------------------------------------------------------
    def publish(self, event: ContactEvent) -> None:
        loop = self._loop
        if loop is None:
            return  # not relaying in this process (a CLI command)
        with self._lock:
            self._queue.append(event)
            first = len(self._queue) == 1
        if first:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._wake.set)

    # The two hot paths (every click, every delivery report) are told in batches, by the click
    # writer and the status writer, and cost a single test while no automation listens.
    @property
    def listening(self) -> bool:
        """Does any automation want a contact's clicks and delivery reports now: a `click` trigger
        turned on, or runs about contacts running (looked up every second)?"""
        return self._click_trigger or self._runs_waiting

    def clicks_stored(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """After a batch of clicks was committed (rows as core.tracking writes them)."""
        if not self.listening:
            return
        for row in rows:
            if row.get("contact_id") is not None and not row.get("is_bot"):
                self.publish(
                    ContactEvent(
                        "click",
                        int(row["contact_id"]),
                        _epoch(row.get("clicked_at")),
                        campaign_id=row.get("campaign_id"),
                        message_id=row.get("message_id"),
                    )
                )

    def statuses_stored(self, changes: Sequence[tuple[int, str, str]]) -> None:
        """After a batch of delivery reports moved messages: (message id, old, new) each."""
        if not self._runs_waiting:
            return
        final = [change for change in changes if change[2] in DELIVERY_STATUSES]
        if not final:
            return
        for event in messages_status_changed(self.engine, final):
            if event.contact_id is not None:
                self.publish(
                    ContactEvent(
                        "delivery",
                        event.contact_id,
                        _epoch(event.changed_at),
                        campaign_id=event.campaign_id,
                        message_id=event.message_id,
                        name=event.new_status,
                    )
                )

    @hookimpl
    def on_reply(self, event: ReplyReceived) -> None:
        if event.contact_id is not None:
            self.publish(
                ContactEvent(
                    "reply",
                    event.contact_id,
                    _epoch(event.received_at),
                    campaign_id=event.campaign_id,
                    message_id=event.message_id,
                    name=event.keyword,
                    body=event.body,
                )
            )

    @hookimpl
    def on_conversion(self, event: ConversionRecorded) -> None:
        self.publish(
            ContactEvent(
                "conversion",
                event.contact_id,
                _epoch(event.occurred_at),
                campaign_id=event.campaign_id,
                message_id=event.message_id,
                name=event.name,
                revenue=event.revenue,
            )
        )

    @hookimpl
    def on_contact_created(self, event: ContactCreated) -> None:
        self.publish(ContactEvent("contact_created", event.contact_id, _epoch(event.created_at)))

    @hookimpl
    def on_campaign_status(self, event: CampaignStatusChanged) -> None:
        if event.new_status in FINAL_CAMPAIGN_STATUSES:
            self.publish(
                ContactEvent(
                    CAMPAIGN_END,
                    None,
                    0.0,
                    campaign_id=event.campaign_id,
                    name=event.new_status,
                    body=event.kind,
                )
            )

    # -- what it does (the event loop) ----------------------------------------------------------
    async def _run(self) -> None:
        while not self._closing:
            # (asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancel that
            # comes as the wait ends, and close() would wait for this loop for ever.)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH):
                    await self._wake.wait()
            if time.monotonic() - self._looked_at >= REFRESH:
                await self._refresh()
            if not self._wake.is_set():
                continue
            self._wake.clear()
            await asyncio.sleep(self.interval)  # let a burst gather into one batch
            try:
                await self.flush()
            except Exception:
                log.exception("automation relay batch failed")

    async def _refresh(self) -> None:
        self._looked_at = time.monotonic()
        names = sorted(self.registry.automations())
        try:
            self._runs_waiting = await asyncio.to_thread(runs.any_running_about_contacts, self.engine, names)
        except Exception as exc:  # the database away for a moment: keep listening, to be safe
            self._runs_waiting = True
            log.warning("could not look for running automations", error=str(exc))

    def run_started(self, contact_id: int | None) -> None:
        """A run about a contact started (in this process): its contact's events matter from now."""
        if contact_id is not None:
            self._runs_waiting = True

    def _later(self, automation: Automation, trigger: str, event: ContactEvent, attempt: int) -> None:
        """Try a failed start again after a backoff: that automation's only (the start is
        idempotent: one workflow id per contact or campaign, so a repeat does no harm)."""
        loop = self._loop
        if loop is None:
            return

        def again() -> None:
            self._retrying.append((automation, trigger, event, attempt))
            self._wake.set()

        loop.call_later(min(2.0**attempt, 60.0), again)

    def _take(self) -> list[ContactEvent]:
        with self._lock:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            if self._queue and self._loop is not None:
                self._loop.call_soon(self._wake.set)
        return batch

    async def flush(self) -> None:
        """Relay everything queued now."""
        while (batch := self._take()) or self._retrying:
            await self._relay(batch)

    async def _relay(self, batch: list[ContactEvent]) -> None:
        retrying, self._retrying = self._retrying, []
        if retrying:
            await asyncio.gather(*(self._start(a, t, e, attempt=n) for a, t, e, n in retrying))
        if batch:
            await self._relay_batch(batch)

    async def _relay_batch(self, batch: list[ContactEvent]) -> None:
        contact_ids = {e.contact_id for e in batch if e.contact_id is not None and e.kind != CAMPAIGN_END}
        ended = {e.campaign_id for e in batch if e.kind == CAMPAIGN_END and e.campaign_id is not None}
        by_contact, by_campaign = await asyncio.to_thread(self._targets, contact_ids, ended)
        calls: list[Awaitable[None]] = []
        for event in batch:
            if event.kind == CAMPAIGN_END:
                targets = by_campaign.get(event.campaign_id or 0, [])
            elif event.kind == "contact_created":
                targets = []
            else:
                targets = by_contact.get(event.contact_id or 0, [])
            calls.extend(self._signal(workflow_id, run_id, event) for workflow_id, run_id in targets)
            calls.extend(self._triggered(event))
        if not calls:
            return
        client_calls = asyncio.Semaphore(CONCURRENT_CALLS)

        async def bounded(call: Awaitable[None]) -> None:
            async with client_calls:
                await call

        await asyncio.gather(*(bounded(c) for c in calls))

    def _targets(
        self, contact_ids: set[int], ended: set[int]
    ) -> tuple[dict[int, list[tuple[str, str]]], dict[int, list[tuple[str, str]]]]:
        by_contact: dict[int, list[tuple[str, str]]] = {}
        for contact_id, workflow_id, run_id in runs.running_for_contacts(self.engine, contact_ids):
            by_contact.setdefault(contact_id, []).append((workflow_id, run_id))
        by_campaign: dict[int, list[tuple[str, str]]] = {}
        for campaign_id, workflow_id, run_id in runs.running_about_campaigns(self.engine, ended):
            by_campaign.setdefault(campaign_id, []).append((workflow_id, run_id))
        return by_contact, by_campaign

    async def _signal(self, workflow_id: str, run_id: str, event: ContactEvent) -> None:
        try:
            client = await self.get_client()
            await client.get_workflow_handle(workflow_id, run_id=run_id).signal(EVENT_SIGNAL, event)
            self.signalled += 1
        except Exception as exc:  # ended meanwhile, or Temporal is away: the run checks the record anyway
            log.info("could not signal an automation", workflow_id=workflow_id, error=str(exc))

    def _triggered(self, event: ContactEvent) -> list[Awaitable[None]]:
        trigger = "campaign_completed" if event.kind == CAMPAIGN_END else event.kind
        if trigger == "delivery":
            return []
        if trigger == "campaign_completed" and (
            event.name != CampaignStatus.COMPLETED or event.body != CampaignKind.CAMPAIGN
        ):
            return []
        return [
            self._start(automation, trigger, event)
            for automation in self.registry.automations().values()
            if trigger in automation.triggers
            and automation.trigger_params is not None
            and not (trigger == "conversion" and automation.events and event.name not in automation.events)
        ]

    async def _start(self, automation: Automation, trigger: str, event: ContactEvent, *, attempt: int = 0) -> None:
        if trigger == "campaign_completed":
            workflow_id = self.settings.automation_id(automation.name, f"campaign-{event.campaign_id}")
            contact_id, campaign_id = None, event.campaign_id
        else:
            workflow_id = self.settings.automation_id(automation.name, str(event.contact_id))
            contact_id, campaign_id = event.contact_id, None
        once = trigger in ("contact_created", "campaign_completed")
        params = dict(automation.trigger_params or {})
        if trigger == "campaign_completed" and automation.campaign_param():
            params["campaign_id"] = event.campaign_id
        start = AutomationStart(
            automation.name,
            params=params,
            contact_id=contact_id,
            campaign_id=campaign_id,
            trigger=trigger,
            event=event,
            poll_seconds=self.poll_seconds,
        )
        try:
            client = await self.get_client()
            handle = await client.start_workflow(
                automation.name,
                start,
                id=workflow_id,
                task_queue=self.task_queue,
                id_reuse_policy=(
                    WorkflowIDReusePolicy.REJECT_DUPLICATE if once else WorkflowIDReusePolicy.ALLOW_DUPLICATE
                ),
                start_signal=EVENT_SIGNAL,
                start_signal_args=[event],
            )
        except WorkflowAlreadyStartedError:
            return  # that contact's (or campaign's) run happened already: a no-op
        except Exception as exc:  # Temporal away (or not up yet): the start is tried again, a few times
            attempt += 1
            if attempt > START_ATTEMPTS:
                log.error(
                    "an automation was not started", automation=automation.name, workflow_id=workflow_id, error=str(exc)
                )
                return
            log.warning("could not start an automation; trying again", automation=automation.name, error=str(exc))
            self._later(automation, trigger, event, attempt)
            return
        self.started += 1
        self.run_started(contact_id)
        if handle.result_run_id:
            await asyncio.to_thread(
                runs.record_run,
                self.engine,
                workflow=automation.name,
                workflow_id=workflow_id,
                temporal_run_id=handle.result_run_id,
                params=start.params,
                contact_id=contact_id,
                campaign_id=campaign_id,
                trigger=trigger,
            )
