"""A/B statistics (core/stats/ab.py) and the decision policy (core/stats/winner.py) on hand-built
counts, each figure against an answer the test computes another way (numerical integration,
a large seeded Monte Carlo, raw per-recipient data, scipy's contingency tests); GrowthBook's engine
(gbstats) on the same counts; and /stats/variants over HTTP."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest
from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig
from gbstats.frequentist.tests import FrequentistConfig, TwoSidedTTest
from gbstats.models.statistics import ProportionStatistic, SampleMeanStatistic
from gbstats.utils import check_srm
from scipy import integrate, special, stats

from core.stats import ab, winner
from core.stats.evidence import ArmCounts
from tests.live import LiveService, wait_for

PHONE_BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
DRAWS = 2_000_000  # Monte Carlo references: the standard error of a probability is at most 0.00035


def clicks(variant: str, delivered: int, clickers: int, *, recipients: int | None = None) -> ArmCounts:
    n = recipients if recipients is not None else delivered
    return ArmCounts(variant, False, recipients=n, sent=n, delivered=delivered, basis=delivered, unique_clicks=clickers)


def buyers(variant: str, recipients: int, converters: int, *, control: bool = False) -> ArmCounts:
    return ArmCounts(variant, control, recipients=recipients, basis=recipients, converters=converters)


def spenders(variant: str, revenue: np.ndarray) -> ArmCounts:
    """An arm from per-recipient revenue (0 for non-converters)."""
    paying = revenue[revenue > 0]
    return ArmCounts(
        variant,
        False,
        recipients=len(revenue),
        basis=len(revenue),
        converters=len(paying),
        conversion_events=len(paying),
        revenue=float(revenue.sum()),
        revenue_sq=float((paying**2).sum()),
    )


def beta_of(arm: ArmCounts) -> tuple[int, int]:
    return 1 + arm.unique_clicks, 1 + arm.basis - arm.unique_clicks


# -- proportions: chance to win, expected loss, interval ----------------------------------------


@pytest.mark.parametrize(
    "a, b",
    [
        ((1000, 30), (1000, 60)),
        ((1000, 50), (1000, 50)),
        ((40, 5), (41, 9)),
        ((5000, 510), (4800, 530)),
        ((10, 0), (12, 1)),
    ],
)
def test_two_arms_chance_and_loss_are_exact(a: tuple[int, int], b: tuple[int, int]) -> None:
    arm_a, arm_b = clicks("A", *a), clicks("B", *b)
    fa, fb = stats.beta(*beta_of(arm_a)), stats.beta(*beta_of(arm_b))
    got_a, got_b = ab.compare([arm_a, arm_b], "ctr")
    # P(B > A) = ∫ f_B(x) F_A(x) dx by adaptive quadrature (not the closed form the code uses).
    p_b = integrate.quad(lambda x: fb.pdf(x) * fa.cdf(x), 0, 1, points=[fa.mean(), fb.mean()], limit=200)[0]
    assert got_b.chance_to_win == pytest.approx(p_b, abs=1e-6)
    assert got_a.chance_to_win == pytest.approx(1 - p_b, abs=1e-6)
    # Expected loss E[max − arm] by Monte Carlo.
    rng = np.random.default_rng(7)
    xa, xb = rng.beta(*beta_of(arm_a), DRAWS), rng.beta(*beta_of(arm_b), DRAWS)
    top = np.maximum(xa, xb)
    for got, draws in ((got_a, xa), (got_b, xb)):
        loss = top - draws
        assert got.expected_loss == pytest.approx(loss.mean(), abs=5 * loss.std() / math.sqrt(DRAWS) + 1e-9)
    # The observed rate and the 95 % equal-tailed credible interval, checked with the incomplete beta.
    for got, arm in ((got_a, arm_a), (got_b, arm_b)):
        assert got.rate == arm.unique_clicks / arm.basis
        assert got.interval is not None
        low, high = got.interval
        assert special.betainc(*beta_of(arm), low) == pytest.approx(0.025, abs=1e-9)
        assert special.betainc(*beta_of(arm), high) == pytest.approx(0.975, abs=1e-9)


def test_three_arms_match_a_large_monte_carlo() -> None:
    arms = [clicks("A", 1000, 30), clicks("B", 1000, 40), clicks("C", 800, 35)]
    got = ab.compare(arms, "ctr")
    rng = np.random.default_rng(11)
    draws = np.stack([rng.beta(*beta_of(a), DRAWS) for a in arms])
    best, top = draws.argmax(axis=0), draws.max(axis=0)
    for k, figures in enumerate(got):
        share = (best == k).mean()
        assert figures.chance_to_win == pytest.approx(share, abs=5 * math.sqrt(share * (1 - share) / DRAWS) + 1e-6)
        loss = top - draws[k]
        assert figures.expected_loss == pytest.approx(loss.mean(), abs=5 * loss.std() / math.sqrt(DRAWS))
    assert sum(f.chance_to_win or 0 for f in got) == pytest.approx(1, abs=1e-9)


def test_conversions_are_over_recipients_and_unique_clicks_like_ctr() -> None:
    a = ArmCounts("A", False, recipients=1000, delivered=900, basis=900, unique_clicks=90, converters=20)
    b = ArmCounts("B", False, recipients=1000, delivered=950, basis=950, unique_clicks=80, converters=35)
    conv_a, conv_b = ab.compare([a, b], "conversions")
    assert (conv_a.rate, conv_b.rate) == (0.02, 0.035)
    fa, fb = stats.beta(21, 981), stats.beta(36, 966)
    assert conv_b.chance_to_win == pytest.approx(integrate.quad(lambda x: fb.pdf(x) * fa.cdf(x), 0, 1)[0], abs=1e-6)
    assert ab.compare([a, b], "unique_clicks") == ab.compare([a, b], "ctr")
    assert ab.compare([a, b], "ctr")[0].rate == 0.1


def test_nothing_compared_means_null_figures() -> None:
    (only,) = ab.compare([clicks("A", 100, 10)], "ctr")
    assert only.rate == 0.1 and (only.chance_to_win, only.expected_loss, only.interval, only.p_value) == (None,) * 4
    # The control arm never competes; an arm with nothing delivered yet is left out.
    control = buyers("control", 300, 6, control=True)
    a, c, empty = ab.compare([clicks("A", 100, 10), control, clicks("B", 0, 0)], "ctr")
    assert a.chance_to_win is None and c.rate is None and empty.rate is None
    _, c_conv = ab.compare([clicks("A", 100, 10), control], "conversions")
    assert c_conv.rate == 0.02 and c_conv.chance_to_win is None
    with pytest.raises(ValueError, match="metric"):
        ab.compare([clicks("A", 1, 1), clicks("B", 1, 1)], "opens")


# -- frequentist p-values ------------------------------------------------------------------------


def _chi2_p(a: ArmCounts, b: ArmCounts) -> float:
    """The two-proportion z-test is the uncorrected chi-squared test of the 2×2 table."""
    table = [[a.unique_clicks, a.basis - a.unique_clicks], [b.unique_clicks, b.basis - b.unique_clicks]]
    return float(stats.chi2_contingency(table, correction=False)[1])


def test_p_value_two_arms_is_the_two_proportion_test() -> None:
    a, b = clicks("A", 1000, 30), clicks("B", 1000, 52)
    got_a, got_b = ab.compare([a, b], "ctr")
    assert got_a.p_value == got_b.p_value == pytest.approx(_chi2_p(a, b), rel=1e-9)


def _holm_by_hand(raw: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """Holm: the k-th smallest of m p-values times (m − k + 1), made monotone, at most 1."""
    ordered = sorted(raw, key=raw.__getitem__)
    out, running = {}, 0.0
    for k, pair in enumerate(ordered):
        running = max(running, min(1.0, (len(raw) - k) * raw[pair]))
        out[pair] = running
    return out


def test_p_values_are_holm_adjusted_over_every_pair() -> None:
    arms = {"A": clicks("A", 2000, 100), "B": clicks("B", 2000, 130), "C": clicks("C", 2000, 160)}
    arms["D"] = clicks("D", 2000, 150)
    got = {s.variant: s.p_value for s in ab.compare(list(arms.values()), "ctr")}
    names = sorted(arms)
    raw = {(x, y): _chi2_p(arms[x], arms[y]) for i, x in enumerate(names) for y in names[i + 1 :]}
    adjusted = _holm_by_hand(raw)  # 6 pairs, not the leader's 3
    for v in "ABD":  # C leads: each other arm reports its adjusted pair with C
        assert got[v] == pytest.approx(adjusted[tuple(sorted((v, "C")))])  # type: ignore[index]
    assert got["C"] == max(got[v] or 0 for v in "ABD")


def _z_p(s: np.ndarray, n: int, i: int, j: int) -> np.ndarray:
    pooled = (s[:, i] + s[:, j]) / (2 * n)
    se = np.sqrt(pooled * (1 - pooled) * 2 / n)
    return np.asarray(2 * stats.norm.sf(np.abs(s[:, i] - s[:, j]) / n / se))


def _holm_rows(p: np.ndarray) -> np.ndarray:
    """Holm's adjustment of each row of p (runs × m), vectorised."""
    m = p.shape[1]
    order = np.argsort(p, axis=1)
    steps = np.minimum(1.0, np.maximum.accumulate(np.take_along_axis(p, order, 1) * (m - np.arange(m)), axis=1))
    out = np.empty_like(p)
    np.put_along_axis(out, order, steps, axis=1)
    return out


