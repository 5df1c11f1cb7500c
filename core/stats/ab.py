"""A/B statistics on `core.stats.evidence.ArmCounts`: exact Bayesian figures, a fixed-horizon
frequentist p-value beside them, an always-valid sequential test for the stopping rule, the uplift
over a control group and the sample-ratio check. Pure: no database (docs/ab-testing.md).

Metrics and their denominators:
- `ctr`, `unique_clicks`: unique clickers / basis (delivered, else sent): a Beta(1 + s, 1 + n - s)
  posterior (uniform prior);
- `conversions`: converting contacts / recipients (API.md's `conversion_rate`): the same Beta;
- `revenue`: revenue per recipient (non-converters are 0): a normal posterior N(mean, s²/n) whose
  variance comes from `revenue_sq` (the central limit theorem over recipients, flat prior).

Exact where a closed form exists: two Beta arms' chance to win and expected loss (Evan Miller's
sum), two normal arms' (the normal CDF), every interval (the posterior's quantile function); with
three or more arms the chances and losses are one-dimensional integrals, computed by quadrature.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import integrate, optimize, special, stats

from core.stats.evidence import ArmCounts

METRICS = ("ctr", "unique_clicks", "conversions", "revenue")
CREDIBLE = 0.95  # the mass of every interval
KAPPA = 0.3  # the sequential test's mixing spread: relative lifts of about ±30 % (docs/ab-testing.md)
SRM_P = 0.001  # a split less likely than this under the weights is a sample-ratio mismatch


@dataclass(frozen=True)
class ArmStats:
    variant: str
    rate: float | None  # the observed rate (revenue: per recipient); None without a denominator
    chance_to_win: float | None  # posterior probability of being the best arm
    expected_loss: float | None  # E[best arm's rate - this arm's rate], in the rate's unit
    interval: tuple[float, float] | None  # 95 % credible interval of the arm's rate
    p_value: float | None  # two-sided, against the leader (the leader: its largest), Holm over all pairs


@dataclass(frozen=True)
class Uplift:
    absolute: float | None  # treatment's conversion rate minus the control's (0.05 = 5 points)
    relative: float | None  # absolute / control's rate; None when the control's rate is 0
    interval: tuple[float, float] | None  # 95 % credible interval of `absolute`
    chance_better: float | None  # P(treatment's rate > control's)


@dataclass(frozen=True)
class SRM:
    p_value: float
    ok: bool


# -- posteriors -------------------------------------------------------------------------------


def is_proportion(metric: str) -> bool:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return metric != "revenue"


def successes_trials(arm: ArmCounts, metric: str) -> tuple[int, int]:
    """The numerator and denominator of a proportion metric."""
    if metric in ("ctr", "unique_clicks"):
        return arm.unique_clicks, arm.basis
    return arm.converters, arm.recipients


def revenue_moments(arm: ArmCounts) -> tuple[int, float, float]:
    """(recipients, mean revenue per recipient, sample variance of revenue per recipient)."""
    n = arm.recipients
    if n <= 0:
        return 0, 0.0, 0.0
    mean = arm.revenue / n
    variance = max(0.0, (arm.revenue_sq - arm.revenue * mean) / (n - 1)) if n > 1 else 0.0
    return n, mean, variance


def _denominator(arm: ArmCounts, metric: str) -> int:
    return successes_trials(arm, metric)[1] if is_proportion(metric) else arm.recipients


def rate(arm: ArmCounts, metric: str) -> float | None:
    if is_proportion(metric):
        s, n = successes_trials(arm, metric)
        return s / n if n > 0 else None
    n, mean, _ = revenue_moments(arm)
    return mean if n > 0 else None


def posterior(arm: ArmCounts, metric: str) -> Any:
    """The arm's posterior as a frozen scipy distribution."""
    if is_proportion(metric):
        s, n = successes_trials(arm, metric)
        return BetaPosterior(1 + s, 1 + max(0, n - s))
    n, mean, variance = revenue_moments(arm)
    # A point mass (no revenue yet) is a very narrow normal, so every formula below holds.
    return stats.norm(mean, max(np.sqrt(variance / n), 1e-12 * max(1.0, abs(mean))))


