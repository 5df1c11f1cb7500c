"""A click on a tracked link, as the redirect saw it: what bot filters judge and storage writes.

Its way: the redirect (api/redirect.py) makes a `ClickRecord` and queues it on the click writer
(core/tracking/click_writer.py), which stores batches (core/tracking/click_store.py) after the
bot filters judged them (core/tracking/bots.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from core.tracking.codes import CodeTarget


@dataclass(slots=True)
class ClickRecord:
    """A click as the redirect saw it; user agent parsing and bot verdicts come at storage."""

    target: CodeTarget
    clicked_at: datetime
    ip: str | None
    user_agent: str | None
    referer: str | None
    probe: bool = False  # a HEAD request: kept, counted only among raw and bot clicks
    reasons: tuple[str, ...] = ()  # why it is a bot's (none: a person's), final once judged
    bot_score: float = 0.0
    # When its text was sent and delivered: filled in for bot filters that ask for them.
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    # What a `Purpose`, `Sec-Purpose`, `X-Moz` or `X-Purpose` header said (a prefetch, a preview).
    purpose: str | None = None
