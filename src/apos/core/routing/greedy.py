"""Epsilon-greedy on the expected score: the plain baseline next to Thompson sampling."""

from __future__ import annotations

import random

from apos.core.routing.base import Candidates

__all__ = ["EpsilonGreedy"]


class EpsilonGreedy:
    """Route to the best expected score; with probability ``epsilon`` to a uniform candidate.

    The propensity is exact: ``1 - epsilon + epsilon / K`` for the greedy candidate and
    ``epsilon / K`` for any other, with ``K`` candidates.

    Parameters:
        epsilon: Exploration probability.

    Examples:
        >>> candidates = Candidates(["stripe", "adyen"], [0.9, 0.8], [0.8, 0.2], None, 0)
        >>> EpsilonGreedy(epsilon=0.0).choose(candidates, random.Random(1))
        (0, 1.0)
        >>> EpsilonGreedy(epsilon=1.0).choose(candidates, random.Random(1))
        (0, 0.5)

    References:
        [^1]: Sutton, R.S. and Barto, A.G., 2018. Reinforcement Learning: An Introduction,
            2nd ed., section 2.2. MIT Press.
    """

    name = "greedy"

    def __init__(self, epsilon: float) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError("epsilon must be in [0, 1]")
        self.epsilon = epsilon

    def choose(self, candidates: Candidates, rng: random.Random) -> tuple[int, float]:
        """Pick greedily, or uniformly with probability ``epsilon``."""
        k = len(candidates.connectors)
        greedy = candidates.greedy
        index = rng.randrange(k) if rng.random() < self.epsilon else greedy
        uniform = self.epsilon / k
        return index, (1.0 - self.epsilon + uniform) if index == greedy else uniform
