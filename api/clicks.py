"""Per-contact rows of a campaign: its clicks (and their re-scoring), and the CSV export of every message."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, cast

from litestar import Controller, Response, get, post
from litestar.params import Parameter
from litestar.response import Stream
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import col

from api.dependencies import AppSettings, Temporal
from api.paging import page
from api.params import Id, choice, one_of
from api.rescore_jobs import RescoreJob, rescore_state, start_rescore
from api.rows import click_dict
from api.schemas.rows import ClickPage, ClickRow
from core.campaigns.definition import get_campaign, iso, variants_of
from core.db import session_scope
from core.models import Click, Contact, Conversion, Link, Message, Reply
from core.stats.counting import has_retries, superseded
from core.statuses import UNCOUNTED_PHASES

EXPORT_CHUNK = 1000
CLICK_BOTS = ("include", "exclude", "only")
EXPORT_COLUMNS = [
    "message_id",
    "phone",
    "name",
    "variant",
    "phase",
    "status",
    "error_code",
    "error_text",
    "segments",
    "sent_at",
    "delivered_at",
    "failed_at",
    "clicks",
    "bot_clicks",
    "first_click_at",
    "replied",
    "last_reply",
    "conversions",
    "revenue",
    "conversion_events",
    "counted",
]


def safe_cell(value: Any) -> Any:
    """A cell a spreadsheet would run as a formula gets a leading quote (phones too)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def export_rows(engine: Any, campaign_id: int) -> Iterator[str]:
    """The CSV, a chunk of rows at a time: one row per message of the campaign (test sends and the
    control group's held-out rows too, their `phase` says so). Its conversions mean what they mean
    everywhere (API.md "Definitions"), for the one contact of the row: `conversions` 1 when the
    contact converted through this message (an event the campaign counts, attributed to it), else 0;
    `conversion_events` the events; `revenue` their sum. `counted` is 1 when the row counts in the
    campaign's numbers (the latest counted message of its contact: not a held-out control row, not
    a test send, not an attempt a later retry replaced), else 0: summing a column over `counted`
    rows gives a contact once (a contact's conversions may come through an earlier attempt, so
    `conversions` summed over every non-control row can count a contact twice)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    yield buffer.getvalue()
    last_id = 0
    while True:
        buffer.seek(0)
        buffer.truncate()
        with session_scope(engine, read_only=True) as session:
            names = {v.id: v.name for v in variants_of(session, campaign_id)}
            rows = session.execute(
                select(Message, col(Contact.name))
                .outerjoin(Contact, col(Contact.id) == col(Message.contact_id))  # a test send may have none
                .where(col(Message.campaign_id) == campaign_id, col(Message.id) > last_id)
                .order_by(col(Message.id))
                .limit(EXPORT_CHUNK)
            ).all()
            if not rows:
                return
            ids = [m.id for m, _ in rows if m.id is not None]
            replaced: set[int] = set()
            if has_retries(session, campaign_id):  # the attempts a later retry row of their contact replaced
                replaced = {
                    i or 0
                    for i in session.scalars(
                        select(col(Message.id)).where(col(Message.id).in_(ids), superseded(campaign_id))
                    )
                }
            clicks: dict[int, list[Any]] = defaultdict(lambda: [0, 0, None])
            for message_id, is_bot, n, first in session.execute(
                select(col(Click.message_id), col(Click.is_bot), func.count(), func.min(col(Click.clicked_at)))
                .where(col(Click.message_id).in_(ids))
                .group_by(col(Click.message_id), col(Click.is_bot))
            ):
                entry = clicks[message_id]
                if is_bot:
                    entry[1] += n
                else:
                    entry[0] += n
                    entry[2] = first
            replies = {
                r.message_id: r
                for r in session.scalars(
                    select(Reply)
                    .where(col(Reply.message_id).in_(ids), col(Reply.keyword).is_(None))
                    .order_by(col(Reply.id))
                )
            }
            conversions = {
                mid: (n, rev)
                for mid, n, rev in session.execute(
                    select(
                        col(Conversion.message_id), func.count(), func.coalesce(func.sum(col(Conversion.revenue)), 0)
                    )
                    .where(col(Conversion.message_id).in_(ids))
                    .group_by(col(Conversion.message_id))
                )
            }
            for message, name in rows:
                human, bots, first = clicks.get(message.id, (0, 0, None))
                reply = replies.get(message.id)
                events, revenue = conversions.get(message.id, (0, 0))
                writer.writerow(
                    [
                        safe_cell(v)
                        for v in [
                            message.id,
                            message.phone,
                            name,
                            names.get(message.variant_id),
                            message.phase,
                            message.status,
                            message.error_code,
                            message.error_text,
                            message.segments,
                            iso(message.sent_at),
                            iso(message.delivered_at),
                            iso(message.failed_at),
                            human,
                            bots,
                            iso(first),
                            "yes" if reply else "no",
                            reply.body if reply else "",
                            1 if events else 0,  # the row's contact converted through this message
                            revenue,
                            events,
                            1 if message.phase not in UNCOUNTED_PHASES and message.id not in replaced else 0,
                        ]
                    ]
                )
            last_id = ids[-1]
        yield buffer.getvalue()


class ClickController(Controller):
    path = "/campaigns/{campaign_id:int}"
    tags = ["clicks"]

    @get("/clicks", operation_id="listClicks", sync_to_thread=True)
    def clicks(
        self,
        engine: Engine,
        campaign_id: Id,
        bots: str = choice(CLICK_BOTS, default="include", description="include (default) | exclude | only"),
        cursor: str | None = None,
        limit: int = Parameter(default=100, ge=1, le=1000),
    ) -> ClickPage:
        """Every click with who made it, on which link, and the bot verdict with its reasons.
        `bots=exclude` leaves flagged clicks out; `bots=only` shows just them (another value: 400)."""
        one_of("bots", bots, CLICK_BOTS)
        with session_scope(engine, read_only=True) as session:
            get_campaign(session, campaign_id)
            phones: dict[int, str | None] = {}
            message_phones: dict[int, str | None] = {}  # clicks without a contact: their message's phone
            urls = {
                link.id: link.destination
                for link in session.scalars(select(Link).where(col(Link.campaign_id) == campaign_id))
            }
            query = select(Click).where(col(Click.campaign_id) == campaign_id)
            if bots == "exclude":
                query = query.where(col(Click.is_bot).is_(False))
            elif bots == "only":
                query = query.where(col(Click.is_bot).is_(True))

            def phone_of(click: Click) -> str | None:
                if click.contact_id is None:  # a test send to a phone that is no contact
                    if click.message_id not in message_phones:
                        message_phones[click.message_id] = session.scalar(
                            select(col(Message.phone)).where(col(Message.id) == click.message_id)
                        )
                    return message_phones[click.message_id]
                if click.contact_id not in phones:
                    phones[click.contact_id] = session.scalar(
                        select(col(Contact.phone)).where(col(Contact.id) == click.contact_id)
                    )
                return phones[click.contact_id]

            def shape(click: Click) -> ClickRow:
                return cast(ClickRow, click_dict(click, phone_of(click), urls.get(click.link_id)))

            return page(session, query, col(Click.id), cursor, limit, shape)

    @post("/rescore", operation_id="rescoreClicks", status_code=202)
    async def rescore(
        self, engine: Engine, settings: AppSettings, temporal: Temporal, campaign_id: Id
    ) -> Response[RescoreJob]:
        """Start a background job (on a worker, with the worker's bot filters) that judges every
        stored click of the campaign again, each alone then together in time order, a few
        thousand at a time, and writes the verdicts that changed; every count follows. Answers 202
        with the job (`status` running) and `Location` to poll: `GET` on this path. 404 for an
        unknown campaign, 409 while a re-score of it runs, 503 when the workflow service is down.
        `textpulse rescore --campaign ID` does the same in the foreground."""
        job = await start_rescore(engine, settings, temporal, campaign_id)
        location = f"/api/campaigns/{campaign_id}/rescore"
        return Response(job, status_code=202, headers={"Location": location})

    @get("/rescore", operation_id="getRescore")
    async def rescore_job(
        self, engine: Engine, settings: AppSettings, temporal: Temporal, campaign_id: Id
    ) -> RescoreJob:
        """The campaign's latest re-score job: `status` (running | completed | failed | cancelled |
        terminated | timed_out), `progress` {clicks, changed} of the current attempt, `attempt`,
        and once completed `result` {clicks, changed, bots, humans}; once failed, `error`. 404 for
        an unknown campaign or when no re-score was started."""
        return await rescore_state(engine, settings, temporal, campaign_id)

    @get(
        "/export.csv",
        operation_id="exportCampaign",
        sync_to_thread=True,
        media_type="text/csv",
        response_description="CSV (RFC 4180, UTF-8), a header row then one row per message: "
        + ", ".join(EXPORT_COLUMNS),
    )
    def export(self, engine: Engine, campaign_id: Id) -> Response[Any]:
        """One row per message with its clicks, reply and conversions (RFC 4180, UTF-8), streamed."""
        with session_scope(engine, read_only=True) as session:
            get_campaign(session, campaign_id)
        return Stream(
            export_rows(engine, campaign_id),
            media_type="text/csv",
            headers={"content-disposition": f'attachment; filename="campaign-{campaign_id}.csv"'},
        )