class BetaPosterior:
    """Beta(a, b) as scipy's frozen distribution, made only when more than its parameters and
    quantiles are asked of it (freezing one costs a quarter of a millisecond; two arms' chances and
    intervals need none)."""

    dist = stats.beta

    def __init__(self, a: float, b: float) -> None:
        self.args = (a, b)

    def ppf(self, q: Any) -> Any:
        return special.betaincinv(*self.args, np.asarray(q, dtype=float))  # what scipy's beta.ppf computes

    @functools.cached_property
    def _frozen(self) -> Any:
        return stats.beta(*self.args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._frozen, name)


# -- chance to win and expected loss ----------------------------------------------------------


def beta_beats(a: float, b: float, c: float, d: float) -> float:
    """P(Y > X) for X ~ Beta(a, b), Y ~ Beta(c, d), exact when a and c are whole numbers:
    Σ_{i<c} B(a+i, b+d) / ((d+i) B(1+i, d) B(a, b)), summed over the shorter of the two sides:
    the terms that count (`_peak`), the first by the beta function, each next one by its ratio to
    the one before (exact in logs; differences of betaln at these sizes drift by ~1e-9)."""
    if c > a:
        return 1.0 - beta_beats(c, d, a, b)

    def log_terms(i: NDArray[np.float64]) -> NDArray[np.float64]:
        return special.betaln(a + i, b + d) - np.log(d + i) - special.betaln(1 + i, d) - special.betaln(a, b)

    i = _peak(log_terms, int(round(c)))
    if len(i) > 1:
        # The first term exactly, the others by the ratio of neighbours (logs, no beta function):
        # t(i+1)/t(i) = (a+i)(d+i)(1+i+d) / ((a+b+d+i)(d+i+1)(1+i)).
        j = i[:-1]
        steps = np.log((a + j) * (d + j) * (1 + j + d)) - np.log((a + b + d + j) * (d + j + 1) * (1 + j))
        terms = log_terms(i[:1])[0] + np.concatenate(([0.0], np.cumsum(steps)))
    else:
        terms = log_terms(i)
    top = float(terms.max())  # log Σ e^t, as scipy's logsumexp (a tenth of its cost here)
    return float(min(1.0, max(0.0, np.exp(top + np.log(np.sum(np.exp(terms - top)))))))


SUMMED_WHOLE = 4096  # beta_beats sums every term up to this many; beyond, the terms around the peak
NEGLIGIBLE = 60.0  # nats below the largest term: e^-60 ≈ 1e-26 each, nothing at double precision


def _peak(log_terms: Callable[[NDArray[np.float64]], NDArray[np.float64]], n: int) -> NDArray[np.float64]:
    """The indices 0..n-1 of the terms worth summing: all of them when few; else those within
    NEGLIGIBLE of the largest, found on a coarse grid first. The terms (a beta negative binomial's
    masses, up to a constant) rise to one peak and fall, so beyond the coarse points that are
    negligible every term is smaller still. At a million messages an arm's hundred thousand
    clickers become a few thousand terms."""
    if n <= SUMMED_WHOLE:
        return np.arange(n, dtype=float)
    step = n // 256
    coarse = np.arange(0, n, step, dtype=float)
    values = log_terms(coarse)
    kept = np.nonzero(values > values.max() - NEGLIGIBLE)[0]
    low = max(0, int(coarse[kept[0]]) - step)
    high = min(n, int(coarse[kept[-1]]) + step + 1)
    return np.arange(low, high, dtype=float)


