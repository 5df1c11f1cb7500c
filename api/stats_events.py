"""GET /api/campaigns/{id}/events: the campaign's stats summary as Server-Sent Events.

A `stats` event carries the same JSON as GET /api/campaigns/{id}/stats: one at once, then one
whenever a number (or the campaign's status) changes. The summary is read from the database
about once a second on a worker thread; a big campaign whose summary takes longer is read less
often (twice the time the last read took), so a dashboard left open never keeps the database
busy. A comment line goes out after 15 s without an event, so proxies keep the connection open.
The stream ends when the client goes away (Litestar cancels it) or the campaign disappears.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import cast

import anyio.to_thread
from litestar import Controller, get
from litestar.response import ServerSentEvent, ServerSentEventMessage
from sqlalchemy.engine import Engine

from api.dependencies import Registry
from api.params import Id
from api.schemas.stats import StatsSummary
from core.campaigns.definition import CampaignNotFound, get_campaign
from core.db import session_scope
from core.hooks.registry import PluginRegistry
from core.log import get_logger
from core.stats import summary

log = get_logger("textpulse.api.events")

POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
RETRY_MILLISECONDS = 2000  # how long an EventSource waits before it reconnects


class OpenStreams:
    """How many event streams are being served now (exported by /metrics)."""

    count = 0


def read_summary(engine: Engine, registry: PluginRegistry, campaign_id: int) -> StatsSummary:
    """The summary of GET /api/campaigns/{id}/stats (bot clicks filtered); CampaignNotFound if none."""
    with session_scope(engine, read_only=True) as session:
        campaign = get_campaign(session, campaign_id)
        return cast(
            StatsSummary,
            summary.summary(
                session,
                campaign_id,
                reports_delivery=registry.reports_delivery(campaign.provider),
                unsubscribed_codes=registry.unsubscribed_error_codes(campaign.provider),
            ),
        )


def _numbers(summary: StatsSummary) -> dict[str, object]:
    """What a change is measured on: everything but the time it was read."""
    return {k: v for k, v in summary.items() if k != "updated_at"}


def _stats_event(summary: StatsSummary, *, retry: int | None = None) -> ServerSentEventMessage:
    return ServerSentEventMessage(event="stats", data=json.dumps(summary, separators=(",", ":")), retry=retry)


async def stats_events(
    engine: Engine, registry: PluginRegistry, campaign_id: int, first: StatsSummary
) -> AsyncIterator[ServerSentEventMessage]:
    OpenStreams.count += 1
    try:
        yield _stats_event(first, retry=RETRY_MILLISECONDS)
        last, last_sent = _numbers(first), time.monotonic()
        pause = POLL_SECONDS
        while True:
            await asyncio.sleep(pause)
            started = time.monotonic()
            try:
                summary = await anyio.to_thread.run_sync(read_summary, engine, registry, campaign_id)
            except CampaignNotFound:
                return
            except Exception as exc:  # a database hiccup: try again on the next tick, keep the stream
                log.warning("stats stream read failed", campaign_id=campaign_id, error=str(exc))
                summary = None
            now = time.monotonic()
            pause = max(POLL_SECONDS, 2 * (now - started))
            if summary is not None and _numbers(summary) != last:
                last, last_sent = _numbers(summary), now
                yield _stats_event(summary)
            elif now - last_sent >= KEEPALIVE_SECONDS:
                last_sent = now
                yield ServerSentEventMessage(comment="keep-alive", data=None)
    finally:
        OpenStreams.count -= 1


class StatsEventsController(Controller):
    path = "/campaigns/{campaign_id:int}/events"
    tags = ["stats"]

    @get(
        "/",
        operation_id="campaignStatsEvents",
        media_type="text/event-stream",
        response_description="Server-Sent Events: each `event: stats` carries a StatsSummary as its JSON `data`.",
    )
    async def events(self, engine: Engine, registry: Registry, campaign_id: Id) -> ServerSentEvent:
        """`text/event-stream`: an `event: stats` with the summary at once and on every change;
        `: keep-alive` comments in between. 404 (before any event) for an unknown campaign."""
        first = await anyio.to_thread.run_sync(read_summary, engine, registry, campaign_id)
        return ServerSentEvent(stats_events(engine, registry, campaign_id, first))