@pytest.mark.parametrize("k", [3, 4, 5])
def test_reported_p_values_hold_the_family_wise_error_under_a_global_null(k: int) -> None:
    """k identical arms (n 5,000, p 0.10), 6,000 seeded runs: some reported p-value ≤ 0.05 in at
    most 5 % of runs (with a margin of three standard errors). The same computation vectorised,
    checked against `ab.compare` on the first runs (equal n: the chance leader is the rate leader).
    Adjusting over the leader's k − 1 comparisons only (the former rule) fails this test."""
    runs, n = 6000, 5000
    rng = np.random.default_rng(100 + k)
    s = rng.binomial(n, 0.10, size=(runs, k))
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    adjusted = _holm_rows(np.stack([_z_p(s, n, i, j) for i, j in pairs], axis=1))
    lead = s.argmax(axis=1)
    index = np.full((k, k), -1)  # index[a, b]: the column of pair {a, b}
    for c, (i, j) in enumerate(pairs):
        index[i, j] = index[j, i] = c
    rows = np.arange(runs)[:, None]
    others = index[np.arange(k)[None, :], lead[:, None]]  # per run and arm, its pair with the leader
    reported = np.where(others >= 0, adjusted[rows, np.maximum(others, 0)], np.inf)
    for r in range(15):
        got = [f.p_value for f in ab.compare([clicks(chr(65 + a), n, int(s[r, a])) for a in range(k)], "ctr")]
        rest = [a for a in range(k) if a != lead[r]]
        assert [got[a] for a in rest] == pytest.approx([reported[r, a] for a in rest], rel=1e-9)
    fwer = (reported <= 0.05).any(axis=1).mean()
    assert fwer <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs), fwer
    # The former rule, Holm over the k − 1 comparisons with the observed leader, exceeds 5 %.
    raw = np.stack([_z_p(s, n, i, j) for i, j in pairs], axis=1)
    versus_leader = np.sort(raw[rows, np.maximum(others, 0)] + np.where(others >= 0, 0, np.inf), axis=1)[:, : k - 1]
    assert (_holm_rows(versus_leader) <= 0.05).any(axis=1).mean() > 0.05


