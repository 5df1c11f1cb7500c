"""The honest measure of the per-click bot filters (docs/bots.md): the combined verdict of the
built-in filters, as loaded, over a labelled corpus (tests/data/bots/: user agent, address, times,
headers, each entry with its source). `train.jsonl` is what the defaults were tuned on;
`holdout.jsonl` was written first, from other browser versions, previewers and scanners, and not
looked at while tuning. The aim (issue 14) is precision >= 0.98 and recall >= 0.95 on traffic the
corpus has not seen; the holdout measures 0.9796 and 0.96 (one person flagged among 49 flagged
clicks: at this size one click moves precision by two points, so 0.98 is not yet shown). The test
fails if either falls below what is measured now (precision 0.97, recall 0.95): a regression
guard, not the target; both parts' figures are printed (`pytest tests/test_bot_corpus.py -s`)."""

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
MIN_PRECISION, MIN_RECALL = 0.98, 0.95  # the train part, and the aim
HOLDOUT_PRECISION, HOLDOUT_RECALL = 0.97, 0.95  # the holdout as measured: no regression below it


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
    for part in ("train", "holdout"):
        entries = load(part)
        assert len(entries) >= 50, part
        for entry in entries:
            assert entry["label"] in ("human", "bot"), entry
            assert entry["source"].strip(), entry
            assert entry["method"] in ("GET", "HEAD"), entry
        assert {e["label"] for e in entries} == {"human", "bot"}
    train = {(e["user_agent"], e["ip"]) for e in load("train")}
    assert not train & {(e["user_agent"], e["ip"]) for e in load("holdout")}, "the holdout repeats train entries"


def test_train_part(filters: list[Plain], tmp_path: Path) -> None:
    result = measure("train", filters, tmp_path)
    print("\n" + result.report())
    assert result.precision >= MIN_PRECISION and result.recall >= MIN_RECALL, result.report()


def test_holdout_part(filters: list[Plain], tmp_path: Path) -> None:
    result = measure("holdout", filters, tmp_path)
    print("\n" + result.report())
    assert result.precision >= HOLDOUT_PRECISION, result.report()
    assert result.recall >= HOLDOUT_RECALL, result.report()


def test_fresh_holdout_part(filters: list[Plain], tmp_path: Path) -> None:
    """holdout2.jsonl was written by an engineer who had not read the filters, their lists or the
    other parts, and measured once (docs/bots.md, "A second, fresh holdout"): 0.980 precision,
    0.893 recall. Guarded at that first measurement; the 0.95 recall aim is not met on it yet."""
    result = measure("holdout2", filters, tmp_path)
    print("\n" + result.report())
    assert result.precision >= 0.97, result.report()
    assert result.recall >= 0.88, result.report()
