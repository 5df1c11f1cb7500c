"""GET /metrics: Prometheus text exposition (format 0.0.4), written by hand — no client library.

Open like /health (no API key): it holds counts, never contacts or bodies. Counts come from the
database, so every API replica reports the same totals; `textpulse_click_queue_depth` and
`textpulse_event_streams` are this process's own. When the database cannot be read the answer
is still 200 with `textpulse_database_up 0`, so an alert can fire on it rather than on a gap.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anyio.to_thread
from litestar import Response, get
from litestar.datastructures import State
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import col

from api.stats_events import OpenStreams
from core.db import session_scope
from core.log import get_logger
from core.models import Campaign, Click, Conversion, Message, Reply
from core.statuses import CampaignStatus, MessageStatus, Phase

log = get_logger("textpulse.api.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4"  # Litestar adds "; charset=utf-8"
# Every known status is always exported (0 when none), so a series does not vanish and reappear.
CAMPAIGN_STATUSES = tuple(status.value for status in CampaignStatus)
MESSAGE_STATUSES = tuple(status.value for status in MessageStatus)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Exposition:
    """Metric families in the order they are added, each with its HELP and TYPE lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            rendered = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            number = int(value) if float(value).is_integer() else value
            self.lines.append(f"{name}{{{rendered}}} {number}" if rendered else f"{name} {number}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _by_status(known: tuple[str, ...], rows: Iterable[Any]) -> list[tuple[dict[str, str], float]]:
    counts = dict.fromkeys(known, 0) | {str(status): int(n) for status, n in rows}
    return [({"status": status}, n) for status, n in counts.items()]


def _database_families(engine: Engine, out: Exposition) -> None:
    with session_scope(engine, read_only=True) as session:
        campaign_status, message_status, is_bot, keyword = (
            col(Campaign.status),
            col(Message.status),
            col(Click.is_bot),
            col(Reply.keyword),
        )
        campaigns = session.execute(select(campaign_status, func.count()).group_by(campaign_status)).all()
        # The control group's rows are never sent: they are not messages in this sense.
        messages = session.execute(
            select(message_status, func.count()).where(col(Message.phase) != Phase.CONTROL).group_by(message_status)
        ).all()
        by_verdict = session.execute(select(is_bot, func.count()).group_by(is_bot)).all()
        clicks = dict.fromkeys((False, True), 0) | {bool(verdict): int(n) for verdict, n in by_verdict}
        replies = session.scalar(select(func.count()).select_from(Reply).where(keyword.is_(None))) or 0
        keywords = session.scalar(select(func.count()).select_from(Reply).where(keyword.is_not(None))) or 0
        conversions, revenue = session.execute(
            select(func.count(), func.coalesce(func.sum(col(Conversion.revenue)), 0))
        ).one()
    out.family("textpulse_campaigns", "gauge", "Campaigns by status.", _by_status(CAMPAIGN_STATUSES, campaigns))
    out.family(
        "textpulse_messages",
        "gauge",
        "Messages (test sends included, control group not) by delivery status.",
        _by_status(MESSAGE_STATUSES, messages),
    )
    out.family(
        "textpulse_clicks_total",
        "counter",
        "Tracked-link clicks stored, by bot verdict.",
        [({"bot": "false"}, clicks[False]), ({"bot": "true"}, clicks[True])],
    )
    out.family(
        "textpulse_replies_total",
        "counter",
        "Inbound SMS stored, by whether it was a keyword (STOP, HELP...).",
        [({"keyword": "false"}, replies), ({"keyword": "true"}, keywords)],
    )
    out.family("textpulse_conversions_total", "counter", "Conversion events stored.", [({}, int(conversions or 0))])
    out.family(
        "textpulse_conversion_revenue_total",
        "counter",
        "Revenue of the conversion events stored.",
        [({}, float(revenue or 0))],
    )


@get("/metrics", operation_id="metrics", tags=["health"], summary="Prometheus metrics", media_type=CONTENT_TYPE)
async def metrics(state: State) -> Response[str]:
    """Campaigns and messages by status, clicks by bot verdict, replies, conversions, the click queue."""
    out = Exposition()
    out.family("textpulse_up", "gauge", "1 while this API process answers.", [({}, 1)])
    try:
        database = Exposition()
        await anyio.to_thread.run_sync(_database_families, state.engine, database)
        out.lines += database.lines
        database_up = 1
    except Exception as exc:
        log.warning("metrics: database unreadable", error=str(exc))
        database_up = 0
    out.family("textpulse_database_up", "gauge", "1 when the database answered this scrape.", [({}, database_up)])
    out.family(
        "textpulse_click_queue_depth",
        "gauge",
        "Clicks received by this process and not yet written.",
        [({}, state.click_writer.depth)],
    )
    cache = state.code_cache
    out.family(
        "textpulse_redirect_cache_codes", "gauge", "Short codes this process holds in memory.", [({}, len(cache))]
    )
    out.family(
        "textpulse_redirect_codes_preloaded_total",
        "counter",
        "Short codes this process loaded ahead of their first click (messages just sent).",
        [({}, cache.learnt)],
    )
    out.family(
        "textpulse_redirect_cache_misses_total",
        "counter",
        "Clicks whose code was not in memory and was read from the database.",
        [({}, cache.misses)],
    )
    out.family(
        "textpulse_redirect_preload_done",
        "gauge",
        "1 once the codes of recently sent messages are loaded (or no preload is configured).",
        [({}, int(cache.preloaded))],
    )
    out.family(
        "textpulse_event_streams",
        "gauge",
        "Stats event streams (dashboards) this process is serving.",
        [({}, OpenStreams.count)],
    )
    return Response(out.text(), media_type=CONTENT_TYPE)
