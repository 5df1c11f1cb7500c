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
        [--maturity SECONDS]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.figures import Figure, write_figures  # noqa: E402
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


def _starts(rng: np.random.Generator, units: np.ndarray, shift: float, at_looks: np.ndarray, cells: int) -> np.ndarray:
    """Per cell, how many of its `units` (not individually timed) have started at least `shift`
    seconds before each look: a multinomial over the looks with the probability of each interval
    (from a large sample of start times)."""
    last = len(at_looks) - 1
    shares = np.bincount(_look_of(_delivery_times(rng, 400_000) + shift, at_looks), minlength=last + 2) / 400_000
    return np.cumsum(rng.multinomial(units, shares), axis=1)[:, : last + 1].reshape(cells, -1)


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
    delays: list[float] | None = None,
    maturity: float | None = None,
    as_of: bool = False,
) -> Outcome:
    """`runs` tests of len(rates) variants (A, B, ...) of `n` recipients each, equal weights,
    looked at every `poll` seconds from the start of the wait to its end (`wait`).

    `delays`: each variant's median click (conversion) delay, default CLICK_MEDIAN
    (CONVERSION_MEDIAN). The policy sees what production's `winner.evaluate` gives it: the matured
    counts over the window `winner.maturity` computes from the test settings (`maturity`: the
    campaign's `maturity_seconds`; conversions default to a 72 h window); `as_of=True` instead
    counts every event up to the look (the former rule, for comparison)."""
    rng = np.random.default_rng(seed)
    at_looks = np.arange(0.0, wait + poll / 2, poll)
    last = len(at_looks) - 1
    names = [chr(ord("A") + i) for i in range(len(rates))]
    arms, cells = len(rates), runs * len(rates)
    clicks = metric in ("ctr", "unique_clicks")
    test: dict[str, object] = {"metric": metric, "min_sample": min_sample, "fallback": "send_all_variants"}
    test |= {"wait_seconds": wait} | ({"maturity_seconds": maturity} if maturity is not None else {})
    horizon = winner.maturity(test, 72 * 3600.0)
    shift = 0.0 if as_of else horizon
    # Units: the delivered recipients (clicks) or every recipient (conversions), each with a start
    # time (its delivery; the model times conversions from delivery too). Those with an event are
    # timed one by one, the others counted by a multinomial over the looks: the same start-time
    # law, so a look's units and events come from one population.
    units_final = rng.binomial(n, DELIVERY_RATIO, size=cells) if clicks else np.full(cells, n)
    p = np.tile(np.asarray(rates, dtype=float), runs)
    events = rng.binomial(units_final, p)
    cell = np.repeat(np.arange(cells), events)
    medians = np.asarray(delays or [CLICK_MEDIAN if clicks else CONVERSION_MEDIAN] * arms, dtype=float)
    start = _delivery_times(rng, cell.size)
    delay = rng.lognormal(np.log(medians[cell % arms]), DELAY_SIGMA, cell.size)
    if as_of:
        look = _look_of(start + delay, at_looks)
    else:  # counted once matured, if it happened within the window
        look = np.where(delay <= horizon, _look_of(start + horizon, at_looks), last + 1)
    units = _starts(rng, units_final - events, shift, at_looks, cells)
    units += _cumulative(cell, _look_of(start + shift, at_looks), cells, last + 1)
    count = _cumulative(cell, look, cells, last + 1)
    if metric == "revenue":
        value = rng.lognormal(np.log(REVENUE_MEDIAN), REVENUE_SIGMA, cell.size)
        revenue = _cumulative(cell, look, cells, last + 1, value)
        revenue_sq = _cumulative(cell, look, cells, last + 1, value**2)
    else:
        revenue = revenue_sq = np.zeros_like(count, dtype=float)
    units, count = units.reshape(runs, arms, -1), count.reshape(runs, arms, -1)
    revenue, revenue_sq = revenue.reshape(runs, arms, -1), revenue_sq.reshape(runs, arms, -1)
    # The former rule took conversions over every recipient from the start.
    trials = np.full_like(units, n) if as_of and not clicks else units

    candidate = candidates(units, trials, count, revenue, revenue_sq, metric, min_sample)
    out = Outcome(runs)
    weights = dict.fromkeys(names, 1.0)
    for run in np.flatnonzero(candidate.any(axis=1)):
        for k in np.flatnonzero(candidate[run]):
            counts = [
                ArmCounts(
                    variant=names[a],
                    is_control=False,
                    recipients=n if clicks else int(trials[run, a, k]),
                    sent=int(units[run, a, k]),
                    delivered=int(units[run, a, k]),
                    basis=int(units[run, a, k]),
                    unique_clicks=int(count[run, a, k]) if clicks else 0,
                    converters=0 if clicks else int(count[run, a, k]),
                    conversion_events=0 if clicks else int(count[run, a, k]),
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
    basis: np.ndarray,
    trials: np.ndarray,
    count: np.ndarray,
    revenue: np.ndarray,
    revenue_sq: np.ndarray,
    metric: str,
    min_sample: int,
) -> np.ndarray:
    """(runs × looks) True where `decide` could declare a winner: every variant's `basis` at least
    min_sample and some variant's always-valid p-value against every other at most
    ALPHA / (variants − 1). Arrays are (runs × variants × looks); `trials` is the metric's
    denominator (delivered for clicks, recipients for conversions and revenue)."""
    arms = basis.shape[1]
    level = winner.ALPHA / (arms - 1)
    best = np.ones(basis.shape[::2])
    trials = trials.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.maximum(trials, 1.0)
        mean = revenue / n
        var = np.where(trials > 1, np.maximum(0.0, (revenue_sq - revenue * mean) / np.maximum(trials - 1, 1.0)), 0.0)
    for k in range(arms):
        worst = np.zeros_like(best)
        for j in range(arms):
            if j == k:
                continue
            if metric == "revenue":
                ok = (trials[:, k] > 0) & (trials[:, j] > 0)
                diff = mean[:, k] - mean[:, j]
                variance = np.where(ok, var[:, k] / n[:, k] + var[:, j] / n[:, j], 0.0)
                pooled = (revenue[:, k] + revenue[:, j]) / np.maximum(trials[:, k] + trials[:, j], 1.0)
            else:
                diff, variance, pooled = ab.proportion_evidence(count[:, j], trials[:, j], count[:, k], trials[:, k])
            worst = np.maximum(worst, ab.always_valid_p(diff, variance, pooled))
        best = np.minimum(best, worst)
    enough = (basis >= min_sample).all(axis=1)
    return np.asarray((best <= level) & enough)


@dataclass(frozen=True)
class Scenario:
    title: str
    rates: list[float]
    n: int  # recipients per variant
    metric: str = "ctr"
    poll: float = POLL
    delays: list[float] | None = None  # median delay per variant
    maturity: float | None = None  # the campaign's `maturity_seconds`
    as_of: bool = False  # the former rule: counts as of the look


SCENARIOS: list[Scenario] = [
    Scenario("A/A, 2 variants, CTR 10 %", [0.10, 0.10], 8000),
    Scenario("A/A, 2 variants, CTR 10 %, looked at every 10 s", [0.10, 0.10], 8000, poll=10.0),
    Scenario("A/A, 2 variants, CTR 10 %, small test", [0.10, 0.10], 500),
    Scenario("A/A, 2 variants, CTR 40 %", [0.40, 0.40], 8000),
    Scenario("A/A, 3 variants, CTR 10 %", [0.10, 0.10, 0.10], 8000),
    Scenario("A/A, CTR 10 %, B's clicks slower (median 400 s vs 300 s)", [0.10, 0.10], 8000, delays=[300, 400]),
    Scenario("the same, counted as of the look (the former rule)", [0.10, 0.10], 8000, delays=[300, 400], as_of=True),
    Scenario("A/A, CTR 10 %, B's clicks slower (600 s vs 300 s)", [0.10, 0.10], 8000, delays=[300, 600]),
    Scenario("A/A, CTR 10 %, B's clicks slower (900 s vs 300 s)", [0.10, 0.10], 8000, delays=[300, 900]),
    Scenario(
        "A/A, CTR 10 %, B's clicks slower (900 s vs 300 s), maturity 7,200 s",
        [0.10, 0.10],
        8000,
        delays=[300, 900],
        maturity=7200,
    ),
    # B's eventual CTR raised so that its clicks within 1,800 s equal A's: equal on the outcome decided.
    Scenario(
        "A/A on clicks within 30 min, B slower (900 s vs 300 s)",
        [0.10, 0.10 * 0.8840 / 0.6782],
        8000,
        delays=[300, 900],
    ),
    Scenario("A/A, 2 variants, conversions 3 % (default: the 72 h window)", [0.03, 0.03], 8000, "conversions"),
    Scenario("A/A, 2 variants, conversions 3 %, maturity 3,600 s", [0.03, 0.03], 8000, "conversions", maturity=3600),
    Scenario("A/A, 2 variants, revenue (3 % convert), maturity 3,600 s", [0.03, 0.03], 8000, "revenue", maturity=3600),
    Scenario("lift 20 %, CTR 10 % → 12 %", [0.10, 0.12], 2000),
    Scenario("lift 20 %, CTR 10 % → 12 %", [0.10, 0.12], 5000),
    Scenario("lift 20 %, CTR 10 % → 12 % (the documented size)", [0.10, 0.12], 8000),
    Scenario("lift 20 %, CTR 10 % → 12 %", [0.10, 0.12], 12000),
    Scenario("lift 20 %, CTR 10 % → 12 %, B's clicks 1.33× slower", [0.10, 0.12], 8000, delays=[300, 400]),
    Scenario("the same, counted as of the look (the former rule)", [0.10, 0.12], 8000, delays=[300, 400], as_of=True),
    Scenario("lift 20 %, 3 variants, CTR 10, 10, 12 %", [0.10, 0.10, 0.12], 8000),
    Scenario("lift 100 %, CTR 10 % → 20 %, small test", [0.10, 0.20], 300),
    Scenario("lift 20 %, conversions 3 % → 3.6 %, maturity 3,600 s", [0.03, 0.036], 8000, "conversions", maturity=3600),
    Scenario(
        "lift 20 %, revenue (3 % → 3.6 % convert), maturity 3,600 s", [0.03, 0.036], 8000, "revenue", maturity=3600
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kappa", type=float, default=ab.KAPPA, help="the sequential test's mixing spread")
    parser.add_argument("--only", default="", help="run the scenarios whose title contains this")
    parser.add_argument("--maturity", type=float, default=None, help="maturity_seconds for the scenarios that set none")
    parser.add_argument("--json", metavar="PATH", help="also write the headline figures to PATH as JSON")
    args = parser.parse_args()
    headline: list[Figure] = []
    ab.KAPPA = args.kappa
    print(
        f"{args.runs} runs per row (a quarter with 10 s looks), seed {args.seed}, kappa {args.kappa:g}, {WAIT:g} s wait"
    )
    print(
        "| scenario | recipients per variant | metric | runs | winner declared (± s.e.) | right winner | median time |"
    )
    print("|---|---|---|---|---|---|---|")
    for i, sc in enumerate(SCENARIOS):
        if args.only not in sc.title:
            continue
        started = time.perf_counter()
        runs = args.runs if sc.poll >= POLL else max(1, args.runs // 4)  # six times the looks: a quarter of the runs
        out = simulate(
            sc.rates,
            sc.n,
            runs=runs,
            seed=args.seed + i,
            metric=sc.metric,
            poll=sc.poll,
            delays=sc.delays,
            maturity=sc.maturity if sc.maturity is not None else args.maturity,
            as_of=sc.as_of,
        )
        best = max(range(len(sc.rates)), key=lambda k: sc.rates[k])
        right = f"{out.share(chr(ord('A') + best)):.2%}" if len(set(sc.rates)) > 1 else "—"
        when = f"{np.median(out.decided_at):.0f} s" if out.decided_at else "—"
        print(
            f"| {sc.title} | {sc.n:,} | {sc.metric} | {runs:,} | {out.share():.2%} ± {out.error():.2%} | {right} |"
            f" {when} | <!-- {time.perf_counter() - started:.1f} s, {out.decide_calls} decide calls -->",
            flush=True,
        )
        headline.append(
            Figure(
                f"winner declared: {sc.title} — {sc.n:,} per variant, {sc.metric}",
                out.share() * 100,
                "%",
                note=f"± {out.error():.2%}, {runs:,} runs; right winner {right}; median time {when}",
            )
        )
    write_figures(args.json, headline)


if __name__ == "__main__":
    main()
