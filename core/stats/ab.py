"""A/B statistics: Beta-Binomial posteriors compared by Monte Carlo.

Each variant's rate (CTR or conversion rate) gets a Beta(1 + successes, 1 + failures) posterior
(a uniform prior). From joint draws we read, per variant, the chance to be best, the expected
loss of choosing it (how much rate we give up on average if another one is really better), and
a 95 % credible interval. For the `revenue` metric the rate is scaled by the variant's average
revenue per conversion (a point estimate, stated as such). Draws use a fixed seed so the same
numbers give the same answer on every read.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DRAWS = 20_000


@dataclass(frozen=True)
class Arm:
    name: str
    successes: int
    trials: int
    value: float = 1.0  # what one success is worth (1 for rates; average revenue for revenue)


@dataclass(frozen=True)
class Posterior:
    name: str
    mean: float
    chance_to_win: float
    expected_loss: float
    interval: tuple[float, float]


def compare(arms: list[Arm], *, draws: int = DRAWS, seed: int = 0) -> list[Posterior]:
    if not arms:
        return []
    rng = random.Random(seed)
    samples = [[0.0] * draws for _ in arms]
    for i, arm in enumerate(arms):
        alpha = 1 + max(0, arm.successes)
        beta = 1 + max(0, arm.trials - arm.successes)
        column = samples[i]
        for d in range(draws):
            column[d] = rng.betavariate(alpha, beta) * arm.value
    wins = [0] * len(arms)
    loss = [0.0] * len(arms)
    for d in range(draws):
        values = [column[d] for column in samples]
        best = max(values)
        wins[values.index(best)] += 1
        for i, v in enumerate(values):
            loss[i] += best - v
    out = []
    for i, arm in enumerate(arms):
        ordered = sorted(samples[i])
        low, high = ordered[int(0.025 * (draws - 1))], ordered[int(0.975 * (draws - 1))]
        out.append(
            Posterior(
                name=arm.name,
                mean=(1 + arm.successes) / (2 + arm.trials) * arm.value,
                chance_to_win=round(wins[i] / draws, 4),
                expected_loss=round(loss[i] / draws, 6),
                interval=(round(low, 6), round(high, 6)),
            )
        )
    return out


def pick_winner(posteriors: list[Posterior], *, threshold: float = 0.95) -> Posterior | None:
    """The variant whose chance to win reaches `threshold`, if any."""
    best = max(posteriors, key=lambda p: p.chance_to_win, default=None)
    return best if best is not None and best.chance_to_win >= threshold else None
