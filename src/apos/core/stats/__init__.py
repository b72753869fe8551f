"""Online statistics in event time: decayed success rates and means, intervals, approximations.

Every estimator follows :class:`~apos.core.stats.base.EventTimeStatistic`: ``update(x, now)``
learns one value and returns the estimator, ``get(now)`` reads it.
"""

from apos.core.stats.base import EventTimeStatistic
from apos.core.stats.decayed_beta import DecayedBeta, decay_factor
from apos.core.stats.decayed_mean import DecayedMean
from apos.core.stats.logit_normal import beta_logit_moments, digamma, trigamma
from apos.core.stats.proportions import Z95, newcombe_difference_interval, wilson_interval

__all__ = [
    "Z95",
    "DecayedBeta",
    "DecayedMean",
    "EventTimeStatistic",
    "beta_logit_moments",
    "decay_factor",
    "digamma",
    "newcombe_difference_interval",
    "trigamma",
    "wilson_interval",
]