def test_the_leader_is_the_chance_leader_in_the_figures_and_the_decision() -> None:
    """A: 2 of 2 (the highest observed rate, a very wide posterior) against two large arms: the
    chance to win leads elsewhere, and the p-values and the decision take that leader."""
    arms = [clicks("A", 2, 2), clicks("B", 10000, 9000), clicks("C", 10000, 8900)]
    got = ab.compare(arms, "ctr")
    chances = [f.chance_to_win or 0 for f in got]
    lead = int(np.argmax(chances))
    assert lead != 0 and got[0].rate == 1.0  # the rate leader is not the chance leader
    verdict = winner.assess(arms, "ctr")
    assert verdict is not None and verdict.leader == got[lead].variant
    raw = {(x.variant, y.variant): _chi2_p(x, y) for i, x in enumerate(arms) for y in arms[i + 1 :]}
    adjusted = _holm_by_hand(raw)
    for i, f in enumerate(got):
        if i != lead:
            pair = tuple(sorted((f.variant, got[lead].variant)))
            assert f.p_value == pytest.approx(adjusted[pair])  # type: ignore[index]
    # Ties in the chance (identical arms) go to the higher observed rate, then the first.
    assert ab.leader([0.5, 0.5], [0.1, 0.2]) == 1 and ab.leader([0.5, 0.5], [0.1, 0.1]) == 0


