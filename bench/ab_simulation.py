"""How often the A/B policy declares a winner: A/A tests (false positives) and true lifts (power),
under the real polling schedule (docs/ab-testing.md has the figures and the model).

The model of one test cohort (each variant `n` recipients):
- the test messages go out over `send_seconds` (300 s) before the wait starts (t = 0); each is
  delivered (95 %) after an exponential lag of mean 20 s;
- a delivered recipient clicks with probability `rate` (the variant's true CTR), after a
  log-normal delay (median 300 s, σ 1.5: 98 % of eventual clicks within the 2 h wait);
  conversions (metric `conversions`, `revenue`) alike with a median of 1,800 s; revenue per
  conversion is log-normal (median 40, σ 1: heavy-tailed, mean 66);
- the policy (`core.stats.winner.decide`, the production function) looks at the counts at
  t = 0, 60, ..., 7200 s (`TEXTPULSE_AB_POLL_SECONDS` 60, `wait_seconds` 7200); the last look is
  the deadline. A run ends at the first look that decides.

Counts are drawn vectorised for every run and look at once. `decide` is called at each look where
its sequential test can pass (the always-valid p-value of some variant against every other at
most ALPHA / (variants − 1), computed vectorised with the same function `decide` uses), in time
order, until it decides: a look where that test fails cannot decide anything but the fallback.

    .venv/bin/python bench/ab_simulation.py [--runs 20000] [--seed 1] [--kappa 0.3] [--only "lift"]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.stats import ab, winner  # noqa: E402
from core.stats.evidence import ArmCounts  # noqa: E402

WAIT, POLL = 7200.0, 60.0  # the defaults: `wait_seconds`, TEXTPULSE_AB_POLL_SECONDS
DELIVERY_RATIO, SEND_SECONDS, DELIVERY_LAG = 0.95, 300.0, 20.0
CLICK_MEDIAN, CONVERSION_MEDIAN, DELAY_SIGMA = 300.0, 1800.0, 1.5
REVENUE_MEDIAN, REVENUE_SIGMA = 40.0, 1.0


@dataclass
class Outcome:
    runs: int
    winners: dict[str, int] = field(default_factory=dict)  # variant → runs it won
    decided_at: list[float] = field(default_factory=list)  # seconds into the wait, per winning run
    decide_calls: int = 0

    def share(self, variant: str | None = None) -> float:
        won = sum(self.winners.values()) if variant is None else self.winners.get(variant, 0)
        return won / self.runs

    def error(self, variant: str | None = None) -> float:
        """The Monte Carlo standard error of `share`."""
        p = self.share(variant)
        return float(np.sqrt(p * (1 - p) / self.runs))


def _delivery_times(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.uniform(-SEND_SECONDS, 0.0, size) + rng.exponential(DELIVERY_LAG, size)


def _look_of(times: np.ndarray, looks: np.ndarray) -> np.ndarray:
    """The index of the first look that sees an event at `times` (len(looks): after the deadline)."""
    return np.searchsorted(looks, times, side="left")


def _cumulative(
    index: np.ndarray, look: np.ndarray, cells: int, looks: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Per cell (run × arm), the running total at each look of events (cell `index`, look `look`)."""
    bins = looks + 1
    counts = np.bincount(index * bins + look, weights=weights, minlength=cells * bins)
    return np.cumsum(counts.reshape(cells, bins), axis=1)[:, :looks]


