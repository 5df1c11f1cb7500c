"""The headline figures a bench script writes with `--json PATH`, read by bench/run_all.py.

A figure stands beside its ceiling when the script measures one in the same run (the raw ASGI app
on the same server, say): on a shared machine the ratio and the CPU time are what compare between
runs, not the raw throughput.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    """One headline figure. `ratio` is how close `value` comes to `ceiling`, 1 at the ceiling:
    value / ceiling for rates (req/s), ceiling / value for costs (CPU per request). `value` is
    null when the run could not measure it (the note says why)."""

    figure: str
    value: float | None
    unit: str
    ceiling: float | None = None
    ceiling_name: str | None = None
    ratio: float | None = None
    note: str | None = None


def _finite(number: float | None) -> float | None:
    if number is None or not math.isfinite(number):
        return None
    return number if isinstance(number, int) else float(number)


def write_figures(path: str | None, figures: list[Figure]) -> None:
    """Write `figures` to `path` as a JSON list (nothing when no --json was given)."""
    if path is None:
        return
    rows = []
    for figure in figures:
        row = asdict(figure)
        for name in ("value", "ceiling", "ratio"):
            row[name] = _finite(row[name])
        if figure.value is not None and row["value"] is None:
            row["note"] = "; ".join(part for part in (figure.note, "not measured") if part)
        rows.append(row)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(rows, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