# -- revenue per recipient -----------------------------------------------------------------------


def _revenue(rng: np.random.Generator, n: int, buyers: int, median: float) -> np.ndarray:
    values = np.zeros(n)
    values[:buyers] = np.round(rng.lognormal(math.log(median), 0.8, buyers), 2)
    return values


def test_revenue_per_recipient_is_a_normal_mean_from_the_sums() -> None:
    rng = np.random.default_rng(3)
    raw_a, raw_b = _revenue(rng, 1500, 45, 40.0), _revenue(rng, 1400, 60, 42.0)
    a, b = spenders("A", raw_a), spenders("B", raw_b)
    got_a, got_b = ab.compare([a, b], "revenue")
    se_a, se_b = raw_a.std(ddof=1) / math.sqrt(len(raw_a)), raw_b.std(ddof=1) / math.sqrt(len(raw_b))
    assert got_a.rate == pytest.approx(raw_a.mean()) and got_b.rate == pytest.approx(raw_b.mean())
    assert got_a.interval == pytest.approx((raw_a.mean() - 1.959964 * se_a, raw_a.mean() + 1.959964 * se_a))
    diff, se = raw_b.mean() - raw_a.mean(), math.hypot(se_a, se_b)
    assert got_b.chance_to_win == pytest.approx(stats.norm.cdf(diff / se), abs=1e-9)
    rng2 = np.random.default_rng(5)
    xa, xb = rng2.normal(raw_a.mean(), se_a, DRAWS), rng2.normal(raw_b.mean(), se_b, DRAWS)
    assert got_a.expected_loss == pytest.approx(np.maximum(xb - xa, 0).mean(), rel=0.01)
    assert got_b.p_value == pytest.approx(stats.ttest_ind(raw_a, raw_b, equal_var=False).pvalue, rel=1e-6)


def test_revenue_without_any_purchase_is_a_tie() -> None:
    a, b = ab.compare([spenders("A", np.zeros(500)), spenders("B", np.zeros(500))], "revenue")
    assert a.rate == b.rate == 0 and a.chance_to_win == pytest.approx(0.5) and a.p_value == 1.0


# -- uplift over the control ---------------------------------------------------------------------


def test_uplift_over_the_control() -> None:
    treatment, control = buyers("B", 2000, 80), buyers("control", 500, 12, control=True)
    u = ab.uplift(treatment, control)
    assert u.absolute == pytest.approx(0.04 - 0.024) and u.relative == pytest.approx(0.016 / 0.024)
    ft, fc = stats.beta(81, 1921), stats.beta(13, 489)
    assert u.chance_better == pytest.approx(integrate.quad(lambda x: ft.pdf(x) * fc.cdf(x), 0, 1)[0], abs=1e-6)
    rng = np.random.default_rng(13)
    difference = rng.beta(81, 1921, DRAWS) - rng.beta(13, 489, DRAWS)
    assert u.interval == pytest.approx(tuple(np.quantile(difference, [0.025, 0.975])), abs=3e-4)