def simulate(
    rates: list[float],
    n: int,
    *,
    runs: int,
    seed: int,
    metric: str = "ctr",
    min_sample: int = 100,
    wait: float = WAIT,
    poll: float = POLL,
) -> Outcome:
    """`runs` tests of len(rates) variants (A, B, ...) of `n` recipients each, equal weights,
    looked at every `poll` seconds from the start of the wait to its end (`wait`)."""
    rng = np.random.default_rng(seed)
    at_looks = np.arange(0.0, wait + poll / 2, poll)
    last = len(at_looks) - 1
    names = [chr(ord("A") + i) for i in range(len(rates))]
    arms, cells = len(rates), runs * len(rates)
    # Deliveries: how many, and when (the probability of each look's interval, from a large sample).
    delivered_final = rng.binomial(n, DELIVERY_RATIO, size=cells)
    shares = np.bincount(_look_of(_delivery_times(rng, 400_000), at_looks), minlength=last + 2) / 400_000
    delivered = np.cumsum(rng.multinomial(delivered_final, shares), axis=1)[:, : last + 1]
    # Events (clicks or conversions): who, when, and what they are worth.
    base = delivered_final if metric in ("ctr", "unique_clicks") else np.full(cells, n)
    p = np.tile(np.asarray(rates, dtype=float), runs)
    events = rng.binomial(base, p)
    cell = np.repeat(np.arange(cells), events)
    median = CLICK_MEDIAN if metric in ("ctr", "unique_clicks") else CONVERSION_MEDIAN
    at = _delivery_times(rng, cell.size) + rng.lognormal(np.log(median), DELAY_SIGMA, cell.size)
    look = _look_of(at, at_looks)
    count = _cumulative(cell, look, cells, last + 1)
    if metric == "revenue":
        value = rng.lognormal(np.log(REVENUE_MEDIAN), REVENUE_SIGMA, cell.size)
        revenue = _cumulative(cell, look, cells, last + 1, value)
        revenue_sq = _cumulative(cell, look, cells, last + 1, value**2)
    else:
        revenue = revenue_sq = np.zeros_like(count, dtype=float)
    delivered = np.minimum(delivered.reshape(runs, arms, -1), n)
    count = count.reshape(runs, arms, -1)
    if metric in ("ctr", "unique_clicks"):
        count = np.minimum(count, delivered)
    revenue, revenue_sq = revenue.reshape(runs, arms, -1), revenue_sq.reshape(runs, arms, -1)

    candidate = candidates(delivered, count, revenue, revenue_sq, n, metric, min_sample)
    out = Outcome(runs)
    test = {"metric": metric, "min_sample": min_sample, "fallback": "send_all_variants"}
    weights = dict.fromkeys(names, 1.0)
    for run in np.flatnonzero(candidate.any(axis=1)):
        for k in np.flatnonzero(candidate[run]):
            counts = [
                ArmCounts(
                    variant=names[a],
                    is_control=False,
                    recipients=n,
                    sent=n,
                    delivered=int(delivered[run, a, k]),
                    basis=int(delivered[run, a, k]),
                    unique_clicks=int(count[run, a, k]) if metric in ("ctr", "unique_clicks") else 0,
                    converters=int(count[run, a, k]) if metric in ("conversions", "revenue") else 0,
                    conversion_events=int(count[run, a, k]) if metric in ("conversions", "revenue") else 0,
                    revenue=float(revenue[run, a, k]),
                    revenue_sq=float(revenue_sq[run, a, k]),
                )
                for a in range(arms)
            ]
            out.decide_calls += 1
            decision = winner.decide(counts, test, weights=weights, at_deadline=k == last)
            if decision.decided:
                if decision.method == "bayesian" and decision.variant:
                    out.winners[decision.variant] = out.winners.get(decision.variant, 0) + 1
                    out.decided_at.append(float(at_looks[k]))
                break
    return out


def candidates(
    delivered: np.ndarray,
    count: np.ndarray,
    revenue: np.ndarray,
    revenue_sq: np.ndarray,
    n: int,
    metric: str,
    min_sample: int,
) -> np.ndarray:
    """(runs × looks) True where `decide` could declare a winner: min_sample met and some variant's
    always-valid p-value against every other at most ALPHA / (variants − 1)."""
    arms = delivered.shape[1]
    level = winner.ALPHA / (arms - 1)
    best = np.ones(delivered.shape[::2])
    for k in range(arms):
        worst = np.zeros_like(best)
        for j in range(arms):
            if j == k:
                continue
            if metric == "revenue":
                mean_k, mean_j = revenue[:, k] / n, revenue[:, j] / n
                var_k = np.maximum(0.0, (revenue_sq[:, k] - revenue[:, k] * mean_k) / (n - 1))
                var_j = np.maximum(0.0, (revenue_sq[:, j] - revenue[:, j] * mean_j) / (n - 1))
                diff, variance, pooled = mean_k - mean_j, (var_k + var_j) / n, (revenue[:, k] + revenue[:, j]) / (2 * n)
            else:
                trials_k = delivered[:, k] if metric in ("ctr", "unique_clicks") else np.full_like(delivered[:, k], n)
                trials_j = delivered[:, j] if metric in ("ctr", "unique_clicks") else np.full_like(delivered[:, j], n)
                diff, variance, pooled = ab.proportion_evidence(count[:, j], trials_j, count[:, k], trials_k)
            worst = np.maximum(worst, ab.always_valid_p(diff, variance, pooled))
        best = np.minimum(best, worst)
    enough = (delivered >= min_sample).all(axis=1)
    return np.asarray((best <= level) & enough)