def _two_betas(x: Any, y: Any) -> tuple[list[float], list[float]]:
    (a, b), (c, d) = x.args, y.args
    p_y = beta_beats(a, b, c, d)
    mx, my = a / (a + b), c / (c + d)
    # E[(Y - X)+] = E[Y 1{Y>X}] - E[X 1{Y>X}]; y·Beta(c, d) density = E[Y]·Beta(c + 1, d) density.
    loss_x = my * beta_beats(a, b, c + 1, d) - mx * beta_beats(a + 1, b, c, d)
    loss_y = loss_x - (my - mx)  # E[(X - Y)+] = E[(Y - X)+] - E[Y - X]
    return [1.0 - p_y, p_y], [max(0.0, loss_x), max(0.0, loss_y)]


def _two_normals(x: Any, y: Any) -> tuple[list[float], list[float]]:
    m = float(y.mean() - x.mean())
    s = float(np.hypot(x.std(), y.std()))
    p_y = float(stats.norm.sf(-m / s))
    loss_x = s * float(stats.norm.pdf(m / s)) + m * p_y  # E[(Y - X)+] for Y - X ~ N(m, s²)
    return [1.0 - p_y, p_y], [max(0.0, loss_x), max(0.0, loss_x - m)]


def _grid(dists: list[Any], points: int = 641) -> NDArray[np.float64]:
    """Abscissae dense where each distribution has mass: ±8 standard deviations of each, 1/40 of
    one apart (the trapezoid rule's error on such smooth integrands is far below 1e-6)."""
    z = np.linspace(-8.0, 8.0, points)
    parts = []
    for d in dists:
        low, high = d.support()
        parts.append(np.clip(d.mean() + d.std() * z, low, high))
    return np.unique(np.concatenate(parts))


def best_of(dists: list[Any]) -> tuple[list[float], list[float]]:
    """Each arm's chance to be the largest and expected loss E[max - arm] (independent arms).
    Two Betas or two normals: closed forms. Otherwise quadrature of P(k best) = ∫ f_k Π_{j≠k} F_j
    and E[max] = Σ_k ∫ x f_k Π_{j≠k} F_j on a grid resolving every arm (trapezoid rule)."""
    if len(dists) == 2 and all(d.dist.name == "beta" for d in dists):
        return _two_betas(*dists)
    if len(dists) == 2 and all(d.dist.name == "norm" for d in dists):
        return _two_normals(*dists)
    x = _grid(dists)
    pdf = np.array([d.pdf(x) for d in dists])
    cdf = np.array([d.cdf(x) for d in dists])
    chances, tops = [], []
    for k in range(len(dists)):
        integrand = pdf[k] * np.prod(np.delete(cdf, k, axis=0), axis=0)
        chances.append(float(integrate.trapezoid(integrand, x)))
        tops.append(float(integrate.trapezoid(x * integrand, x)))
    total = sum(chances)
    e_max = sum(tops) / total
    return [c / total for c in chances], [max(0.0, e_max - float(d.mean())) for d in dists]


def leader(chances: list[float], rates: list[float]) -> int:
    """The index of the leading arm: the highest chance to win, ties broken by the observed rate
    (then the first). `compare` (the p-values' reference) and `winner.assess` (the decision) both
    use it, so the figures and the decision name the same leader."""
    return max(range(len(chances)), key=lambda i: (chances[i], rates[i], -i))


# -- frequentist tests ------------------------------------------------------------------------


