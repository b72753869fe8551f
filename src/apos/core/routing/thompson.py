"""Thompson sampling over the learnt Beta posteriors."""

from __future__ import annotations

import random

from apos.core.routing.base import Candidates

__all__ = ["ThompsonSampling"]


class ThompsonSampling:
    """Route to the winner of one posterior draw; propensity = that candidate's win share.

    The draw is a uniformly random row of the engine's fixed draws table (see
    :mod:`apos.core.routing.draws`), so the probability of picking candidate ``i`` is exactly
    the share of rows it wins, which is also the posterior probability that it is the best:
    Thompson sampling's "probability matching" [^1]. Exploration fades by itself as the
    posteriors sharpen and returns as decay widens them again.

    Examples:
        >>> from apos.core.routing.draws import PosteriorDraws
        >>> winners, shares = PosteriorDraws(256, seed=1).win_table([30, 25], [10, 15], None)
        >>> candidates = Candidates(["stripe", "adyen"], [0.75, 0.625], shares, winners, 0)
        >>> index, propensity = ThompsonSampling().choose(candidates, random.Random(3))
        >>> propensity == shares[index]
        True

    References:
        [^1]: Thompson, W.R., 1933. On the likelihood that one unknown probability exceeds
            another in view of the evidence of two samples. Biometrika, 25(3/4), 285-294.
        [^2]: Chapelle, O. and Li, L., 2011. An empirical evaluation of Thompson sampling.
            NeurIPS 24.
    """

    name = "thompson"

    def choose(self, candidates: Candidates, rng: random.Random) -> tuple[int, float]:
        """Pick the winner of a random row of the draws table."""
        winners = candidates.winners
        if winners is None:
            return 0, 1.0
        index = int(winners[rng.randrange(len(winners))])
        return index, candidates.shares[index]
