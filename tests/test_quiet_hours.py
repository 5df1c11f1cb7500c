"""Quiet hours in each recipient's own time zone."""

from __future__ import annotations

from datetime import UTC, datetime

from core.delivery.quiet_hours import is_quiet, quiet_until

NIGHT = {"start": "21:00", "end": "08:00"}
LUNCH = {"start": "12:00", "end": "13:30"}


def test_a_window_across_midnight() -> None:
    assert is_quiet(datetime(2026, 11, 23, 22, 0, tzinfo=UTC), None, NIGHT)
    assert is_quiet(datetime(2026, 11, 23, 7, 59, tzinfo=UTC), "UTC", NIGHT)
    assert not is_quiet(datetime(2026, 11, 23, 8, 0, tzinfo=UTC), "UTC", NIGHT)
    assert not is_quiet(datetime(2026, 11, 23, 20, 59, tzinfo=UTC), "UTC", NIGHT)


def test_the_recipients_zone_decides() -> None:
    noon_utc = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert not is_quiet(noon_utc, "Europe/Berlin", NIGHT)  # 13:00 there
    assert is_quiet(noon_utc, "Asia/Tokyo", NIGHT)  # 21:00 there
    assert is_quiet(noon_utc, "America/Los_Angeles", NIGHT)  # 04:00 there


def test_quiet_until_is_the_end_of_the_window_there() -> None:
    noon_utc = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert quiet_until(noon_utc, "Asia/Tokyo", NIGHT) == datetime(2026, 11, 23, 23, 0, tzinfo=UTC)  # 08:00 JST
    assert quiet_until(noon_utc, "Europe/Berlin", NIGHT) == noon_utc
    assert quiet_until(datetime(2026, 11, 23, 12, 15, tzinfo=UTC), None, LUNCH) == datetime(
        2026, 11, 23, 13, 30, tzinfo=UTC
    )


def test_across_a_daylight_saving_change() -> None:
    # Berlin leaves summer time on 2026-10-25 at 03:00 local: the window still ends at 08:00 local (07:00 UTC).
    evening = datetime(2026, 10, 24, 20, 0, tzinfo=UTC)  # 22:00 CEST
    assert quiet_until(evening, "Europe/Berlin", NIGHT) == datetime(2026, 10, 25, 7, 0, tzinfo=UTC)


def test_no_window_or_an_empty_one_is_never_quiet() -> None:
    now = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
    assert not is_quiet(now, None, None)
    assert not is_quiet(now, None, {"start": "10:00", "end": "10:00"})