def _dense_interval(treatment: ArmCounts, control: ArmCounts) -> tuple[float, float]:
    """The uplift's interval the slow way: P(X_t − X_c ≤ d) by the trapezoid rule on 20,001 points
    over each posterior's 1e-16 to 1 - 1e-16 quantiles, inverted by bisection."""
    ft = stats.beta(1 + treatment.converters, 1 + treatment.recipients - treatment.converters)
    fc = stats.beta(1 + control.converters, 1 + control.recipients - control.converters)
    y = np.unique(np.concatenate([np.linspace(f.ppf(1e-16), f.isf(1e-16), 20_001) for f in (ft, fc)]))
    weights = fc.pdf(y)

    def cdf(d: float) -> float:
        return float(integrate.trapezoid(weights * ft.cdf(y + d), y) / integrate.trapezoid(weights, y))

    def quantile(q: float) -> float:
        low, high = -1.0, 1.0
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (middle, high) if cdf(middle) < q else (low, middle)
        return (low + high) / 2

    return quantile(0.025), quantile(0.975)


@pytest.mark.parametrize(
    ("treatment", "control"),
    [
        ((450_000, 9_000), (100_000, 3_030)),  # a million-message campaign: the treatment narrower
        ((1_000, 100), (20_000, 1_900)),  # the control narrower
        ((50, 3), (40, 0)),  # a control that never converted: its posterior against 0
        ((5_000, 0), (40, 40)),  # both at the edges
        ((2_000, 80), (500, 12)),
    ],
)
def test_uplift_interval_is_the_difference_of_the_posteriors(
    treatment: tuple[int, int], control: tuple[int, int]
) -> None:
    t, c = buyers("B", *treatment), buyers("control", *control, control=True)
    expected = _dense_interval(t, c)
    assert ab.uplift(t, c).interval == pytest.approx(expected, abs=2e-6)


def test_uplift_relative_is_null_over_a_control_that_never_converted() -> None:
    u = ab.uplift(buyers("B", 200, 4), buyers("control", 50, 0, control=True))
    assert u.absolute == 0.02 and u.relative is None and u.interval is not None and u.chance_better is not None
    assert ab.uplift(buyers("B", 200, 4), buyers("control", 0, 0, control=True)) == ab.Uplift(None, None, None, None)


# -- the sample-ratio check ------------------------------------------------------------------------


def test_srm_is_the_chi_squared_goodness_of_fit() -> None:
    observed, weights = [5000, 4800, 2600], [2.0, 2.0, 1.0]
    expected = [sum(observed) * w / 5 for w in weights]
    statistic = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    check = ab.srm(observed, weights)
    assert check.p_value == pytest.approx(stats.chi2.sf(statistic, 2), rel=1e-9) and check.ok
    assert not ab.srm([5200, 4800], [1, 1]).ok  # p ≈ 6e-5
    assert ab.srm([5100, 4900], [1, 1]).ok  # p ≈ 0.046: unlucky, not broken
    assert ab.srm([0, 0], [1, 1]) == ab.SRM(1.0, True) and ab.srm([10, 3], [1, 0]).ok is False


# -- the sequential test ---------------------------------------------------------------------------


def test_always_valid_p_is_the_normal_mixture_likelihood_ratio() -> None:
    a, b = clicks("A", 4000, 400), clicks("B", 4000, 470)
    pooled = 870 / 8000
    v = pooled * (1 - pooled) * (2 / 4000)
    theta, tau2 = 470 / 4000 - 400 / 4000, (ab.KAPPA * pooled) ** 2
    # Λ = ∫ N(θ̂; δ, V) N(δ; 0, τ²) dδ / N(θ̂; 0, V), integrated numerically.
    mixture = integrate.quad(
        lambda d: stats.norm.pdf(theta, d, math.sqrt(v)) * stats.norm.pdf(d, 0, math.sqrt(tau2)),
        -1,
        1,
        points=[0, theta],
    )[0]
    assert ab.sequential_p(a, b, "ctr") == pytest.approx(stats.norm.pdf(theta, 0, math.sqrt(v)) / mixture, rel=1e-6)
    assert ab.sequential_p(a, a, "ctr") == 1.0 and ab.sequential_p(clicks("A", 10, 0), clicks("B", 10, 0), "ctr") == 1.0
    # It is far more demanding than the fixed-horizon test on the same counts.
    assert (ab.compare([a, b], "ctr")[0].p_value or 1) < 0.02 < ab.sequential_p(a, b, "ctr")


