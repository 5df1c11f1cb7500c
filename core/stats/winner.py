"""Picking the A/B winner from the test cohort: statistics first, the fallback policy when the
test could not tell (too few delivered messages by the end of the wait)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from core.campaigns.definition import get_campaign
from core.db import session_scope
from core.stats import breakdowns
from core.statuses import Phase

DECISIVE = 0.95  # the chance to be best that ends a test early


@dataclass
class Decision:
    decided: bool  # False: keep waiting
    variant: str | None = None  # None with decided=True: all variants (fallback) or hold
    hold: bool = False
    method: str = ""  # bayesian | fallback | manual
    reason: str = ""

    def as_winner(self, metric: str) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "metric": metric,
            "method": self.method,
            "reason": self.reason,
            "hold": self.hold,
        }


def evaluate(engine: Engine, campaign_id: int, *, reports_delivery: bool, at_deadline: bool) -> Decision:
    with session_scope(engine, read_only=True) as session:
        campaign = get_campaign(session, campaign_id)
        test = campaign.ab_test or {}
        body = breakdowns.variants(session, campaign_id, reports_delivery=reports_delivery, phase=Phase.TEST)
    metric, min_sample = test.get("metric", "ctr"), int(test.get("min_sample", 100))
    measured = "delivered" if reports_delivery else "sent"
    rows = [r for r in body["variants"] if not r["is_control"]]
    short = [r["variant"] for r in rows if r[measured] < min_sample]
    best = max(rows, key=lambda r: r["chance_to_win"] or 0, default=None)
    if best is not None and not short and (best["chance_to_win"] or 0) >= DECISIVE:
        return Decision(
            True,
            best["variant"],
            method="bayesian",
            reason=f"{best['variant']} has a {best['chance_to_win']:.1%} chance to be best on {metric} "
            f"(expected loss {best['expected_loss']:.4f}, {min_sample}+ {measured} per variant)",
        )
    if not at_deadline:
        return Decision(False)
    # The wait is over and nothing is decisive: the fallback decides. A leader short of
    # DECISIVE is a coin flip and is never declared the winner.
    fallback = str(test.get("fallback", "send_all_variants"))
    if short:
        why = f"fewer than {min_sample} {measured} test messages for {', '.join(short)}"
    elif best is None:
        why = "no variant could be measured"
    else:
        why = (
            f"the wait ended with no decisive variant ({best['variant']} leads with a "
            f"{(best['chance_to_win'] or 0):.1%} chance to be best on {metric}, {DECISIVE:.0%} needed)"
        )
    if fallback == "hold":
        return Decision(True, None, hold=True, method="fallback", reason=f"{why}: the remainder is held")
    if fallback.startswith("send_variant:"):
        name = fallback.split(":", 1)[1]
        return Decision(True, name, method="fallback", reason=f"{why}: sending {name} as configured")
    return Decision(True, None, method="fallback", reason=f"{why}: sending all variants by weight")
