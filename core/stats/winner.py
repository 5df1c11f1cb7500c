"""Picking the A/B winner from the test cohort (docs/ab-testing.md).

`evaluate` runs every `ab_poll_seconds` during the wait and once more at the deadline; the policy
itself is the pure function `decide`, which the simulations (tests/test_ab_simulation.py,
bench/ab_simulation.py) call on the counts of each look. A variant wins early only when all of:
- every variant has `min_sample` delivered (else sent) test messages;
- the split of those messages matches the weights (no sample-ratio mismatch, p ≥ 0.001);
- the always-valid sequential test (mSPRT) rejects equality of the leader with every other
  variant at ALPHA / (variants − 1) (Bonferroni), which holds however often the test is looked at;
- the leader's posterior chance to be best is at least DECISIVE;
- its expected loss is at most MAX_LOSS of its own rate.
Otherwise the wait goes on; at the deadline the fallback decides (send all variants, a named
variant, or hold): a leader short of decisive is never declared the winner.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from core.campaigns.definition import get_campaign, variants_of
from core.db import session_scope
from core.stats import ab, evidence
from core.stats.conversions import conversion_window
from core.stats.evidence import ArmCounts

ALPHA = 0.05  # the sequential test's false-positive budget over the whole wait, however many looks
DECISIVE = 0.95  # the posterior chance to be best a winner needs
MAX_LOSS = 0.005  # the expected loss a winner may carry, as a fraction of its own rate (0.5 %)
MATURITY_SECONDS = 1800.0  # clicks: the default outcome window H, "clicked within 30 min of delivery"
CLICK_METRICS = ("ctr", "unique_clicks")


def maturity(test: dict[str, Any], conversion_window_seconds: float) -> float:
    """The outcome window H the decision compares (docs/ab-testing.md, "Matured outcomes"): a test
    message counts once H has elapsed since its delivery (else send), with what it did within H.
    Clicks: `maturity_seconds` (default 1,800 s), at most half of `wait_seconds`: the wait starts
    once the last test message is sent, so at the deadline the messages delivered in the first
    (wait - H) of it have matured. Conversions and revenue: `maturity_seconds` if set (at most half
    the wait, and the conversion window), else the conversion window itself (72 h by
    default), longer than any usual wait, so that no early decision is taken on a partial count."""
    wait = float(test.get("wait_seconds", 7200))
    given = test.get("maturity_seconds")
    # The wait starts when the last test message is sent: at the deadline the messages delivered
    # in its first (wait - H) have matured. Half the wait at most leaves half of it for that.
    cap = wait / 2
    if str(test.get("metric", "ctr")) in CLICK_METRICS:
        return min(float(given) if given is not None else MATURITY_SECONDS, cap)
    if given is None:
        return conversion_window_seconds
    return min(float(given), cap, conversion_window_seconds)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    return f"{seconds / 60:g} min" if seconds < 7200 else f"{seconds / 3600:g} h"


@dataclass
class Decision:
    decided: bool  # False: keep waiting
    variant: str | None = None  # None with decided=True: all variants (fallback) or hold
    hold: bool = False
    method: str = ""  # bayesian | fallback | manual
    reason: str = ""
    # The figures the decision was made on (see `evidence_of`), kept with the winner so that
    # /stats/variants shows what was decided on, not numbers that moved on since.
    evidence: dict[str, Any] | None = None

    def as_winner(self, metric: str) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "metric": metric,
            "method": self.method,
            "reason": self.reason,
            "hold": self.hold,
        }


def evidence_of(arms: list[ArmCounts], metric: str, *, as_of: datetime, horizon: float | None) -> dict[str, Any]:
    """The decision's evidence as stored with the winner: when, over which maturity window, and per
    variant its matured counts and the statistics (chance to win, expected loss, interval, p-value)."""
    compared = [a for a in arms if not a.is_control]
    figures = {f.variant: f for f in ab.compare(compared, metric)} if compared else {}
    rows = {}
    for arm in compared:
        f = figures.get(arm.variant)
        rows[arm.variant] = {
            "basis": arm.basis,
            "unique_clicks": arm.unique_clicks,
            "converters": arm.converters,
            "revenue": arm.revenue,
            "chance_to_win": f.chance_to_win if f else None,
            "expected_loss": f.expected_loss if f else None,
            "interval": list(f.interval) if f and f.interval is not None else None,
            "p_value": f.p_value if f else None,
        }
    return {"as_of": as_of.isoformat(), "horizon_seconds": horizon, "variants": rows}


@dataclass(frozen=True)
class Verdict:
    """The evidence on the leader: what `decide` weighs, and what its reason says."""

    leader: str
    chance_to_win: float
    expected_loss: float
    relative_loss: float  # expected_loss / the leader's rate (inf when the rate is 0)
    sequential_p: float  # the largest always-valid p-value of the leader against another variant
    alpha: float  # what sequential_p must not exceed: ALPHA / (variants − 1)

    @property
    def decisive(self) -> bool:
        return self.sequential_p <= self.alpha and self.chance_to_win >= DECISIVE and self.relative_loss <= MAX_LOSS


def assess(arms: list[ArmCounts], metric: str) -> Verdict | None:
    """The leader (highest chance to be best, ties by the observed rate: `ab.leader`) among the
    non-control arms that have a denominator, and its evidence; None with fewer than two such arms."""
    competing = [a for a in arms if not a.is_control and (ab.rate(a, metric) is not None)]
    if len(competing) < 2:
        return None
    chances, losses = ab.best_of([ab.posterior(a, metric) for a in competing])
    i = ab.leader(chances, [ab.rate(a, metric) or 0.0 for a in competing])
    leader, others = competing[i], competing[:i] + competing[i + 1 :]
    rate = ab.rate(leader, metric) or 0.0
    return Verdict(
        leader=leader.variant,
        chance_to_win=chances[i],
        expected_loss=losses[i],
        relative_loss=losses[i] / rate if rate > 0 else float("inf"),
        sequential_p=max(ab.sequential_p(leader, other, metric) for other in others),
        alpha=ALPHA / len(others),
    )


def decide(
    arms: list[ArmCounts],
    test: dict[str, Any],
    *,
    weights: dict[str, float],
    at_deadline: bool,
    measured: str = "delivered",
    horizon: float | None = None,
) -> Decision:
    """The policy on one look at the test cohort's counts. `test`: the campaign's `ab_test`
    (metric, min_sample, fallback); `weights`: each variant's weight; `measured`: what `basis`
    counts (delivered, or sent when the provider reports no delivery); `horizon`: the outcome
    window of matured counts (`evidence.matured_arms`), named in the reasons."""
    metric, min_sample = str(test.get("metric", "ctr")), int(test.get("min_sample", 100))
    units = f"{measured} test messages" + (f" at least {_duration(horizon)} old" if horizon is not None else "")
    within = f", outcomes within {_duration(horizon)}" if horizon is not None else ""
    competing = [a for a in arms if not a.is_control]
    split = ab.srm([a.basis for a in competing], [float(weights.get(a.variant, 0.0)) for a in competing])
    short = [a.variant for a in competing if a.basis < min_sample]
    verdict = assess(competing, metric) if len(competing) >= 2 and not short else None
    if len(competing) < 2:
        why = "fewer than two variants to compare"
    elif not split.ok:
        observed = ", ".join(f"{a.variant} {a.basis}" for a in competing)
        why = (
            f"sample ratio mismatch: {units} split {observed} against weights "
            f"{', '.join(f'{weights.get(a.variant, 0.0):g}' for a in competing)} (chi-squared p = "
            f"{split.p_value:.2g} < {ab.SRM_P}), so no winner is picked automatically"
        )
    elif short:
        why = f"fewer than {min_sample} {units} for {', '.join(short)}"
    elif verdict is None:
        why = "no variant could be measured"
    elif verdict.decisive:
        return Decision(
            True,
            verdict.leader,
            method="bayesian",
            reason=(
                f"{verdict.leader} has a {verdict.chance_to_win:.1%} chance to be best on {metric} "
                f"(expected loss {verdict.expected_loss:.4g}, {verdict.relative_loss:.2%} of its rate; "
                f"always-valid p = {verdict.sequential_p:.2g} ≤ {verdict.alpha:.3g}; "
                f"{min_sample}+ {measured} per variant{within})"
            ),
        )
    else:
        why = (
            f"{'the wait ended with ' if at_deadline else ''}no decisive variant ({verdict.leader} leads "
            f"with a {verdict.chance_to_win:.1%} chance to be best on {metric}{within}, always-valid p = "
            f"{verdict.sequential_p:.2g}; a winner needs p ≤ {verdict.alpha:.3g}, a {DECISIVE:.0%} chance "
            f"and an expected loss ≤ {MAX_LOSS:.1%} of its rate)"
        )
    if not at_deadline:
        return Decision(False, reason=why)
    # The wait is over and nothing is decisive: the fallback decides, never the leader.
    fallback = str(test.get("fallback", "send_all_variants"))
    if fallback == "hold":
        return Decision(True, None, hold=True, method="fallback", reason=f"{why}: the remainder is held")
    if fallback.startswith("send_variant:"):
        name = fallback.split(":", 1)[1]
        return Decision(True, name, method="fallback", reason=f"{why}: sending {name} as configured")
    return Decision(True, None, method="fallback", reason=f"{why}: sending all variants by weight")


def evaluate(
    engine: Engine, campaign_id: int, *, reports_delivery: bool, at_deadline: bool, now: datetime | None = None
) -> Decision:
    """One look at a waiting test (the activity `evaluate_test`): the test cohort's matured counts
    (`evidence.matured_arms` over the window `maturity`), the variants' weights, the policy. The
    deadline's look is one more look at the same matured evidence (never the raw counts so far):
    not decisive there, the fallback decides."""
    now = now or datetime.now(UTC)
    with session_scope(engine, read_only=True) as session:
        campaign = get_campaign(session, campaign_id)
        test = campaign.ab_test or {}
        horizon = maturity(test, conversion_window(campaign).total_seconds())
        weights = {v.name: float(v.weight) for v in variants_of(session, campaign_id) if not v.is_control}
        arms = evidence.matured_arms(
            session,
            campaign_id,
            horizon_seconds=horizon,
            now=now,
            reports_delivery=reports_delivery,
        )
    decision = decide(
        arms,
        test,
        weights=weights,
        at_deadline=at_deadline,
        measured="delivered" if reports_delivery else "sent",
        horizon=horizon,
    )
    if not decision.decided or decision.method != "bayesian":  # only the statistics' own pick is kept
        return decision
    metric = str(test.get("metric", "ctr"))
    return replace(decision, evidence=evidence_of(arms, metric, as_of=now, horizon=horizon))
