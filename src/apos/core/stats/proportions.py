"""Confidence intervals for success rates and their differences (A/B tests)."""

from __future__ import annotations

import math

__all__ = ["Z95", "newcombe_difference_interval", "wilson_interval"]

Z95 = 1.959963984540054  # two-sided 95% standard normal quantile


def wilson_interval(successes: float, attempts: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a success rate.

    Unlike the normal ("Wald") interval it stays inside [0, 1] and keeps its coverage for
    small samples and rates near 0 or 1, which is where payment success rates live.
    With no attempts the interval is the whole of [0, 1].

    Parameters:
        successes: Number of successes.
        attempts: Number of attempts (``successes <= attempts``).
        z: Standard normal quantile; the default gives 95%.

    >>> low, high = wilson_interval(81, 263)
    >>> round(low, 4), round(high, 4)
    (0.2553, 0.3662)

    References:
        [^1]: Wilson, E.B., 1927. Probable inference, the law of succession, and statistical
            inference. Journal of the American Statistical Association, 22(158), 209-212.
    """
    if attempts <= 0:
        return 0.0, 1.0
    p = successes / attempts
    z2 = z * z
    denom = 1.0 + z2 / attempts
    center = (p + z2 / (2.0 * attempts)) / denom
    half = z / denom * math.sqrt(max(p * (1.0 - p) / attempts + z2 / (4.0 * attempts**2), 0.0))
    return max(0.0, center - half), min(1.0, center + half)


def newcombe_difference_interval(
    successes_a: float,
    attempts_a: float,
    successes_b: float,
    attempts_b: float,
    z: float = Z95,
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for ``rate_b - rate_a`` (his method 10).

    Combines the two Wilson intervals; it is the interval Newcombe found to keep its nominal
    coverage best among eleven methods, including for small counts, where the normal
    approximation of the difference is too narrow.

    Parameters:
        successes_a: Successes of arm A (control).
        attempts_a: Attempts of arm A.
        successes_b: Successes of arm B (treatment).
        attempts_b: Attempts of arm B.
        z: Standard normal quantile; the default gives 95%.

    >>> low, high = newcombe_difference_interval(48, 80, 56, 70)  # 0.8 - 0.6
    >>> round(low, 4), round(high, 4)
    (0.0524, 0.3339)

    References:
        [^1]: Newcombe, R.G., 1998. Interval estimation for the difference between
            independent proportions: comparison of eleven methods. Statistics in Medicine,
            17(8), 873-890.
    """
    if attempts_a <= 0 or attempts_b <= 0:
        return -1.0, 1.0
    pa = successes_a / attempts_a
    pb = successes_b / attempts_b
    la, ua = wilson_interval(successes_a, attempts_a, z)
    lb, ub = wilson_interval(successes_b, attempts_b, z)
    diff = pb - pa
    low = diff - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
    high = diff + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)
    return max(-1.0, low), min(1.0, high)
