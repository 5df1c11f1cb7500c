"""The campaign workflow's input from a campaign's settings and the process settings: what the
API's launch and an automation's campaign send both start `campaign-<id>` with."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from core.campaigns.definition import get_campaign
from core.db import session_scope
from core.settings import Settings
from workflows.inputs import CampaignInput


def campaign_input(engine: Engine, settings: Settings, campaign_id: int) -> tuple[CampaignInput, bool]:
    """The workflow's input; and whether it waits for a schedule."""
    with session_scope(engine, read_only=True) as session:
        campaign = get_campaign(session, campaign_id)
    schedule_at = campaign.schedule_at
    if schedule_at is not None and schedule_at.tzinfo is None:
        schedule_at = schedule_at.replace(tzinfo=UTC)
    scheduled = schedule_at is not None and schedule_at > datetime.now(UTC)
    return CampaignInput(
        campaign_id,
        batch_size=settings.batch_size,
        max_concurrent_batches=settings.max_concurrent_batches,
        send_timeout_seconds=settings.send_timeout_seconds,
        heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds,
        status_settle_seconds=float(settings.status_settle_seconds),
        start_at_epoch=schedule_at.timestamp() if scheduled and schedule_at else None,
        ab_wait_seconds=float((campaign.ab_test or {}).get("wait_seconds", 7200)),
        ab_poll_seconds=float(settings.ab_poll_seconds),
        rate_limit_per_second=campaign.rate_limit_per_second,
    ), scheduled
