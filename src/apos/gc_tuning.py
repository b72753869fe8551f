"""Garbage-collector settings for a long-running APOS process.

The engine and the anomaly monitor keep large, long-lived tables (learnt arms, fingerprint
windows, sketches) that every event touches and that grow with traffic. CPython's default
collector thresholds (700, 10, 10) make the older generations be traversed again and again
while those tables fill: measured with ``bench/ingest.py``'s events, the fraud detector
alone spent 7.8 µs per event with the defaults and 3.4 µs with the older thresholds
raised (docs/benchmarks.md, "Anomaly detection"). The cure is the one large Python
services use: freeze what start-up built (imported modules, configuration, the restored
state) so no collection walks it again, and collect less often. Reference cycles are still
collected, only less often; the freeze happens once per process, so objects of a later
start (tests build many services in one process) are not pinned.
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLDS", "tune_gc"]

_frozen = False

# (young, middle, old): a young collection every 50,000 net container allocations (a few
# hundred events), the older generations 20 times rarer each.
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Apply :data:`GC_THRESHOLDS`; the first call also freezes every object alive now."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
