"""Upper-tail probabilities of the counting distributions the detectors test against.

``binomial_sf`` (``k`` of ``n`` amounts outside their usual band, baseline share ``p``) and
``poisson_sf`` (``k`` small declines in a minute, baseline mean ``mu``) are exact sums,
computed from the first term (``math.lgamma``) by the term-to-term ratio, and stopped when
the terms no longer matter. Above the mean the terms fall geometrically, so a significant
tail takes a few dozen terms whatever ``n``; below the mean the complement is summed the
same way. They are called once per entity per evaluation, never per event.

Written here rather than taken from ``scipy.special`` (``bdtrc``, ``pdtrc``): two sums do
not justify a 40 MB dependency of the core, and the tests hold these to brute-force sums.

References:
    [^1]: Johnson, N.L., Kemp, A.W. and Kotz, S., 2005. Univariate Discrete Distributions,
        3rd ed., ch. 3 (binomial) and 4 (Poisson). Wiley.
"""

from __future__ import annotations

import math

__all__ = ["binomial_sf", "normal_two_sided_score", "poisson_sf"]

_TINY = 1e-17  # relative size of a term below which the sum stops


def binomial_sf(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``.

    >>> round(binomial_sf(3, 10, 0.1), 6)
    0.070191
    >>> binomial_sf(0, 10, 0.1), binomial_sf(11, 10, 0.1)
    (1.0, 0.0)
    >>> binomial_sf(60, 100, 0.05) < 1e-40
    True
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)

    def log_pmf(i: int) -> float:
        return (
            math.lgamma(n + 1)
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + i * log_p
            + (n - i) * log_q
        )

    odds = p / (1.0 - p)
    if k > n * p:  # upper tail: sum upward from k
        term = math.exp(log_pmf(k))
        total, i = term, k
        while i < n and term > _TINY * total:
            term *= (n - i) / (i + 1) * odds
            i += 1
            total += term
        return min(1.0, total)
    # k at or below the mean: 1 - P(X <= k - 1), summing downward from k - 1
    term = math.exp(log_pmf(k - 1))
    total, i = term, k - 1
    while i > 0 and term > _TINY * max(total, 1e-300):
        term *= i / (n - i + 1) / odds
        i -= 1
        total += term
    return max(0.0, 1.0 - total)


def poisson_sf(k: int, mu: float) -> float:
    """``P(X >= k)`` for ``X ~ Poisson(mu)``.

    >>> round(poisson_sf(5, 1.0), 6)
    0.00366
    >>> poisson_sf(0, 3.0), poisson_sf(1, 0.0)
    (1.0, 0.0)
    >>> poisson_sf(40, 2.0) < 1e-30
    True
    """
    if k <= 0:
        return 1.0
    if mu <= 0.0:
        return 0.0
    log_mu = math.log(mu)
    if k > mu:
        term = math.exp(k * log_mu - mu - math.lgamma(k + 1))
        total, i = term, k
        while term > _TINY * total:
            term *= mu / (i + 1)
            i += 1
            total += term
        return min(1.0, total)
    term = math.exp((k - 1) * log_mu - mu - math.lgamma(k))
    total, i = term, k - 1
    while i > 0 and term > _TINY * max(total, 1e-300):
        term *= i / mu
        i -= 1
        total += term
    return max(0.0, 1.0 - total)


def normal_two_sided_score(z: float) -> float:
    """``1 - P(|Z| >= |z|)`` for a standard normal ``Z``: a z-score mapped to [0, 1].

    >>> round(normal_two_sided_score(1.96), 3), normal_two_sided_score(0.0)
    (0.95, 0.0)
    """
    return math.erf(abs(z) / math.sqrt(2.0))