# (title, true rates, recipients per variant, metric, seconds between looks)
SCENARIOS: list[tuple[str, list[float], int, str, float]] = [
    ("A/A, 2 variants, CTR 10 %", [0.10, 0.10], 8000, "ctr", POLL),
    ("A/A, 2 variants, CTR 10 %, looked at every 10 s", [0.10, 0.10], 8000, "ctr", 10.0),
    ("A/A, 2 variants, CTR 10 %, small test", [0.10, 0.10], 500, "ctr", POLL),
    ("A/A, 2 variants, CTR 40 %", [0.40, 0.40], 8000, "ctr", POLL),
    ("A/A, 3 variants, CTR 10 %", [0.10, 0.10, 0.10], 8000, "ctr", POLL),
    ("A/A, 2 variants, conversions 3 %", [0.03, 0.03], 8000, "conversions", POLL),
    ("A/A, 2 variants, revenue (3 % convert)", [0.03, 0.03], 8000, "revenue", POLL),
    ("lift 20 %, CTR 10 % → 12 %", [0.10, 0.12], 2000, "ctr", POLL),
    ("lift 20 %, CTR 10 % → 12 %", [0.10, 0.12], 5000, "ctr", POLL),
    ("lift 20 %, CTR 10 % → 12 % (the documented size)", [0.10, 0.12], 8000, "ctr", POLL),
    ("lift 20 %, CTR 10 % → 12 %", [0.10, 0.12], 12000, "ctr", POLL),
    ("lift 20 %, 3 variants, CTR 10, 10, 12 %", [0.10, 0.10, 0.12], 8000, "ctr", POLL),
    ("lift 100 %, CTR 10 % → 20 %, small test", [0.10, 0.20], 300, "ctr", POLL),
    ("lift 20 %, conversions 3 % → 3.6 %", [0.03, 0.036], 8000, "conversions", POLL),
    ("lift 20 %, revenue (3 % → 3.6 % convert)", [0.03, 0.036], 8000, "revenue", POLL),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kappa", type=float, default=ab.KAPPA, help="the sequential test's mixing spread")
    parser.add_argument("--only", default="", help="run the scenarios whose title contains this")
    args = parser.parse_args()
    ab.KAPPA = args.kappa
    print(
        f"{args.runs} runs per row (a quarter with 10 s looks), seed {args.seed}, kappa {args.kappa:g}, {WAIT:g} s wait"
    )
    print(
        "| scenario | recipients per variant | metric | runs | winner declared (± s.e.) | right winner | median time |"
    )
    print("|---|---|---|---|---|---|---|")
    for i, (title, rates, n, metric, poll) in enumerate(SCENARIOS):
        if args.only not in title:
            continue
        started = time.perf_counter()
        runs = args.runs if poll >= POLL else max(1, args.runs // 4)  # six times the looks: a quarter of the runs
        out = simulate(rates, n, runs=runs, seed=args.seed + i, metric=metric, poll=poll)
        best = max(range(len(rates)), key=lambda k: rates[k])
        right = f"{out.share(chr(ord('A') + best)):.2%}" if len(set(rates)) > 1 else "—"
        when = f"{np.median(out.decided_at):.0f} s" if out.decided_at else "—"
        print(
            f"| {title} | {n:,} | {metric} | {runs:,} | {out.share():.2%} ± {out.error():.2%} | {right} | {when} |"
            f" <!-- {time.perf_counter() - started:.1f} s, {out.decide_calls} decide calls -->",
            flush=True,
        )


if __name__ == "__main__":
    main()
