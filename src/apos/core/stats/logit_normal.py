"""Gaussian approximation of a Beta posterior in log-odds space.

If ``p ~ Beta(a, b)`` then ``logit(p)`` has mean ``digamma(a) - digamma(b)`` and variance
``trigamma(a) + trigamma(b)`` exactly; approximating ``logit(p)`` by a normal with those
moments (a *logistic-normal* distribution [^1]) lets one table of standard normal draws serve
every posterior (``p = sigmoid(mean + sd * z)``), which is what keeps Thompson sampling and
its propensity cheap on the routing hot path (see :mod:`apos.core.routing.draws`).

:func:`digamma` and :func:`trigamma` are the plain, accurate reference implementations;
:func:`beta_logit_moments` is the fast one used per route, held to them by the tests.

References:
    [^1]: Aitchison, J. and Shen, S.M., 1980. Logistic-normal distributions: some properties
        and uses. Biometrika, 67(2), 261-272.
    [^2]: Bernardo, J.M., 1976. Algorithm AS 103: Psi (digamma) function. Applied Statistics,
        25(3), 315-317.
"""

from __future__ import annotations

import math

__all__ = ["beta_logit_moments", "digamma", "trigamma"]


def digamma(x: float) -> float:
    """The digamma function ``d/dx ln Gamma(x)`` for ``x > 0`` (absolute error < 1e-12).

    Recurrence ``psi(x) = psi(x + 1) - 1/x`` up to ``x >= 10``, then the asymptotic series.

    >>> round(digamma(1.0), 10)  # minus the Euler-Mascheroni constant
    -0.5772156649
    """
    if not x > 0.0:
        raise ValueError("digamma is defined here for x > 0 only")
    shift = 0.0
    while x < 10.0:
        shift -= 1.0 / x
        x += 1.0
    inv2 = 1.0 / (x * x)
    series = inv2 * (1.0 / 12 - inv2 * (1.0 / 120 - inv2 * (1.0 / 252 - inv2 / 240)))
    return shift + math.log(x) - 0.5 / x - series


def trigamma(x: float) -> float:
    """The trigamma function ``d/dx digamma(x)`` for ``x > 0`` (absolute error < 1e-12).

    >>> round(trigamma(1.0), 10) == round(math.pi**2 / 6, 10)
    True
    """
    if not x > 0.0:
        raise ValueError("trigamma is defined here for x > 0 only")
    shift = 0.0
    while x < 10.0:
        shift += 1.0 / (x * x)
        x += 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    tail = inv * inv2 * (1.0 / 6 - inv2 * (1.0 / 30 - inv2 * (1.0 / 42 - inv2 / 30)))
    series = inv + 0.5 * inv2 + tail
    return shift + series


def beta_logit_moments(a: float, b: float) -> tuple[float, float]:
    """``(mean, variance)`` of ``logit(p)`` for ``p ~ Beta(a, b)``; fast, error < 1e-4.

    Two steps of the digamma/trigamma recurrence, then four terms of the asymptotic series
    at ``y >= 2``: a dozen float operations and two logarithms, no loops.

    >>> mean, var = beta_logit_moments(9.0, 1.0)
    >>> round(mean, 4), round(var, 4)  # exact: 2.7179, 1.7624
    (2.7179, 1.7624)
    """
    ya = a + 2.0
    yb = b + 2.0
    ia = 1.0 / ya
    ib = 1.0 / yb
    ia2 = ia * ia
    ib2 = ib * ib
    psi_a = math.log(ya) - 0.5 * ia - ia2 * (1.0 / 12 - ia2 / 120) - 1.0 / a - 1.0 / (a + 1.0)
    psi_b = math.log(yb) - 0.5 * ib - ib2 * (1.0 / 12 - ib2 / 120) - 1.0 / b - 1.0 / (b + 1.0)
    tri_a = ia + 0.5 * ia2 + ia * ia2 * (1.0 / 6 - ia2 / 30) + 1.0 / (a * a)
    tri_a += 1.0 / ((a + 1.0) * (a + 1.0))
    tri_b = ib + 0.5 * ib2 + ib * ib2 * (1.0 / 6 - ib2 / 30) + 1.0 / (b * b)
    tri_b += 1.0 / ((b + 1.0) * (b + 1.0))
    return psi_a - psi_b, tri_a + tri_b
