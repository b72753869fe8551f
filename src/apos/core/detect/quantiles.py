"""A mergeable quantile sketch with relative accuracy: the DDSketch of Masson, Rim & Lee.

Why not a library: Apache DataSketches' KLL sketch compacts with random coin flips seeded
from the system, so the same latencies give slightly different quantiles from run to run
(measured: p95 of one stream of 100,000 values came out 332, 335 and 340 in three runs),
which breaks the core's promise that the same stream gives the same findings; the
``ddsketch`` package is deterministic but costs about 3.5 µs per value in pure Python and
serialises only through protobuf. The algorithm itself is a dozen lines: bucket ``i`` holds
the values in ``(gamma ** (i - 1), gamma ** i]`` with ``gamma = (1 + a) / (1 - a)``, and the
bucket's midpoint ``2 gamma ** i / (gamma + 1)`` is within relative error ``a`` of every
value in it. Merging adds counts, so sketches of intervals combine into windows exactly.
Values are binned a batch at a time with numpy (per evaluation interval, not per event).

>>> sketch = LogHistogram(0.01)
>>> sketch.add_many([float(x) for x in range(1, 1001)])
>>> abs(sketch.quantile(0.95) - 950) / 950 <= 0.01
True
>>> other = LogHistogram.from_dict(sketch.to_dict())
>>> other.merge(sketch)
>>> other.count, abs(other.quantile(0.5) - 500) / 500 <= 0.01
(2000, True)

References:
    [^1]: Masson, C., Rim, J.E. and Lee, H.K., 2019. DDSketch: a fast and fully-mergeable
        quantile sketch with relative-error guarantees. PVLDB 12(12), 2195-2205.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["LogHistogram"]

_MIN_VALUE = 1e-3  # values at or below this are counted in the zero bucket


class LogHistogram:
    """Counts of values in logarithmic buckets of relative width ``2 * relative_accuracy``.

    Parameters:
        relative_accuracy: ``a``: every quantile is returned within relative error ``a``.

    Attributes:
        count: Number of values added.
        zeros: Values at or below 0.001 (a latency of 0 ms).
        bins: Bucket index -> count.
    """

    __slots__ = ("bins", "count", "log_gamma", "relative_accuracy", "zeros")

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError("relative_accuracy must be in (0, 1)")
        self.relative_accuracy = relative_accuracy
        gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
        self.log_gamma = math.log(gamma)
        self.bins: dict[int, int] = {}
        self.zeros = 0
        self.count = 0

    def add_many(self, values: Sequence[float]) -> None:
        """Add a batch of non-negative values."""
        if not values:
            return
        array = np.asarray(values, dtype=np.float64)
        positive = array[array > _MIN_VALUE]
        self.zeros += int(array.size - positive.size)
        self.count += int(array.size)
        if positive.size:
            keys = np.ceil(np.log(positive) / self.log_gamma).astype(np.int64)
            low = int(keys.min())
            counts = np.bincount(keys - low)  # faster than np.unique on a few hundred keys
            bins = self.bins
            for offset in np.flatnonzero(counts).tolist():
                key = low + offset
                bins[key] = bins.get(key, 0) + int(counts[offset])

    def merge(self, other: LogHistogram) -> None:
        """Add ``other``'s counts (same relative accuracy)."""
        if other.log_gamma != self.log_gamma:
            raise ValueError("cannot merge sketches of different accuracy")
        bins = self.bins
        for key, count in other.bins.items():
            bins[key] = bins.get(key, 0) + count
        self.zeros += other.zeros
        self.count += other.count

    def is_empty(self) -> bool:
        """Whether no value was added."""
        return self.count == 0

    def _value(self, key: int) -> float:
        return 2.0 * math.exp(key * self.log_gamma) / (math.exp(self.log_gamma) + 1.0)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (lower), within the relative accuracy; 0.0 when empty."""
        if self.count == 0:
            return 0.0
        rank = q * (self.count - 1)
        seen = self.zeros
        if rank < seen:
            return 0.0
        for key in sorted(self.bins):
            seen += self.bins[key]
            if seen > rank:
                return self._value(key)
        return self._value(max(self.bins))

    def count_above(self, threshold: float) -> int:
        """Values in buckets wholly above ``threshold`` (an estimate of those above it)."""
        if threshold <= _MIN_VALUE:
            return self.count - self.zeros
        limit = math.ceil(math.log(threshold) / self.log_gamma)
        return sum(c for key, c in self.bins.items() if key > limit)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form."""
        keys = sorted(self.bins)
        return {
            "relative_accuracy": self.relative_accuracy,
            "zeros": self.zeros,
            "keys": keys,
            "counts": [self.bins[k] for k in keys],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> LogHistogram:
        """Rebuild from :meth:`to_dict`."""
        sketch = cls(float(state["relative_accuracy"]))
        sketch.zeros = int(state["zeros"])
        sketch.bins = {int(k): int(c) for k, c in zip(state["keys"], state["counts"], strict=True)}
        sketch.count = sketch.zeros + sum(sketch.bins.values())
        return sketch
