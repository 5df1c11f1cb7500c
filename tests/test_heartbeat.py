"""The activities' heartbeat is throttled: a batch calls it after every provider call and rendered
chunk, and each call that reaches the SDK wakes the worker's event loop (docs/benchmarks.md,
"Snapshot and send, second round")."""

from __future__ import annotations

import pytest

from workflows import activities


def test_heartbeat_reaches_the_sdk_at_most_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    beats: list[float] = []
    clock = [100.0]
    monkeypatch.setattr(activities.activity, "heartbeat", lambda *details: beats.append(clock[0]))
    monkeypatch.setattr(activities.time, "monotonic", lambda: clock[0])
    heartbeat = activities.Heartbeat()
    heartbeat()  # the first call always goes through
    for _ in range(50):  # many calls within the second: none more
        clock[0] += 0.01
        heartbeat()
    assert beats == [100.0]
    clock[0] = 101.0  # a second after the first
    heartbeat()
    heartbeat()
    assert beats == [100.0, 101.0]
    clock[0] += 5.0  # a long step: the next call goes through at once
    heartbeat()
    assert beats == [100.0, 101.0, 106.0]
