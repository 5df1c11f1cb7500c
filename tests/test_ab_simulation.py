"""Seeded simulations of the A/B policy under the real polling schedule (bench/ab_simulation.py
holds the model: a 7,200 s wait looked at every 60 s, deliveries and clicks arriving over it).

Monte Carlo error: a share p measured over R runs has standard error √(p(1 − p)/R). Each bound
below is checked with a margin of several standard errors at the seed used, and the seed is
fixed, so the suite cannot flake; bench/ab_simulation.py measures the same with 20,000 runs.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from bench.ab_simulation import candidates, simulate
from core.stats import winner
from core.stats.evidence import ArmCounts

DOC = (Path(__file__).resolve().parent.parent / "docs" / "ab-testing.md").read_text(encoding="utf-8")


def _se(p: float, runs: int) -> float:
    return math.sqrt(max(p, 1e-3) * (1 - p) / runs)


@pytest.mark.parametrize(
    "rates, n, runs",
    [([0.10, 0.10], 8000, 4000), ([0.10, 0.10], 500, 4000), ([0.40, 0.40], 2000, 2000), ([0.10] * 3, 4000, 1500)],
)
def test_a_and_a_declares_a_winner_in_at_most_5_percent_of_runs(rates: list[float], n: int, runs: int) -> None:
    out = simulate(rates, n, runs=runs, seed=20260101)
    # At most 5 %, with room: the measured share plus four standard errors stays under 5 %.
    assert out.share() + 4 * _se(0.05, runs) <= 0.05, (out.share(), out.winners)


def test_unequal_click_delays_no_longer_make_an_a_and_a_winner() -> None:
    """Same final CTR, B's clicks slower (median 400 s against 300 s): counted as of each look, the
    slower variant trails all through the wait and a winner is declared in about a third of runs;
    on matured outcomes (clicks within 30 min of delivery) it stays under 5 %. (The two rates within
    30 min do differ slightly, 8.84 % against 8.42 %: that is the rest of the share.)"""
    runs = 4000
    matured = simulate([0.10, 0.10], 8000, runs=runs, seed=31, delays=[300, 400])
    assert matured.share() + 4 * _se(0.05, runs) <= 0.05, matured.winners
    as_of = simulate([0.10, 0.10], 8000, runs=500, seed=31, delays=[300, 400], as_of=True)
    assert as_of.share() > 0.2, as_of.winners  # the former rule, for contrast


def test_the_guarantee_holds_on_the_matured_outcome_whatever_the_delays() -> None:
    """B three times slower (900 s against 300 s) and its eventual CTR raised so that its clicks
    within 30 min equal A's: the outcome decided is the same, so A/A, and under 5 %."""
    runs = 3000
    rates = [0.10, 0.10 * 0.88386 / 0.67799]  # Φ(ln(1800/300)/1.5) / Φ(ln(1800/900)/1.5)
    out = simulate(rates, 8000, runs=runs, seed=37, delays=[300, 900])
    assert out.share() + 4 * _se(0.05, runs) <= 0.05, out.winners


def test_conversions_do_not_stop_early_by_default() -> None:
    """Conversions and revenue mature over the conversion window (72 h), longer than the wait: no
    early winner, the deadline's fallback decides."""
    for metric in ("conversions", "revenue"):
        out = simulate([0.03, 0.06], 2000, runs=200, seed=3, metric=metric)
        assert out.share() == 0 and out.decide_calls == 0


@pytest.mark.parametrize("metric", ["conversions", "revenue"])
def test_a_and_a_on_conversions_and_revenue_with_a_short_maturity(metric: str) -> None:
    out = simulate([0.03, 0.03], 8000, runs=3000, seed=7, metric=metric, maturity=3600)
    assert out.share() + 4 * _se(0.05, 3000) <= 0.05, out.winners


def test_a_true_20_percent_lift_is_found_with_the_documented_power() -> None:
    match = re.search(r"\(the documented size\) \| ([\d,]+) \| ctr \| ([\d,]+) \| ([\d.]+)%", DOC)
    assert match, "docs/ab-testing.md has no row for the documented size"
    n, power = int(match.group(1).replace(",", "")), float(match.group(3)) / 100
    runs = 600
    out = simulate([0.10, 0.12], n, runs=runs, seed=5)
    # Within four standard errors of the figure the doc states (measured there over 20,000 runs).
    assert abs(out.share("B") - power) <= 4 * _se(power, runs), (out.share("B"), power)
    assert out.winners.get("A", 0) == 0  # never the worse variant
    # Mostly within the first hour: as soon as the first deliveries have matured (30 min).
    assert 1500 <= np.median(out.decided_at) < 3600


@pytest.mark.parametrize("metric", ["ctr", "conversions", "revenue"])
def test_the_simulation_only_skips_looks_that_cannot_decide(metric: str) -> None:
    """`simulate` calls `decide` only where the vectorised sequential test passes; on random counts
    around the boundary, `decide` never declares a winner where that test fails."""
    rng = np.random.default_rng(1)
    size = 400
    # Rarer events need more units (and larger lifts) to reach the boundary at all.
    units = rng.integers(50, 3000, size=(size, 2, 1)) if metric == "ctr" else rng.integers(2000, 30000, (size, 2, 1))
    base = rng.uniform(0.05, 0.2, size=(size, 1, 1)) if metric == "ctr" else rng.uniform(0.02, 0.06, (size, 1, 1))
    spread = (0.8, 1.25) if metric == "ctr" else (0.6, 1.6)
    count = rng.binomial(units, base * rng.uniform(*spread, (size, 2, 1)))
    # Revenue: each converter's order values summed (log-normal, median 40), and their squares.
    revenue, revenue_sq = np.zeros(units.shape), np.zeros(units.shape)
    if metric == "revenue":
        for index in np.ndindex(units.shape):
            values = rng.lognormal(np.log(40), 1.0, count[index])
            revenue[index], revenue_sq[index] = values.sum(), (values**2).sum()
    passes = candidates(units, units, count, revenue, revenue_sq, metric, 100)[:, 0]
    declared = 0
    for i in range(size):
        arms = [
            ArmCounts(
                name,
                False,
                recipients=int(u),
                delivered=int(u),
                basis=int(u),
                unique_clicks=int(c) if metric == "ctr" else 0,
                converters=0 if metric == "ctr" else int(c),
                revenue=float(r),
                revenue_sq=float(r2),
            )
            for name, u, c, r, r2 in zip(
                "AB", units[i, :, 0], count[i, :, 0], revenue[i, :, 0], revenue_sq[i, :, 0], strict=True
            )
        ]
        test = {"min_sample": 100, "metric": metric}
        decision = winner.decide(arms, test, weights={"A": 1, "B": 1}, at_deadline=False)
        declared += decision.decided
        assert passes[i] or not decision.decided
    assert 0 < declared < size and passes.sum() >= declared
