"""The honest measure of the per-click bot filters (docs/bots.md): the combined verdict of the
built-in filters, as loaded, over a labelled corpus (tests/data/bots/: user agent, address, times,
headers, each entry with its source).

- `train.jsonl`: what the first defaults were tuned on;
- `holdout.jsonl`: written first, from other sources; one rule was changed after its first run;
- `holdout2.jsonl`: written by an engineer who had not read the filters; its misses suggested the
  rule families added since (data-centre networks, signed user agents), so it is no longer unseen;
- `holdout3.jsonl`: real-world user agents from two maintained lists (tests/data/bots/
  make_holdout3.py), generated before those rule changes and measured once after them, with no
  change since: the unseen part.

The aim (issue 14) is precision >= 0.98 and recall >= 0.95 on traffic the filters have not seen;
every part is held to it, and the test fails if any falls below. `pytest tests/test_bot_corpus.py
-s -p no:xdist` prints each part's figures, misses and wrongly flagged people."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from api.redirect import PURPOSE_HEADERS
from core.db import make_engine
from core.hooks.registry import load_plugins
from core.settings import Settings
from core.tracking.bots import judge_clicks
from core.tracking.clicks import ClickRecord
from core.tracking.codes import CodeTarget

CORPUS = Path(__file__).resolve().parent / "data" / "bots"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TARGET = CodeTarget("Abcdefgh", "https://shop.example/", 1, 1, 1, 1)
MIN_PRECISION, MIN_RECALL = 0.98, 0.95  # the aim, for every part
PARTS = ("train", "holdout", "holdout2", "holdout3")


def load(part: str) -> list[dict[str, Any]]:
    lines = (CORPUS / f"{part}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def record(entry: dict[str, Any]) -> ClickRecord:
    """The click as the redirect would record it: the first purpose header, the method; and the
    message's times as the click writer would fill them in."""
    purpose = next((v for k, v in entry["headers"].items() if k.lower().encode() in PURPOSE_HEADERS), None)
    after_send, after_delivery = entry["seconds_after_send"], entry["seconds_after_delivery"]
    sent_at = None if after_send is None else NOW - timedelta(seconds=after_send)
    delivered_at = None if after_delivery is None else NOW - timedelta(seconds=after_delivery)
    return ClickRecord(
        TARGET._replace(sent_at=sent_at),
        NOW,
        entry["ip"],
        entry["user_agent"],
        None,
        entry["method"] == "HEAD",
        sent_at=sent_at,
        delivered_at=delivered_at,
        purpose=purpose,
    )


@dataclass
class Plain:
    """A filter as judge_clicks calls it, without `needs_message_times`: the corpus brings the
    times (no database to read them from)."""

    name: str
    judge: Any


@dataclass
class Measure:
    part: str
    size: int
    bots: int
    true_positives: int
    false_positives: int
    misses: list[dict[str, Any]]
    wrongly_flagged: list[tuple[dict[str, Any], tuple[str, ...]]]

    @property
    def precision(self) -> float:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.bots if self.bots else 1.0

    def report(self) -> str:
        lines = [
            f"{self.part}: {self.size} clicks ({self.bots} bots, {self.size - self.bots} people): "
            f"precision {self.precision:.3f}, recall {self.recall:.3f}"
        ]
        lines += [f"  missed bot: {e['user_agent']!r} {e['ip']} ({e['source']})" for e in self.misses]
        lines += [f"  person flagged {r}: {e['user_agent']!r} {e['ip']}" for e, r in self.wrongly_flagged]
        return "\n".join(lines)


@pytest.fixture(scope="module")
def filters(tmp_path_factory: pytest.TempPathFactory) -> list[Plain]:
    data_dir = tmp_path_factory.mktemp("corpus")
    settings = Settings.from_env({"TEXTPULSE_DATA_DIR": str(data_dir)})
    registry = load_plugins(settings, config={})
    try:
        return [Plain(f.name, f.judge) for f in registry.bot_filters]
    finally:
        registry.close()


def measure(part: str, filters: list[Plain], tmp_path: Path) -> Measure:
    entries = load(part)
    records = [record(entry) for entry in entries]
    judge_clicks(make_engine(f"sqlite:///{tmp_path}/unused.db"), records, filters)
    result = Measure(part, len(entries), sum(e["label"] == "bot" for e in entries), 0, 0, [], [])
    for entry, judged in zip(entries, records, strict=True):
        flagged = bool(judged.reasons)
        if entry["label"] == "bot":
            result.true_positives += flagged
            if not flagged:
                result.misses.append(entry)
        elif flagged:
            result.false_positives += 1
            result.wrongly_flagged.append((entry, judged.reasons))
    return result


def test_every_entry_is_labelled_and_sourced() -> None:
    seen: dict[tuple[str, str], str] = {}
    for part in PARTS:
        entries = load(part)
        assert len(entries) >= 50, part
        for entry in entries:
            assert entry["label"] in ("human", "bot"), entry
            assert entry["source"].strip(), entry
            assert entry["method"] in ("GET", "HEAD"), entry
        assert {e["label"] for e in entries} == {"human", "bot"}
        for entry in entries:
            key = (entry["user_agent"], entry["ip"])
            assert seen.setdefault(key, part) == part, f"{part} repeats an entry of {seen[key]}: {key}"


@pytest.mark.parametrize("part", PARTS)
def test_the_filters_meet_the_aim_on_each_part(part: str, filters: list[Plain], tmp_path: Path) -> None:
    result = measure(part, filters, tmp_path)
    print("\n" + result.report())
    assert result.precision >= MIN_PRECISION, result.report()
    assert result.recall >= MIN_RECALL, result.report()


def test_the_held_out_parts_together(filters: list[Plain], tmp_path: Path) -> None:
    """All three held-out parts as one sample (816 clicks): the figure docs/bots.md leads with."""
    parts = [measure(part, filters, tmp_path) for part in PARTS[1:]]
    true_positives = sum(p.true_positives for p in parts)
    flagged = true_positives + sum(p.false_positives for p in parts)
    bots = sum(p.bots for p in parts)
    print(f"\nheld out: {sum(p.size for p in parts)} clicks, precision {true_positives / flagged:.4f}, "
          f"recall {true_positives / bots:.4f}")  # fmt: skip
    assert true_positives / flagged >= MIN_PRECISION and true_positives / bots >= MIN_RECALL
