"""/stats/variants: each variant side by side, "all variants" (a contact once), the control group
with each variant's uplift over it, the sample-ratio check, and the winner with why (API.md
"Shapes shared by the routes").

The counts come from `core.stats.evidence` for the messages `?phase` asks for (`all` by default).
The statistics (`chance_to_win`, `expected_loss`, `interval`, `p_value`) always describe the
evidence the decision used, whatever `?phase`: the test cohort of an A/B campaign, the whole
audience otherwise; they are null where nothing is compared (one variant) and where contacts were
not placed at random (`variant_by_attribute` without an A/B test: the groups differ by the
attribute, so a chance to win would compare audiences, not messages; with an A/B test the test
cohort is split by weight, at random, and keeps its figures).

The uplift compares the row's contacts (of the phase shown) with the whole control group (held out
from the whole audience before the test split, so it is a fair baseline for the test cohort, the
remainder and both together) on an intention-to-treat basis (core/stats/evidence.py
`intention_to_treat`): every contact of each side, sent or not, and whether it had an event named by
the campaign's `conversion.event` within its window from its touch, whoever the event is
attributed to. The control row's `conversions`, `conversion_events`, `conversion_rate` and `revenue`
are those counts too; a variant row's own `conversions` and `conversion_rate` stay the attributed
ones (this campaign's conversions, as the summary counts them), so `uplift.absolute` is not always
the row's `conversion_rate` minus the control's. The control row's `ctr` is null (nothing sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from core.campaigns.definition import get_campaign, variants_of
from core.errors import BadParameter
from core.models import Campaign, Variant
from core.stats import ab, evidence
from core.stats.evidence import ArmCounts
from core.statuses import Phase

PHASES = ("test", "remainder", "all")


class PhaseError(BadParameter):
    """`?phase` names no phase the route counts."""


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def counts(arm: ArmCounts) -> dict[str, Any]:
    """The count fields of a row: `ctr` over delivered (else sent; null for the control row, sent
    nothing), `conversion_rate` over recipients."""
    return {
        "recipients": arm.recipients,
        "sent": arm.sent,
        "delivered": arm.delivered,
        "unique_clicks": arm.unique_clicks,
        "ctr": None if arm.is_control else _rate(arm.unique_clicks, arm.basis),
        "conversions": arm.converters,
        "conversion_events": arm.conversion_events,
        "conversion_rate": _rate(arm.converters, arm.recipients),
        "revenue": arm.revenue,
    }


@dataclass(frozen=True)
class _Figures:
    """A variant's statistics as the winner's stored evidence has them."""

    chance_to_win: float | None
    expected_loss: float | None
    interval: list[float] | None
    p_value: float | None


def _uplift(treatment: ArmCounts, control: ArmCounts) -> dict[str, Any] | None:
    if not treatment.recipients or not control.recipients:
        return None  # nothing to compare yet
    u = ab.uplift(treatment, control)
    return {
        "absolute": u.absolute,
        "relative": u.relative,
        "interval": list(u.interval) if u.interval is not None else None,
        "chance_better": u.chance_better,
    }


def variants(
    session: Session, campaign_id: int, *, reports_delivery: bool = True, phase: str | None = None
) -> dict[str, Any]:
    """The body of GET /api/campaigns/{id}/stats/variants (`phase`: test | remainder | all)."""
    phase = phase or "all"
    if phase not in PHASES:
        raise PhaseError(
            f"phase must be one of {', '.join(PHASES)}; got {phase!r}",
            extra={"parameter": "phase", "allowed": list(PHASES)},
        )
    campaign = get_campaign(session, campaign_id)
    metric = str((campaign.ab_test or {}).get("metric", "ctr"))
    listed = variants_of(session, campaign_id)
    shown, everyone, itt = evidence.arms_overall_and_itt(
        session, campaign_id, phase=phase, reports_delivery=reports_delivery, variants=listed
    )
    basis = str(Phase.TEST) if campaign.ab_test else "all"
    decided_on = (
        shown if basis == phase else evidence.arms(session, campaign_id, phase=basis, reports_delivery=reports_delivery)
    )
    compared = [a for a in decided_on if not a.is_control]
    randomised = not (campaign.variant_by_attribute and not campaign.ab_test)
    figures: dict[str, _Figures] = {}
    decided = (campaign.winner or {}).get("evidence")
    if decided and randomised:  # the statistics as they were when they named the winner
        for name, kept in decided["variants"].items():
            figures[name] = _Figures(kept["chance_to_win"], kept["expected_loss"], kept["interval"], kept["p_value"])
    elif compared and randomised:
        for f in ab.compare(compared, metric):
            interval = list(f.interval) if f.interval is not None else None
            figures[f.variant] = _Figures(f.chance_to_win, f.expected_loss, interval, f.p_value)
    control = next((a for a in shown if a.is_control), None)

    rows = []
    for arm in shown:
        row: dict[str, Any] = {"variant": arm.variant, "is_control": arm.is_control, **counts(arm)}
        s = None if arm.is_control else figures.get(arm.variant)
        row["chance_to_win"] = s.chance_to_win if s else None
        row["expected_loss"] = s.expected_loss if s else None
        row["interval"] = s.interval if s else None
        row["p_value"] = s.p_value if s else None
        if control is not None and not arm.is_control:
            row["uplift"] = _uplift(itt.get(arm.variant, arm), itt.get(control.variant, control))
        rows.append(row)

    return {
        "metric": metric,
        "phase": phase,
        "evidence": basis,
        # Set once the statistics named a winner: when, and over which maturity window; the rows'
        # chance_to_win, expected_loss, interval and p_value are then those of that moment.
        "decided_on": {"as_of": decided["as_of"], "horizon_seconds": decided["horizon_seconds"]}
        if decided and randomised
        else None,
        "variants": rows,
        "all_variants": counts(everyone),
        "winner": campaign.winner,
        "srm": _srm(campaign, listed, compared),
    }


def _srm(campaign: Campaign, variants: list[Variant], compared: list[ArmCounts]) -> dict[str, Any]:
    """The observed split of `compared` (the decision's evidence) against the variants' weights.
    Nothing to check (p_value null, ok) with fewer than two variants, before anything is placed, or
    when contacts are placed by an attribute rather than by weight (`variant_by_attribute` without
    an A/B test; with one, the test cohort is still split by weight). The split observed is of the
    delivered (else sent) messages, as the decision checks it (core/stats/ab.py `decide`): the
    recipients are split by weight exactly, by construction, so only what reached them can drift."""
    observed = [a.basis for a in compared]
    if len(compared) < 2 or sum(observed) == 0 or (campaign.variant_by_attribute and not campaign.ab_test):
        return {"p_value": None, "ok": True}
    weights = {v.name: float(v.weight) for v in variants}
    check = ab.srm(observed, [weights.get(a.variant, 0.0) for a in compared])
    return {"p_value": check.p_value, "ok": check.ok}