def z_test(a: ArmCounts, b: ArmCounts, metric: str) -> float:
    """Two-sided fixed-horizon p-value of "a and b have the same rate": the pooled two-proportion
    z-test, or Welch's t-test on revenue per recipient."""
    if is_proportion(metric):
        (sa, na), (sb, nb) = successes_trials(a, metric), successes_trials(b, metric)
        pooled = (sa + sb) / (na + nb)
        se = np.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
        return float(2 * stats.norm.sf(abs(sb / nb - sa / na) / se)) if se > 0 else 1.0
    (na, ma, va), (nb, mb, vb) = revenue_moments(a), revenue_moments(b)
    if va + vb <= 0 or na < 2 or nb < 2:
        return 1.0
    result = stats.ttest_ind_from_stats(ma, np.sqrt(va), na, mb, np.sqrt(vb), nb, equal_var=False)
    return float(result.pvalue)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error), in the order given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def always_valid_p(
    diff: ArrayLike, variance: ArrayLike, level: ArrayLike, kappa: float | None = None
) -> NDArray[np.float64]:
    """The mixture sequential probability ratio test's always-valid p-value, 1 / Λ (at most 1), for
    an observed difference with that variance under equality (Johari et al., "Always valid
    inference", 2017/2022): Λ = √(V / (V + τ²)) · exp(τ² d² / (2 V (V + τ²))), the likelihood ratio
    of a N(0, τ²) mixture of effects against none. τ = kappa · level: the mixture is over relative
    lifts, so τ²/V grows with the number of events whether units or their late clicks arrive.
    Vectorised: arrays of differences give arrays of p-values; no variance gives 1. `kappa`
    defaults to KAPPA (read at each call, so bench/ab_simulation.py --kappa can try others)."""
    kappa = KAPPA if kappa is None else kappa
    d, v, level = (np.asarray(x, dtype=float) for x in (diff, variance, level))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(v > 0, (kappa * level) ** 2 / v, 0.0)
        log_lambda = -0.5 * np.log1p(r) + np.where(v > 0, d * d / v, 0.0) * r / (2 * (1 + r))
    return np.asarray(np.minimum(1.0, np.exp(-log_lambda)), dtype=float)


