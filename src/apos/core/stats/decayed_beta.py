"""Success rate with exponential forgetting in event time: discounted Beta counts."""

from __future__ import annotations

import math
from typing import Self

__all__ = ["DecayedBeta", "decay_factor"]

_LN2 = math.log(2.0)


def decay_factor(elapsed_s: float, half_life_s: float) -> float:
    """Weight left after ``elapsed_s`` seconds: ``2 ** (-elapsed_s / half_life_s)``.

    Negative elapsed times (an older event than the last one seen) give 1: state is never
    inflated by going back in time.

    >>> decay_factor(3600, 3600), decay_factor(7200, 3600), decay_factor(-5, 3600)
    (0.5, 0.25, 1.0)
    """
    if elapsed_s <= 0.0:
        return 1.0
    return math.exp(-elapsed_s * _LN2 / half_life_s)


class DecayedBeta:
    """Posterior of a success probability from exponentially discounted outcome counts.

    Each outcome at event time ``t_i`` counts with weight ``2 ** (-(T - t_i) / half_life)``,
    where ``T`` is the latest event time seen, so an outcome one half-life old counts half.
    The posterior is ``Beta(prior_a + S, prior_b + F)`` where ``S`` and ``F`` are the
    discounted success and failure counts. This is the discounted Beta-Bernoulli model of
    discounted Thompson sampling [^1]; ``S + F`` is the *evidence*, which converges to
    ``rate * half_life / ln 2`` under steady traffic.

    The decay is lazy and O(1): the counts are stored as of ``last_ts`` and discounted when
    read or updated. An event older than ``last_ts`` (late arrival) is added with its own
    discount instead, so the result does not depend on the order events arrive in.

    Parameters:
        half_life_s: Seconds of event time after which an outcome's weight halves.
        prior_a: Pseudo-successes of the prior.
        prior_b: Pseudo-failures of the prior.

    Attributes:
        successes: Discounted success count as of ``last_ts``.
        failures: Discounted failure count as of ``last_ts``.
        last_ts: Event time of the latest outcome, or ``None`` before the first.

    Examples:
        >>> sr = DecayedBeta(half_life_s=3600)
        >>> for ts, outcome in [(0, 1), (0, 1), (0, 1), (0, 0)]:
        ...     _ = sr.update(outcome, now=ts)
        >>> sr.get(now=0)  # (1 + 3) / (2 + 4)
        0.6666666666666666
        >>> sr.counts(now=3600)  # one half-life later every count has halved
        (1.5, 0.5)
        >>> sr.update(0, now=3600).get(now=3600)  # (1 + 1.5) / (2 + 3)
        0.5

    References:
        [^1]: Raj, V. and Kalyani, S., 2017. Taming non-stationary bandits: a Bayesian
            approach. arXiv:1707.09727.
    """

    __slots__ = ("failures", "half_life_s", "last_ts", "prior_a", "prior_b", "successes")

    def __init__(self, half_life_s: float, prior_a: float = 1.0, prior_b: float = 1.0) -> None:
        if not half_life_s > 0.0:
            raise ValueError("half_life_s must be positive")
        if not (prior_a > 0.0 and prior_b > 0.0):
            raise ValueError("prior_a and prior_b must be positive")
        self.half_life_s = half_life_s
        self.prior_a = prior_a
        self.prior_b = prior_b
        self.successes = 0.0
        self.failures = 0.0
        self.last_ts: float | None = None

    def update(self, x: float, now: float) -> Self:
        """Learn one outcome: ``x`` is 1 for a success, 0 for a failure (or a fraction)."""
        if self.last_ts is None:
            self.last_ts = now
            weight = 1.0
        elif now >= self.last_ts:
            kept = decay_factor(now - self.last_ts, self.half_life_s)
            self.successes *= kept
            self.failures *= kept
            self.last_ts = now
            weight = 1.0
        else:
            weight = decay_factor(self.last_ts - now, self.half_life_s)
        self.successes += weight * x
        self.failures += weight * (1.0 - x)
        return self

    def counts(self, now: float) -> tuple[float, float]:
        """The discounted ``(successes, failures)`` as of ``now``."""
        if self.last_ts is None:
            return 0.0, 0.0
        kept = decay_factor(now - self.last_ts, self.half_life_s)
        return self.successes * kept, self.failures * kept

    def evidence(self, now: float) -> float:
        """Discounted number of outcomes behind the estimate."""
        s, f = self.counts(now)
        return s + f

    def posterior(self, now: float) -> tuple[float, float]:
        """The Beta posterior's ``(a, b)`` as of ``now``."""
        s, f = self.counts(now)
        return self.prior_a + s, self.prior_b + f

    def get(self, now: float) -> float:
        """Posterior mean success probability as of ``now``."""
        a, b = self.posterior(now)
        return a / (a + b)

    def __repr__(self) -> str:
        s, f = self.successes, self.failures
        return f"DecayedBeta(successes={s:.3f}, failures={f:.3f}, last_ts={self.last_ts})"
