"""Engagement audiences: the contacts who did (or did not) engage with an earlier campaign.

An audience `{"campaign": 7, "engagement": "clicked"}` (API.md "Campaign body") picks among the
recipients of campaign 7, evaluated when the audience is read (at snapshot time, for the built-in
`follow_up` automation as for a marketer's campaign):
- the recipients: contacts with at least one message of the campaign in an audience phase
  (`AUDIENCE_PHASES`: all, test, remainder, retry; never test_send or control) whose status is sent
  or delivered (handed to the provider and not known to have failed). A contact whose every message
  failed, was undelivered, cancelled or is still queued is no recipient;
- `clicked`: recipients with at least one click that is not a bot's (`Click.is_bot` false) on a
  message of the campaign in an audience phase (a click on a test send is the marketer's own);
  `not_clicked`: the other recipients;
- `replied`: recipients with a reply attributed to the campaign (`Reply.campaign_id`), keywords
  such as STOP included; `not_replied`: the other recipients;
- `converted`: recipients with a conversion attributed to the campaign whose name is the
  campaign's conversion event (`conversion.event`, default `purchase`: core/stats/conversions.py
  `conversion_event`); `not_converted`: the other recipients.
Opted-out contacts are left out of every audience by `iter_audience`, which adds the condition
here to its query: each one is an EXISTS / NOT EXISTS subquery correlated with the contact row, so
the audience streams in contact id order, chunk by chunk, whatever the size of either campaign.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from sqlalchemy import and_, exists, false, not_, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col

from core.db import session_scope
from core.models import Campaign, Click, Contact, Conversion, Message, Reply
from core.statuses import AUDIENCE_PHASES, MessageStatus

Engagement = Literal["clicked", "not_clicked", "replied", "not_replied", "converted", "not_converted"]
ENGAGEMENTS: tuple[str, ...] = get_args(Engagement)

# Handed to the provider and not known to have failed.
RECEIVED_STATUSES = (MessageStatus.SENT, MessageStatus.DELIVERED)


def _audience_messages(campaign_id: int) -> ColumnElement[bool]:
    """The contact's messages of the campaign that went to its audience (by ix_message_contact_id)."""
    return and_(
        col(Message.contact_id) == col(Contact.id),
        col(Message.campaign_id) == campaign_id,
        col(Message.phase).in_(AUDIENCE_PHASES),
    )


def recipient_condition(campaign_id: int) -> ColumnElement[bool]:
    """The contact received a message of the campaign (see the module docstring)."""
    return exists(
        select(col(Message.id)).where(_audience_messages(campaign_id), col(Message.status).in_(RECEIVED_STATUSES))
    )


def _clicked(campaign_id: int) -> ColumnElement[bool]:
    return exists(
        select(col(Click.id))
        .join(Message, col(Click.message_id) == col(Message.id))
        .where(_audience_messages(campaign_id), col(Click.is_bot).is_(False))
    )


def _replied(campaign_id: int) -> ColumnElement[bool]:
    return exists(
        select(col(Reply.id)).where(col(Reply.contact_id) == col(Contact.id), col(Reply.campaign_id) == campaign_id)
    )


def _converted(campaign_id: int, conversion_event: str) -> ColumnElement[bool]:
    return exists(
        select(col(Conversion.id)).where(
            col(Conversion.contact_id) == col(Contact.id),
            col(Conversion.campaign_id) == campaign_id,
            col(Conversion.name) == conversion_event,
        )
    )


def engagement_condition(campaign_id: int, engagement: str, conversion_event: str) -> ColumnElement[bool]:
    """A condition over Contact: a recipient of `campaign_id` who did (or, `not_*`, did not) engage."""
    if engagement not in ENGAGEMENTS:
        raise ValueError(f"engagement {engagement!r} is not one of {', '.join(ENGAGEMENTS)}")
    kind = engagement.removeprefix("not_")
    if kind == "clicked":
        engaged = _clicked(campaign_id)
    elif kind == "replied":
        engaged = _replied(campaign_id)
    else:
        engaged = _converted(campaign_id, conversion_event)
    return and_(recipient_condition(campaign_id), engaged if kind == engagement else not_(engaged))


def audience_condition(session: Session, audience: Mapping[str, Any]) -> ColumnElement[bool] | None:
    """The condition of an engagement audience (`campaign` + `engagement`); None for any other
    audience. A campaign that is gone matches nobody."""
    if audience.get("campaign") is None:
        return None
    # Imported here: core.stats.conversions imports core.campaigns.definition, which imports us.
    from core.stats.conversions import conversion_event

    campaign = session.get(Campaign, int(audience["campaign"]))
    if campaign is None:
        return false()
    return engagement_condition(campaign.id or 0, str(audience["engagement"]), conversion_event(campaign))


def check_audience_campaign(engine: Engine, campaign_id: int | None) -> None:
    """Raise CampaignInvalid (422) when an engagement audience names a campaign that does not exist."""
    if campaign_id is None:
        return
    with session_scope(engine, read_only=True) as session:
        found = session.get(Campaign, campaign_id) is not None
    if not found:
        # Imported here: core.campaigns.definition imports this module.
        from core.campaigns.definition import CampaignInvalid

        raise CampaignInvalid(f"audience.campaign {campaign_id} does not exist")