# -- GrowthBook's engine on the same counts ---------------------------------------------------------

PROPORTIONS = [(5000, 500, 5000, 560), (8000, 800, 7900, 870), (20000, 400, 20000, 460), (3000, 300, 3100, 360)]


@pytest.mark.parametrize("na, sa, nb, sb", PROPORTIONS)
def test_proportions_agree_with_gbstats(na: int, sa: int, nb: int, sb: int) -> None:
    """gbstats approximates each rate by a normal (flat prior); ours are exact Beta posteriors: at
    thousands per arm they agree within 0.001 on the chance to win, 3 % on the expected loss
    (relative), 0.001 on the p-value (its Welch t-test against our pooled z-test). The always-valid
    p-value is not compared: gbstats tunes its mixture to a sample size (ρ² N), ours to the rate
    (τ = κ p̄), so matching them needs gbstats' parameter derived from ours, which checks nothing;
    test_always_valid_p_is_the_normal_mixture_likelihood_ratio integrates the mixture instead."""
    a, b = clicks("A", na, sa), clicks("B", nb, sb)
    got_a, got_b = ab.compare([a, b], "ctr")
    stat_a, stat_b = ProportionStatistic(n=na, sum=sa), ProportionStatistic(n=nb, sum=sb)
    bayes = EffectBayesianABTest(stat_a, stat_b, EffectBayesianConfig(difference_type="absolute")).compute_result()
    assert got_b.chance_to_win == pytest.approx(bayes.chance_to_win, abs=1e-3)
    assert got_a.expected_loss == pytest.approx(bayes.risk[0], rel=0.03)
    assert got_b.expected_loss == pytest.approx(bayes.risk[1], rel=0.03)
    frequentist = TwoSidedTTest(stat_a, stat_b, FrequentistConfig(difference_type="absolute")).compute_result()
    assert got_b.p_value == pytest.approx(frequentist.p_value, abs=1e-3)


def test_uplift_agrees_with_gbstats() -> None:
    """gbstats takes each rate as a normal with no prior; ours are the exact Beta posteriors with a
    uniform prior, which a control of a few hundred converters still feels (a Beta is skewed at
    small rates): within 0.01 on the chance to be better and 0.0005 on the interval's bounds."""
    treatment, control = buyers("B", 20000, 800), buyers("control", 5000, 170, control=True)
    u = ab.uplift(treatment, control)
    stat_c, stat_t = ProportionStatistic(n=5000, sum=170), ProportionStatistic(n=20000, sum=800)
    bayes = EffectBayesianABTest(stat_c, stat_t, EffectBayesianConfig(difference_type="absolute")).compute_result()
    assert u.absolute == pytest.approx(bayes.expected, abs=1e-12)
    assert u.chance_better == pytest.approx(bayes.chance_to_win, abs=0.01)
    assert u.interval == pytest.approx(tuple(bayes.ci), abs=5e-4)


def test_revenue_agrees_with_gbstats() -> None:
    """Both are normal approximations of the mean per recipient: they agree to rounding."""
    rng = np.random.default_rng(17)
    raw_a, raw_b = _revenue(rng, 3000, 90, 40.0), _revenue(rng, 3000, 120, 45.0)
    a, b = spenders("A", raw_a), spenders("B", raw_b)
    got_a, got_b = ab.compare([a, b], "revenue")
    stat_a = SampleMeanStatistic(n=a.recipients, sum=a.revenue, sum_squares=a.revenue_sq)
    stat_b = SampleMeanStatistic(n=b.recipients, sum=b.revenue, sum_squares=b.revenue_sq)
    bayes = EffectBayesianABTest(stat_a, stat_b, EffectBayesianConfig(difference_type="absolute")).compute_result()
    assert got_b.chance_to_win == pytest.approx(bayes.chance_to_win, abs=1e-9)
    assert (got_a.expected_loss, got_b.expected_loss) == pytest.approx(tuple(bayes.risk), rel=1e-6)
    frequentist = TwoSidedTTest(stat_a, stat_b, FrequentistConfig(difference_type="absolute")).compute_result()
    assert got_b.p_value == pytest.approx(frequentist.p_value, rel=1e-6)


