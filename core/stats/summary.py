"""Campaign statistics (API.md "Stats summary" and "Definitions").

The summary's numbers are read from the campaign's tally (core/stats/tallies.py: one row the
database keeps in the transaction of every write to messages, clicks, replies and conversions, so
/stats and its live stream scan none of them); `tallies.recount` computes them from the rows with
the definitions below. Only the opt-outs by an unsubscribed error code (the provider's codes, known
to the app alone) are read on each call, from the campaign's refused messages.

Test sends (phase `test_send`) and held-out controls never count; a retried contact counts once,
by its latest message (core/stats/counting.py), and `attempts` counts every message handed to the
provider. Clicks flagged as bots are left out of the default numbers and shown beside them
(`bots_total`, `raw_*`).

Conversions are the events attributed to the campaign's counted messages (core/stats/conversions.py
attributes only the campaign's `conversion.event`; a held-out contact's event belongs to a control
row and so never counts here): `conversions` = distinct converting contacts, `conversion_events` =
events, `revenue` = their sum. `opt_outs` = distinct contacts who opted out after a message of the
campaign, either way: a STOP (or synonym) reply attributed to the campaign, or the carrier refusing
the campaign's message because the recipient unsubscribed (the provider's `unsubscribed_error_codes`,
e.g. Twilio 21610, at send or in a delivery report: the message row keeps the code, whether or not
the contact opted in again since).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import and_, distinct, func, or_, select
from sqlmodel import Session, col

from core.campaigns.definition import get_campaign, iso
from core.delivery import frequency_cap
from core.models import ERROR_TEXT_KEPT, CampaignError, CampaignResponder, Message, counted_messages, utcnow
from core.stats.counting import counted
from core.stats.tallies import tally
from core.statuses import FAILED_MESSAGE_STATUSES, MessageStatus


def _rate(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 6) if denominator else 0.0


def refused_unsubscribed(session: Session, campaign_id: int, unsubscribed_codes: Collection[str]) -> int:
    """The other half of `opt_outs`, beside the tally's `stoppers` (a STOP reply attributed to the
    campaign): distinct contacts, with no such reply, whose message of the campaign the carrier
    refused with an unsubscribed code, read from the refused rows alone (the index on message
    (campaign_id, error_code) holds only rows with a code)."""
    if not unsubscribed_codes:
        return 0
    stopped = (
        select(1)
        .select_from(CampaignResponder)
        .where(
            col(CampaignResponder.campaign_id) == campaign_id,
            col(CampaignResponder.contact_id) == col(Message.contact_id),
            col(CampaignResponder.stops) > 0,
        )
        .exists()
    )
    refused = select(func.count(distinct(col(Message.contact_id)))).where(
        col(Message.campaign_id) == campaign_id,
        col(Message.error_code).is_not(None),  # the partial index's rows
        col(Message.error_code).in_(sorted(unsubscribed_codes)),
        col(Message.status).in_(FAILED_MESSAGE_STATUSES),
        counted_messages(),
        col(Message.contact_id).is_not(None),
        ~stopped,
    )
    return int(session.scalar(refused) or 0)


def summary(
    session: Session,
    campaign_id: int,
    *,
    reports_delivery: bool = True,
    include_bots: bool = False,
    unsubscribed_codes: Collection[str] = (),
) -> dict[str, Any]:
    """The campaign's numbers (API.md "Stats summary"). `unsubscribed_codes`: the error codes by which
    the campaign's provider says the recipient unsubscribed (they count in `opt_outs`)."""
    campaign = get_campaign(session, campaign_id)
    numbers = tally(session, campaign_id)  # one row, kept by the database (core/stats/tallies.py)
    sent, delivered = numbers.sent, numbers.delivered
    repliers, replies = numbers.repliers, numbers.replies
    opt_outs = numbers.stoppers + refused_unsubscribed(session, campaign_id, unsubscribed_codes)
    converters, conversion_events, revenue = numbers.converters, numbers.conversion_events, numbers.revenue
    basis_name = "delivered" if reports_delivery else "sent"
    basis = delivered if reports_delivery else sent
    unique = numbers.raw_unique if include_bots else numbers.human_unique
    return {
        "campaign_id": campaign_id,
        "status": campaign.status,
        "recipients": max(campaign.recipients, numbers.recipients),
        "attempts": numbers.attempts,
        "queued": numbers.queued,
        "sent": sent,
        "delivered": delivered,
        "undelivered": numbers.undelivered,
        "failed": numbers.failed,
        "delivery_rate": _rate(delivered, sent),
        "clicks": {
            "total": numbers.raw_total if include_bots else numbers.human_total,
            "unique": unique,
            "bots_total": numbers.bots_total,
            "raw_total": numbers.raw_total,
            "raw_unique": numbers.raw_unique,
        },
        "ctr": _rate(unique, basis),
        "ctr_basis": basis_name,
        "replies": replies,
        "reply_rate": _rate(repliers, basis),
        "opt_outs": opt_outs,
        "conversions": converters,
        "conversion_events": conversion_events,
        "revenue": revenue,
        "bots": "included" if include_bots else "excluded",
        "updated_at": iso(utcnow()),
    }


def errors(session: Session, campaign_id: int) -> dict[str, Any]:
    """Messages that failed or went undelivered, and those cancelled over the frequency cap (code
    `frequency_cap`), per error code, with its text (`/stats/errors`).

    `share` is the code's part of those messages (the shares add up to 1); a code reported with
    several texts shows the most frequent one (the first ERROR_TEXT_KEPT characters of it). Test
    sends do not count, and a retried contact counts by its latest message: a failure that a retry
    delivered is no longer listed. Read from `campaign_error` (migration 0015's triggers keep it
    with every write to message); `counted_errors` counts the same from the rows."""
    rows = session.execute(
        select(col(CampaignError.code), col(CampaignError.text), col(CampaignError.messages)).where(
            col(CampaignError.campaign_id) == campaign_id, col(CampaignError.messages) > 0
        )
    ).all()
    return _ranked((code, text or None, int(n)) for code, text, n in rows)


def counted_errors(session: Session, campaign_id: int) -> dict[str, Any]:
    """`errors()` counted from the campaign's messages (what the kept rows are held to)."""
    listed = or_(
        col(Message.status).in_(FAILED_MESSAGE_STATUSES),
        and_(col(Message.status) == MessageStatus.CANCELLED, col(Message.error_code) == frequency_cap.ERROR_CODE),
    )
    failed = and_(counted(session, campaign_id).latest, listed)
    code = func.coalesce(col(Message.error_code), "unknown")
    text_column = func.substr(func.coalesce(col(Message.error_text), ""), 1, ERROR_TEXT_KEPT)
    rows = session.execute(select(code, text_column, func.count()).where(failed).group_by(code, text_column)).all()
    return _ranked((error_code, text or None, int(n)) for error_code, text, n in rows)


def _ranked(rows: Iterable[tuple[str, str | None, int]]) -> dict[str, Any]:
    """Per code: its messages, and its most frequent text (ties: the first in text order)."""
    counts: dict[str, int] = {}
    texts: dict[str, tuple[int, str]] = {}
    for error_code, text, count in sorted(rows, key=lambda r: (r[0], r[1] or "")):
        counts[error_code] = counts.get(error_code, 0) + count
        if text and (error_code not in texts or count > texts[error_code][0]):
            texts[error_code] = (count, text)
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {
        "errors": [
            {"code": c, "text": texts.get(c, (0, None))[1], "count": n, "share": _rate(n, total)} for c, n in ranked
        ]
    }
