"""Quiet hours: a daily window, in each recipient's own time zone, when no message is sent.

`{"start": "21:00", "end": "08:00"}` spans midnight; a window with start == end is empty.
A contact without a time zone is taken to be in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from core.zones import zone


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _zone(name: str | None) -> ZoneInfo:
    return zone(name or "UTC") or ZoneInfo("UTC")


def is_quiet(now: datetime, timezone: str | None, window: dict[str, str] | None) -> bool:
    if not window:
        return False
    start, end = _clock(window["start"]), _clock(window["end"])
    local = now.astimezone(_zone(timezone)).time().replace(second=0, microsecond=0)
    if start == end:
        return False
    if start < end:
        return start <= local < end
    return local >= start or local < end


def quiet_until(now: datetime, timezone: str | None, window: dict[str, str] | None) -> datetime:
    """When the window ends for this contact (now, if it is not quiet there); aware UTC."""
    if not is_quiet(now, timezone, window):
        return now
    assert window is not None
    zone = _zone(timezone)
    local = now.astimezone(zone)
    end = _clock(window["end"])
    candidate = local.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
    if candidate <= local:
        candidate += timedelta(days=1)
    # Rebuild in the zone so a DST change between now and then keeps the wall-clock end time.
    naive = candidate.replace(tzinfo=None)
    return naive.replace(tzinfo=zone).astimezone(UTC)
