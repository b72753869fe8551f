"""Routing policies and what they learn from.

* :mod:`~apos.core.routing.learner`: success rate and latency per connector x context, with
  decay in event time and hierarchical shrinkage;
* :mod:`~apos.core.routing.draws`: the posterior draws behind Thompson sampling, propensities
  and confidences;
* :mod:`~apos.core.routing.thompson`, :mod:`~apos.core.routing.greedy`: learning policies;
* :mod:`~apos.core.routing.rules`: static rules, every policy's fallback.
"""

from apos.core.routing.base import Candidates, LearningPolicy
from apos.core.routing.draws import PosteriorDraws
from apos.core.routing.greedy import EpsilonGreedy
from apos.core.routing.learner import ContextLearner, hierarchical_posterior
from apos.core.routing.rules import RuleChoice, RulesPolicy, rule_matches, stable_fraction
from apos.core.routing.thompson import ThompsonSampling

__all__ = [
    "Candidates",
    "ContextLearner",
    "EpsilonGreedy",
    "LearningPolicy",
    "PosteriorDraws",
    "RuleChoice",
    "RulesPolicy",
    "ThompsonSampling",
    "hierarchical_posterior",
    "rule_matches",
    "stable_fraction",
]