def test_srm_agrees_with_gbstats() -> None:
    cases: list[tuple[list[int], list[float]]] = [
        ([5000, 4800], [1.0, 1.0]),
        ([5000, 4800, 2600], [0.4, 0.4, 0.2]),
        ([90, 130], [1.0, 1.0]),
    ]
    for observed, weights in cases:
        assert ab.srm(observed, weights).p_value == pytest.approx(check_srm(observed, weights), rel=1e-9)


# -- the decision policy ---------------------------------------------------------------------------

TEST = {"metric": "ctr", "min_sample": 100, "fallback": "hold"}
EVEN = {"A": 1.0, "B": 1.0, "C": 1.0}


def test_a_clear_winner_is_decided_early() -> None:
    d = winner.decide([clicks("A", 2000, 200), clicks("B", 2000, 300)], TEST, weights=EVEN, at_deadline=False)
    assert d.decided and d.variant == "B" and d.method == "bayesian" and not d.hold
    assert "chance to be best on ctr" in d.reason and "always-valid p" in d.reason


def test_what_a_fixed_95_percent_rule_would_have_declared_waits_and_then_falls_back() -> None:
    arms = [clicks("A", 1000, 100), clicks("B", 1000, 125)]
    assert (ab.compare(arms, "ctr")[1].chance_to_win or 0) > 0.95
    assert not winner.decide(arms, TEST, weights=EVEN, at_deadline=False).decided
    d = winner.decide(arms, TEST, weights=EVEN, at_deadline=True)
    assert d.decided and d.hold and d.variant is None and d.method == "fallback"
    assert d.reason.startswith("the wait ended with no decisive variant (B leads") and d.reason.endswith("held")
    named = winner.decide(arms, {**TEST, "fallback": "send_variant:A"}, weights=EVEN, at_deadline=True)
    assert named.variant == "A" and named.method == "fallback"


def test_a_coin_flip_is_never_declared() -> None:
    arms = [clicks("A", 5000, 500), clicks("B", 5000, 503)]
    d = winner.decide(arms, {**TEST, "fallback": "send_all_variants"}, weights=EVEN, at_deadline=True)
    assert d.decided and d.variant is None and not d.hold and "sending all variants" in d.reason


def test_min_sample_is_required() -> None:
    arms = [clicks("A", 90, 0), clicks("B", 95, 60)]
    assert not winner.decide(arms, TEST, weights=EVEN, at_deadline=False).decided
    d = winner.decide(arms, TEST, weights=EVEN, at_deadline=True, measured="sent")
    assert d.hold and "fewer than 100 sent test messages for A, B" in d.reason


def test_a_sample_ratio_mismatch_blocks_the_decision() -> None:
    arms = [clicks("A", 2000, 200, recipients=2500), clicks("B", 2400, 400, recipients=2500)]
    waiting = winner.decide(arms, TEST, weights=EVEN, at_deadline=False)
    assert not waiting.decided and "sample ratio mismatch" in waiting.reason
    d = winner.decide(arms, TEST, weights=EVEN, at_deadline=True)
    assert d.hold and d.method == "fallback" and d.reason.startswith("sample ratio mismatch: delivered test messages")
    # The same counts under weights 1:1.2 are no mismatch: B wins.
    assert winner.decide(arms, TEST, weights={"A": 1, "B": 1.2}, at_deadline=False).variant == "B"


def test_three_variants_need_the_leader_ahead_of_each_other() -> None:
    ahead_of_one = [clicks("A", 3000, 300), clicks("B", 3000, 390), clicks("C", 3000, 385)]
    d = winner.decide(ahead_of_one, TEST, weights=EVEN, at_deadline=True)
    assert d.method == "fallback" and "p ≤ 0.025" in d.reason
    ahead_of_all = [clicks("A", 3000, 300), clicks("B", 3000, 420), clicks("C", 3000, 310)]
    assert winner.decide(ahead_of_all, TEST, weights=EVEN, at_deadline=False).variant == "B"


