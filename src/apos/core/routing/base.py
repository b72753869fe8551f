"""What a learning policy sees and the one method it has."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = ["Candidates", "LearningPolicy"]


@dataclass(slots=True)
class Candidates:
    """The learner's view of the connectors a policy may pick from, for one payment.

    Attributes:
        connectors: The candidates (eligible and not held back by a breaker).
        mean_scores: Objective at the posterior mean: ``E[P(success)] - penalties``.
        shares: Posterior probability that each candidate has the best score (the rows of
            the draws table it wins; see :mod:`apos.core.routing.draws`).
        winners: The winner of each row of the draws table; ``None`` for one candidate.
        greedy: Index of the best mean score (first on ties).
    """

    connectors: list[str]
    mean_scores: list[float]
    shares: list[float]
    winners: NDArray[np.intp] | None
    greedy: int


class LearningPolicy(Protocol):
    """Picks a candidate and says with what probability it would pick it."""

    name: str

    def choose(self, candidates: Candidates, rng: random.Random) -> tuple[int, float]:
        """Return ``(index of the chosen candidate, propensity of that choice)``."""
        ...
