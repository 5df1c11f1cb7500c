"""The names a message, a campaign and a message's phase can have: defined once, here.

`StrEnum`s, so a member is the string stored in the database and shown by the API
(`MessageStatus.SENT == "sent"`); columns stay plain strings. Standard library only: the
workflow sandbox imports this module too.
"""

from __future__ import annotations

from enum import StrEnum


class MessageStatus(StrEnum):
    """Where a message is on its way to the phone (DESIGN.md "Status rules")."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A status only moves up this order; the last rank is final (terminal).
MESSAGE_RANK: dict[MessageStatus, int] = {
    MessageStatus.QUEUED: 0,
    MessageStatus.SENDING: 1,
    MessageStatus.SENT: 2,
    MessageStatus.DELIVERED: 3,
    MessageStatus.UNDELIVERED: 3,
    MessageStatus.FAILED: 3,
    MessageStatus.CANCELLED: 3,
}
TERMINAL_MESSAGE_STATUSES = frozenset(s for s, rank in MESSAGE_RANK.items() if rank == 3)
# Not yet handed to the provider: what a send activity picks up.
UNSENT_MESSAGE_STATUSES = (MessageStatus.QUEUED, MessageStatus.SENDING)
# Failed for good or for now: what retry-failed looks at and /stats/errors counts.
FAILED_MESSAGE_STATUSES = (MessageStatus.FAILED, MessageStatus.UNDELIVERED)


class CampaignStatus(StrEnum):
    """A campaign's place in its life; moves are in `core.campaigns.lifecycle`."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    WAITING = "waiting"  # an A/B test waits for its results
    HELD = "held"  # an A/B test ended undecided under `fallback: hold`: the remainder waits for a pick
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class CampaignKind(StrEnum):
    """What made a campaign row (API.md "Automations")."""

    CAMPAIGN = "campaign"  # a marketer's, through the API, the CLI or the dashboard
    FOLLOW_UP = "follow_up"  # the built-in follow_up automation's, `parent_id` its parent
    AUTOMATION = "automation"  # any other automation's


class RunStatus(StrEnum):
    """Where an automation run is (API.md "Automations")."""

    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


FINAL_CAMPAIGN_STATUSES = frozenset({CampaignStatus.COMPLETED, CampaignStatus.CANCELLED, CampaignStatus.FAILED})


class Phase(StrEnum):
    """Which send of a campaign a message belongs to."""

    ALL = "all"  # no A/B test: everybody at once
    TEST = "test"  # the A/B test cohort
    REMAINDER = "remainder"  # the rest, after the winner is known
    RETRY = "retry"  # retry-failed resends
    TEST_SEND = "test_send"  # POST /test-send: real sends to the marketer's own phones
    CONTROL = "control"  # held out by the control group: never sent, never counted


# Phases that never count in a campaign's numbers: test sends, and the control group's held-out
# rows (they record who was held out; nothing is sent to them).
UNCOUNTED_PHASES = (Phase.TEST_SEND, Phase.CONTROL)
# Phases whose messages reach the campaign's audience.
AUDIENCE_PHASES = (Phase.ALL, Phase.TEST, Phase.REMAINDER, Phase.RETRY)