def test_the_control_group_takes_no_part_in_the_decision() -> None:
    control = buyers("control", 400, 1, control=True)
    arms = [clicks("A", 2000, 200), control, clicks("B", 2000, 300)]
    assert winner.decide(arms, TEST, weights={"A": 1, "B": 1}, at_deadline=False).variant == "B"
    d = winner.decide([clicks("A", 2000, 200), control], TEST, weights={"A": 1}, at_deadline=True)
    assert d.hold and "fewer than two variants" in d.reason


# -- over HTTP --------------------------------------------------------------------------------------


def test_variant_stats_side_by_side(live: LiveService) -> None:
    live.post("/api/contacts", [{"phone": f"+1202555{4000 + i}", "name": f"N{i}"} for i in range(20)])
    cid = live.post(
        "/api/campaigns",
        {
            "name": "AB",
            "variants": [
                {"name": "A", "body": "A https://a.example/x", "weight": 1},
                {"name": "B", "body": "B https://a.example/x", "weight": 1},
            ],
        },
    ).json()["id"]
    live.post(f"/api/campaigns/{cid}/launch")
    wait_for(lambda: live.stats(cid)["delivered"] == 20, what="delivered")
    messages = live.messages(cid)
    b_links = [m["body"].split()[-1] for m in messages if m["variant"] == "B"]
    for url in b_links[:6]:
        assert httpx.get(url, headers={"user-agent": PHONE_BROWSER}).status_code == 302
    wait_for(lambda: live.stats(cid)["clicks"]["unique"] == 6, what="six clickers")
    body = live.get(f"/api/campaigns/{cid}/stats/variants").json()
    rows = {row["variant"]: row for row in body["variants"]}
    assert body["metric"] == "ctr" and body["winner"] is None
    assert (rows["A"]["recipients"], rows["B"]["recipients"]) == (10, 10)
    assert (rows["A"]["unique_clicks"], rows["B"]["unique_clicks"]) == (0, 6)
    assert rows["B"]["ctr"] == 0.6 and rows["A"]["ctr"] == 0.0
    # Beta(7, 5) against Beta(1, 11).
    assert rows["B"]["chance_to_win"] == pytest.approx(ab.beta_beats(1, 11, 7, 5), abs=1e-4)
    assert rows["A"]["interval"][0] >= 0 and rows["B"]["interval"][1] <= 1
    assert body["all_variants"]["recipients"] == 20 and body["all_variants"]["unique_clicks"] == 6


def _every_term(a: float, b: float, c: float, d: float) -> float:
    """beta_beats' sum over every one of its terms (the formula as written, no window)."""
    if c > a:
        return 1.0 - _every_term(c, d, a, b)
    i = np.arange(int(round(c)), dtype=float)
    terms = special.betaln(a + i, b + d) - np.log(d + i) - special.betaln(1 + i, d) - special.betaln(a, b)
    return float(min(1.0, max(0.0, np.exp(special.logsumexp(terms)))))


@pytest.mark.parametrize("seed", range(4))
def test_chance_to_beat_summed_around_its_peak_is_the_whole_sum(seed: int) -> None:
    """At a million messages beta_beats sums the terms near their peak only, each from its
    neighbour's ratio: the same figure as every term's by the beta function, at large and small
    rates, close and far apart. Against a 60-digit computation both are within ~3e-9 of the sum
    (scipy's betaln at these sizes is that far off); the figure is 1 - the other side's when the
    other side is the longer, so that is an absolute error. A window missing terms that count is
    off by far more (a window 2 nats deep: by 10 % and more)."""
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n1, n2 = rng.integers(5_000, 600_000, size=2)
        p = rng.uniform(0.001, 0.9)
        q = p * rng.uniform(0.8, 1.25)
        a, c = 1 + int(n1 * p), 1 + int(n2 * min(q, 0.99))
        b, d = 1 + n1 - a, 1 + n2 - c
        assert ab.beta_beats(a, b, c, d) == pytest.approx(_every_term(a, b, c, d), abs=1e-8)
