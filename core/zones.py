"""IANA time zone names, as contacts, quiet hours and the stats trend take them.

`ZoneInfo` refuses a name it cannot find with `ZoneInfoNotFoundError` or `ValueError`, but a name
that is a directory of the zone database (`Europe`), too long for a file name, or otherwise not
openable raises `OSError`: every one of them is simply not a time zone.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str) -> ZoneInfo | None:
    """The zone named `name`, or None when no time zone has that name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