def proportion_evidence(
    sa: ArrayLike, na: ArrayLike, sb: ArrayLike, nb: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(difference b − a, its pooled variance under equality, the pooled rate), vectorised."""
    sa, na, sb, nb = (np.asarray(x, dtype=float) for x in (sa, na, sb, nb))
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = np.where(na + nb > 0, (sa + sb) / (na + nb), 0.0)
        ok = (na > 0) & (nb > 0)
        diff = np.where(ok, sb / np.where(ok, nb, 1) - sa / np.where(ok, na, 1), 0.0)
        variance = np.where(ok, pooled * (1 - pooled) * (1 / np.where(ok, na, 1) + 1 / np.where(ok, nb, 1)), 0.0)
    return diff, variance, pooled


def sequential_p(a: ArmCounts, b: ArmCounts, metric: str, kappa: float | None = None) -> float:
    """The always-valid p-value of "a and b have the same rate" on `metric` (docs/ab-testing.md)."""
    if is_proportion(metric):
        (sa, na), (sb, nb) = successes_trials(a, metric), successes_trials(b, metric)
        return float(always_valid_p(*proportion_evidence(sa, na, sb, nb), kappa))
    (na, ma, va), (nb, mb, vb) = revenue_moments(a), revenue_moments(b)
    if na == 0 or nb == 0:
        return 1.0
    return float(always_valid_p(mb - ma, va / na + vb / nb, (a.revenue + b.revenue) / (na + nb), kappa))


# -- the public figures -----------------------------------------------------------------------


def compare(arms: list[ArmCounts], metric: str) -> list[ArmStats]:
    """Every arm's figures on `metric`, in the order given. Only non-control arms with a
    denominator compete; fewer than two: every comparative figure is None (nothing is compared).
    The control arm's `rate` is its conversion rate (or revenue per recipient); it sends nothing,
    so it has no click rate."""
    competing = [a for a in arms if not a.is_control and _denominator(a, metric) > 0]
    figures: dict[str, ArmStats] = {}
    if len(competing) >= 2:
        dists = [posterior(a, metric) for a in competing]
        chances, losses = best_of(dists)
        rates = [rate(a, metric) or 0.0 for a in competing]
        lead = leader(chances, rates)
        # Holm over every pair (not only the leader's k − 1: the leader is picked from the data, so
        # its comparisons are not a fixed family); each arm reports its pair with the leader.
        pairs = [(i, j) for i in range(len(competing)) for j in range(i + 1, len(competing))]
        adjusted = dict(zip(pairs, holm([z_test(competing[i], competing[j], metric) for i, j in pairs]), strict=True))
        p_values = {i: adjusted[(min(i, lead), max(i, lead))] for i in range(len(competing)) if i != lead}
        p_values[lead] = max(p_values.values())
        for i, (arm, d) in enumerate(zip(competing, dists, strict=True)):
            low, high = (float(q) for q in d.ppf([(1 - CREDIBLE) / 2, (1 + CREDIBLE) / 2]))
            figures[arm.variant] = ArmStats(arm.variant, rates[i], chances[i], losses[i], (low, high), p_values[i])
    out = []
    for arm in arms:
        if arm.variant in figures and not arm.is_control:
            out.append(figures[arm.variant])
        else:
            clicks = arm.is_control and metric in ("ctr", "unique_clicks")
            out.append(ArmStats(arm.variant, None if clicks else rate(arm, metric), None, None, None, None))
    return out


GRID_POINTS = 161  # over the narrower posterior's ±8 standard deviations (`uplift`)
MAX_GRID_POINTS = 2001
TAIL = 1e-15


def _beta_moments(a: float, b: float) -> tuple[float, float]:
    """Beta(a, b)'s mean and standard deviation."""
    n = a + b
    return a / n, float(np.sqrt(a * b / (n * n * (n + 1))))


def _beta_third(a: float, b: float, sd: float) -> float:
    """Beta(a, b)'s third cumulant (its skewness times sd³)."""
    return 2.0 * (b - a) * float(np.sqrt(a + b + 1.0)) / ((a + b + 2.0) * float(np.sqrt(a * b))) * sd**3


def _beta_pdf(x: NDArray[np.float64], a: float, b: float) -> NDArray[np.float64]:
    """Beta(a, b)'s density at x (0 outside [0, 1]), for a, b ≥ 1, from logs (no frozen scipy
    distribution: freezing one costs more than the whole computation)."""
    inside = (x > 0.0) & (x < 1.0)
    out = np.zeros_like(x)
    xi = x[inside]
    out[inside] = np.exp((a - 1) * np.log(xi) + (b - 1) * np.log1p(-xi) - special.betaln(a, b))
    if a == 1.0:  # the density's limits at the ends, where the logs cannot go
        out[x == 0.0] = b
    if b == 1.0:
        out[x == 1.0] = a
    return out


def uplift(treatment: ArmCounts, control: ArmCounts) -> Uplift:
    """The treatment's conversion rate over the control's, both converters / recipients; the
    interval and chance from the two Beta posteriors (the interval by inverting the exact CDF of
    their difference, P(X_t − X_c ≤ d) = ∫ f_c(y) F_t(y + d) dy, by the trapezoid rule on the
    control's grid: Newton's steps from the normal approximation's bounds, both bounds at once, with
    the difference's density ∫ f_c(y) f_t(y + d) dy; brentq over [-1, 1] should a step fail)."""
    if treatment.recipients <= 0 or control.recipients <= 0:
        return Uplift(None, None, None, None)
    rt, rc = treatment.converters / treatment.recipients, control.converters / control.recipients
    (at, bt), (ac, bc) = posterior(treatment, "conversions").args, posterior(control, "conversions").args
    (mt, st), (mc, sc) = _beta_moments(at, bt), _beta_moments(ac, bc)
    # Integrate over the narrower posterior (the other's CDF is then smooth on the grid's scale):
    # P(X_t − X_c ≤ d) = ∫ f_c(y) F_t(y + d) dy = ∫ f_t(x) (1 − F_c(x − d)) dx.
    over_control = sc <= st
    (an, bn, mn, sn), (aw, bw) = ((ac, bc, mc, sc), (at, bt)) if over_control else ((at, bt, mt, st), (ac, bc))
    sign = 1.0 if over_control else -1.0
    # From its 1e-15 to its 1 - 1e-15 quantile (about ±8 standard deviations of a symmetric one; a
    # skewed one near 0 or 1 reaches further on its long side), a tenth of a standard deviation apart.
    low, high = (float(v) for v in special.betaincinv(an, bn, np.array([TAIL, 1.0 - TAIL])))
    points = int(min(MAX_GRID_POINTS, max(GRID_POINTS, (high - low) / (sn / 10.0) + 1)))
    if an == 1.0 or bn == 1.0:  # the density is cut off at 0 or 1, not tapering: a finer grid
        points = min(4 * MAX_GRID_POINTS, 8 * points)
    grid = np.linspace(low, high, points)
    weights = _beta_pdf(grid, an, bn)
    weights /= float(integrate.trapezoid(weights, grid))
    wanted = np.array([(1 - CREDIBLE) / 2, (1 + CREDIBLE) / 2])

    def shifted(d: NDArray[np.float64]) -> NDArray[np.float64]:
        return grid[:, None] + sign * d[None, :]

    def cdf(d: NDArray[np.float64]) -> NDArray[np.float64]:
        f = special.betainc(aw, bw, np.clip(shifted(d), 0.0, 1.0))
        return np.asarray(integrate.trapezoid(weights[:, None] * (f if over_control else 1.0 - f), grid, axis=0))

    def density(d: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(integrate.trapezoid(weights[:, None] * _beta_pdf(shifted(d), aw, bw), grid, axis=0))

    # The start: the Cornish-Fisher bounds from the difference's mean, spread and skewness (a
    # Beta's third cumulant is 2(b − a)√(a + b + 1) / ((a + b + 2)√(ab)) σ³): two of Newton's steps
    # then reach a hundred-millionth of a standard deviation, where the normal bounds took three.
    spread = float(np.hypot(st, sc))
    skew = (_beta_third(at, bt, st) - _beta_third(ac, bc, sc)) / spread**3
    z = special.ndtri(wanted)
    d = (mt - mc) + spread * (z + skew * (z * z - 1.0) / 6.0)
    tolerance = max(1e-12, 1e-8 * spread)
    converged = False
    for _ in range(12):
        slope = density(d)
        if not np.all(slope > 1e-12):
            break
        step = (cdf(d) - wanted) / slope
        d = d - step
        if not np.all(np.abs(d) <= 1.0):
            break
        if np.all(np.abs(step) <= tolerance):
            converged = True
            break
    if not converged:
        d = np.array(
            [
                float(optimize.brentq(lambda v, q=q: float(cdf(np.array([v]))[0]) - q, -1.0, 1.0, xtol=1e-10))
                for q in wanted
            ]
        )
    low, high = float(d[0]), float(d[1])
    return Uplift(rt - rc, (rt - rc) / rc if rc > 0 else None, (low, high), beta_beats(ac, bc, at, bt))


def srm(observed: list[int], weights: list[float]) -> SRM:
    """Chi-squared goodness of fit of the observed split against the weights; `ok` unless
    p < 0.001. An arm of weight 0 that has units is a mismatch; nothing observed is no evidence."""
    total = sum(observed)
    pairs = [(o, w) for o, w in zip(observed, weights, strict=True) if w > 0 or o > 0]
    if total <= 0 or len(pairs) < 2:
        return SRM(1.0, True)
    if any(w <= 0 for _, w in pairs):
        return SRM(0.0, False)
    weight_sum = sum(w for _, w in pairs)
    expected = [total * w / weight_sum for _, w in pairs]
    statistic = sum((o - e) ** 2 / e for (o, _), e in zip(pairs, expected, strict=True))
    p = float(special.chdtrc(len(pairs) - 1, statistic))  # chi²'s survival function, as scipy's chisquare
    return SRM(p, p >= SRM_P)
