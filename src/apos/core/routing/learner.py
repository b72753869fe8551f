"""Success rate and latency per connector x context: decay, change detection, shrinkage.

Every final outcome updates one *cell* (discounted successes, failures, latency sum and
weight) per level of the payment's context path (:mod:`apos.core.payment`), for the
connector that handled it: six cells per event, so a level's counts include its children's.

**Reading** a connector's success rate for a payment walks the path from the coarsest level
down. Each level's prior comes from its parent's data *minus its own* (its siblings' data),
so every outcome is counted exactly once; only the finest level adds its own counts::

    prior of level 0:      (a_0, b_0) = (k_0 m_0, k_0 (1 - m_0))
    rest of level l:       (r_a, r_b) = (a_l + S_l - S_{l+1}, b_l + F_l - F_{l+1}),  r = r_a + r_b
    prior of level l + 1:  (a_{l+1}, b_{l+1}) = kappa_{l+1} (r_a, r_b) / r
    posterior (level 5):   Beta(a_5 + S_5, b_5 + F_5)

``S_l, F_l`` are the connector's discounted successes and failures in the level-``l``
context and ``m_0, k_0`` the prior (``prior_success_rate``, ``prior_strength``). How much a
context borrows, ``kappa``, is decided by its own data (spike-and-slab pooling [^3]): with
``n = S + F`` outcomes at rate ``p_c`` against the siblings' rate ``p_r = r_a / r``,

.. code-block:: text

    kappa = r                           if r <= k    (siblings know little: take it all)
    kappa = k + w (r - k)               otherwise
    w     = pi BF / (pi BF + 1 - pi)    posterior probability "same rate as the siblings"
    BF    = sqrt(1 + g) exp(-z2 g / (2 (1 + g)))
    z2    = (p_c - p_r)^2 / (pbar (1 - pbar) c),  g = 1 / ((k + 1) c),  c = 1/n + 1/r

(``w = pi`` when ``n = 0``; ``pbar`` pools both). ``BF`` is the normal-approximation Bayes
factor of "the context's rate equals its siblings'" (the spike) against "it differs by
``N(0, tau^2)``" with ``tau^2 = pbar (1 - pbar) / (k + 1)`` (the slab: a Beta prior of
strength ``k``, ``shrinkage_strength``) [^4]; ``pi`` is ``pooling_prior``. Payment data
fit this well: most finer splits (this country, that amount band) change nothing, a few
change a lot. A context that behaves like its siblings borrows (nearly) all they know, so
10,000 sparse contexts explore little; one that differs is shrunk by only ``k``
pseudo-outcomes. ``pi = 0`` gives plain fixed-``k`` shrinkage [^1] [^2].

**Forgetting** is exponential in event time (``half_life_s``) and, on top, by change
detection: each cell runs two one-sided Bernoulli CUSUMs [^5], tuned to a shift of
``change_shift``, fed by every outcome in its subtree and measured against the rate of
*that payment's own finest context* (once it has ``2 * change_memory`` outcomes), so a coarse
cell sums "these payments do worse (better) than they used to", which a shift in the mix of
payments it sees cannot fake. When they cross ``change_threshold`` the change is placed at
the finest alarming level on the payment's path, or at a coarser one whose CUSUM exceeds that
level's by more than the threshold (evidence from other payments under it); that context
keeps only ``change_memory`` outcomes of its history (at the old rate), its ancestors lose
what it forgot, and every finer context under it forgets too when next touched.
Discounting alone needs about ``half_life * log2(gap ratio)`` to follow an abrupt change;
the detectors follow it in tens to a few hundred outcomes, and are reported as
:class:`ContextChange` through ``Engine.tick``.

Latency follows the same leave-one-out walk with a fixed strength: the prior of level
``l + 1`` is the mean of the parent's prior and its latencies not in level ``l + 1``, worth
``min(k, weight)`` observations; the estimate is ``(strength * prior + T_5) / (strength + W_5)``
with ``T, W`` the discounted latency sums and counts and ``prior_latency_ms`` worth one
observation at level 0.

:func:`hierarchical_posterior` is the plain reference of the formula;
:meth:`ContextLearner.estimate` is the fast one the router uses, and the tests hold the two
to the same answers.

References:
    [^1]: Gelman, A. et al., 2013. Bayesian Data Analysis, 3rd ed., ch. 5 "Hierarchical
        models" (the rat tumour example). CRC Press.
    [^2]: Hong, J., Kveton, B., Zaheer, M. and Ghavamzadeh, M., 2022. Hierarchical Bayesian
        bandits. AISTATS 2022.
    [^3]: Mitchell, T.J. and Beauchamp, J.J., 1988. Bayesian variable selection in linear
        regression. JASA, 83(404), 1023-1032.
    [^4]: Kass, R.E. and Raftery, A.E., 1995. Bayes factors. JASA, 90(430), 773-795.
    [^5]: Page, E.S., 1954. Continuous inspection schemes. Biometrika, 41(1/2), 100-115;
        as a bandit's change detector: Liu, F., Lee, J. and Shroff, N., 2018. A change-
        detection based framework for piecewise-stationary multi-armed bandit problem.
        AAAI 2018.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from apos.core.config import LearnerConfig
from apos.core.payment import ContextPath

__all__ = [
    "ContextChange",
    "ContextLearner",
    "LearnerEstimates",
    "hierarchical_posterior",
    "pooled_strength",
]

_MAX_PENDING_CHANGES = 10_000  # kept between two drains; older ones are dropped

_LN2 = math.log(2.0)

# (a, b, latency_ms, evidence) per connector, in the order asked for.
LearnerEstimates = tuple[list[float], list[float], list[float], list[float]]


def pooled_strength(
    successes: float,
    failures: float,
    rest_a: float,
    rest_b: float,
    shrinkage_strength: float,
    pooling_prior: float,
) -> float:
    """``kappa``: pseudo-outcomes a context borrows from siblings worth ``Beta(rest_a, rest_b)``.

    The reference implementation of the module's spike-and-slab rule.

    >>> round(pooled_strength(20, 2, 500, 60, 10.0, 0.8))  # like its siblings: borrows most
    489
    >>> round(pooled_strength(2, 20, 500, 60, 10.0, 0.8))  # clearly different: only k
    10
    """
    k = shrinkage_strength
    total = rest_a + rest_b
    if total <= k:
        return total
    if pooling_prior <= 0.0:
        return k
    n = successes + failures
    if n <= 0.0:
        same = pooling_prior
    else:
        c = 1.0 / n + 1.0 / total
        g = 1.0 / ((k + 1.0) * c)
        pbar = (successes + rest_a) / (n + total)
        z2 = (successes / n - rest_a / total) ** 2 / (pbar * (1.0 - pbar) * c)
        bf = math.sqrt(1.0 + g) * math.exp(-0.5 * z2 * g / (1.0 + g))
        same = pooling_prior * bf / (pooling_prior * bf + 1.0 - pooling_prior)
    return k + same * (total - k)


def hierarchical_posterior(
    levels: Sequence[tuple[float, float]],
    prior_success_rate: float,
    prior_strength: float,
    shrinkage_strength: float,
    pooling_prior: float = 0.0,
) -> tuple[float, float]:
    """The finest level's Beta ``(a, b)`` from per-level ``(successes, failures)``.

    The reference implementation of the module's formula; levels run coarse to fine and
    each level's counts include the next one's.

    >>> hierarchical_posterior([(1, 0), (1, 0)], 0.5, 2.0, 10.0)  # one success, counted once
    (2.0, 1.0)
    >>> hierarchical_posterior([(90, 10), (0, 0)], 0.5, 2.0, 10.0)  # borrows 10 from siblings
    (8.92156862745098, 1.0784313725490196)
    """
    a = prior_strength * prior_success_rate
    b = prior_strength * (1.0 - prior_success_rate)
    for depth in range(len(levels) - 1):
        successes, failures = levels[depth]
        child_successes, child_failures = levels[depth + 1]
        rest_a = a + max(successes - child_successes, 0.0)
        rest_b = b + max(failures - child_failures, 0.0)
        kappa = pooled_strength(
            child_successes, child_failures, rest_a, rest_b, shrinkage_strength, pooling_prior
        )
        a = kappa * rest_a / (rest_a + rest_b)
        b = kappa * rest_b / (rest_a + rest_b)
    successes, failures = levels[-1]
    return a + successes, b + failures


class _Cell:
    """One connector in one context: discounted sums scaled to the learner's epoch, and the
    change detector's state."""

    __slots__ = (
        "cusum_down",
        "cusum_up",
        "failures",
        "latency_total",
        "latency_weight",
        "reset_ts",
        "successes",
    )

    def __init__(self) -> None:
        self.successes = 0.0
        self.failures = 0.0
        self.latency_total = 0.0
        self.latency_weight = 0.0
        self.cusum_down = 0.0
        self.cusum_up = 0.0
        self.reset_ts = -math.inf

    def forget(self, keep: float, scale: float, at: float) -> None:
        """Shrink the history to at most ``keep`` outcomes (same rates), as of ``at``."""
        evidence = (self.successes + self.failures) * scale
        if evidence > keep:
            ratio = keep / evidence
            self.successes *= ratio
            self.failures *= ratio
            self.latency_total *= ratio
            self.latency_weight *= ratio
        self.cusum_down = self.cusum_up = 0.0
        self.reset_ts = at


@dataclass(frozen=True, slots=True)
class ContextChange:
    """A change of a connector's success rate detected in one context (see ``observe``).

    Attributes:
        connector: The connector.
        context: The context key (``()`` for all payments, ``("m1",)``, ...).
        at: Event time of the outcome that raised the alarm.
        direction: ``down`` or ``up``.
        rate_before: The context's discounted success rate before the change.
    """

    connector: str
    context: tuple[str, ...]
    at: float
    direction: str
    rate_before: float


# Rebase the epoch once weights reach e**_REBASE_AT (tick) or e**_REBASE_MUST (observe):
# far from overflow (e**709) even after multiplying by counts and latencies.
_REBASE_AT = 100.0
_REBASE_MUST = 600.0


class ContextLearner:
    """Discounted Beta posteriors of success and decayed mean latency per connector x context.

    Every sum is kept scaled to a common *epoch* ``T0``: an outcome at event time ``t`` adds
    ``exp((t - T0) ln 2 / half_life)``, and reading at ``now`` multiplies by
    ``exp(-(now - T0) ln 2 / half_life)``, the same factor for every cell. This gives exactly
    the discounted counts of :class:`~apos.core.stats.DecayedBeta` with one ``exp`` per
    route instead of one per cell, and makes late events exact. The epoch moves forward
    (:meth:`rebase`) long before the weights could overflow.

    The learner's clock never runs backwards: reading at a ``now`` earlier than the latest
    event or read seen reads the state as of that latest time.

    Parameters:
        config: Half-life, shrinkage strength and priors.

    Examples:
        >>> from apos.core.payment import context_path_of
        >>> learner = ContextLearner(LearnerConfig(half_life_s=3600))
        >>> visa = context_path_of("m1", "card", "visa", "US", 1999, "USD")
        >>> for i in range(40):
        ...     learner.observe("stripe", visa, success=i % 4 != 0, latency_ms=200.0, ts=0.0)
        >>> a, b, latency, evidence = learner.estimate(["stripe", "adyen"], visa, 0.0, True)
        >>> [round(x / (x + y), 3) for x, y in zip(a, b)]  # stripe: (1 + 30) / (2 + 40)
        [0.738, 0.5]
        >>> [round(x) for x in latency], evidence  # (300 + 40 * 200) / 41: the prior is one
        ([202, 300], [40.0, 0.0])
        >>> mastercard = context_path_of("m1", "card", "mastercard", "US", 1999, "USD")
        >>> a, b, _, _ = learner.estimate(["stripe"], mastercard, 3600.0, False)
        >>> round(a[0] / (a[0] + b[0]), 3)  # no mastercard data: borrows the merchant's rate
        0.727
    """

    def __init__(self, config: LearnerConfig) -> None:
        self.config = config
        self._decay_rate = _LN2 / config.half_life_s
        self._k = config.shrinkage_strength
        self._pooling_prior = config.pooling_prior
        self._change_shift = config.change_shift
        self._change_threshold = config.change_threshold
        self._change_memory = config.change_memory
        self._changes: list[ContextChange] = []
        self._prior_a = config.prior_strength * config.prior_success_rate
        self._prior_b = config.prior_strength * (1.0 - config.prior_success_rate)
        self._prior_latency = config.prior_latency_ms
        self._nodes: dict[tuple[str, ...], dict[str, _Cell]] = {}
        self._epoch: float | None = None
        self._clock = -math.inf
        self._read_scale = 1.0  # exp(-(clock - epoch) * rate), cached for the clock

    def __len__(self) -> int:
        """Number of contexts (all levels) with at least one cell."""
        return len(self._nodes)

    @property
    def clock(self) -> float:
        """The latest event time seen by ``observe`` or ``estimate``."""
        return self._clock

    def _advance(self, now: float) -> None:
        if now > self._clock:
            self._clock = now
            if self._epoch is not None:
                self._read_scale = math.exp(-(now - self._epoch) * self._decay_rate)

    def observe(
        self,
        connector: str,
        path: ContextPath,
        success: bool,
        latency_ms: float | None,
        ts: float,
    ) -> None:
        """Learn one final outcome of ``connector`` for a payment with context ``path``."""
        if self._epoch is None:
            self._epoch = ts if ts > self._clock else self._clock
            self._read_scale = 1.0
        self._advance(ts)
        if (ts - self._epoch) * self._decay_rate > _REBASE_MUST:
            self.rebase(self._clock)
        weight = math.exp((ts - self._epoch) * self._decay_rate)
        scale = self._read_scale
        keep = self._change_memory
        cells_on_path: list[_Cell] = []
        ancestor_reset = -math.inf
        for key in path:
            cells = self._nodes.get(key)
            if cells is None:
                cells = self._nodes[key] = {}
            cell = cells.get(connector)
            if cell is None:
                cell = cells[connector] = _Cell()
            if cell.reset_ts < ancestor_reset:  # a coarser context changed: so did this one
                cell.forget(keep, scale, ancestor_reset)
            elif cell.reset_ts > ancestor_reset:
                ancestor_reset = cell.reset_ts
            cells_on_path.append(cell)
        if self._change_shift > 0.0:
            self._detect(cells_on_path, connector, path, success, ts, scale)
        successes = weight if success else 0.0
        failures = 0.0 if success else weight
        for cell in cells_on_path:
            cell.successes += successes
            cell.failures += failures
            if latency_ms is not None:
                cell.latency_total += weight * latency_ms
                cell.latency_weight += weight

    def _detect(
        self,
        cells: list[_Cell],
        connector: str,
        path: ContextPath,
        success: bool,
        ts: float,
        scale: float,
    ) -> None:
        # Two one-sided Bernoulli CUSUMs per cell (Page 1954), tuned to +/- change_shift. The
        # reference is the rate of the payment's own finest context, at every level: a
        # coarse cell then sums "worse (better) than these payments used to do", which a
        # shift in the mix of payments it sees cannot fake.
        leaf = cells[-1]
        total = leaf.successes + leaf.failures
        if total * scale < 2.0 * self._change_memory:
            return
        p0 = leaf.successes / total
        p0 = 0.01 if p0 < 0.01 else 0.99 if p0 > 0.99 else p0
        low = max(p0 - self._change_shift, 0.005)
        high = min(p0 + self._change_shift, 0.995)
        if success:
            step_down = math.log(low / p0)
            step_up = math.log(high / p0)
        else:
            step_down = math.log((1.0 - low) / (1.0 - p0))
            step_up = math.log((1.0 - high) / (1.0 - p0))
        threshold = self._change_threshold
        alarmed = False
        for cell in cells:
            down = cell.cusum_down + step_down
            up = cell.cusum_up + step_up
            cell.cusum_down = down if down > 0.0 else 0.0
            cell.cusum_up = up if up > 0.0 else 0.0
            alarmed = alarmed or down > threshold or up > threshold
        if not alarmed:
            return
        direction = "down" if max(c.cusum_down for c in cells) > threshold else "up"
        values = [c.cusum_down if direction == "down" else c.cusum_up for c in cells]
        # Localise: the finest alarming level, unless a coarser one has evidence of its own
        # beyond what that level explains (other payments under it changed too).
        level = max(d for d, v in enumerate(values) if v > threshold)
        explained = values[level]
        for depth in range(level - 1, -1, -1):
            if values[depth] - explained > threshold:
                level = depth
                explained = values[depth]
        cell = cells[level]
        before = (cell.successes, cell.failures, cell.latency_total, cell.latency_weight)
        rate_before = before[0] / max(before[0] + before[1], 1e-300)
        for finer in cells[level:]:  # the finer contexts on this path changed with it
            finer.forget(self._change_memory, scale, ts)
        # The coarser ones lose the forgotten outcomes too (else they would come back as
        # "sibling" data in the leave-one-out prior) and have that much evidence explained.
        removed_s = before[0] - cell.successes
        removed_f = before[1] - cell.failures
        removed_t = before[2] - cell.latency_total
        removed_w = before[3] - cell.latency_weight
        for coarser in cells[:level]:
            coarser.successes = max(coarser.successes - removed_s, 0.0)
            coarser.failures = max(coarser.failures - removed_f, 0.0)
            coarser.latency_total = max(coarser.latency_total - removed_t, 0.0)
            coarser.latency_weight = max(coarser.latency_weight - removed_w, 0.0)
            if direction == "down":
                coarser.cusum_down = max(coarser.cusum_down - explained, 0.0)
            else:
                coarser.cusum_up = max(coarser.cusum_up - explained, 0.0)
        if len(self._changes) < _MAX_PENDING_CHANGES:
            self._changes.append(ContextChange(connector, path[level], ts, direction, rate_before))

    def drain_changes(self) -> list[ContextChange]:
        """Changes detected since the last call, in the order they were detected."""
        changes, self._changes = self._changes, []
        return changes

    def estimate(
        self,
        connectors: Sequence[str],
        path: ContextPath,
        now: float,
        with_latency: bool,
    ) -> LearnerEstimates:
        """Posterior ``a``, ``b``, expected latency and root evidence per connector (hot path).

        ``latency`` is empty unless ``with_latency``. ``evidence`` is the connector's
        discounted number of outcomes over every payment (level 0).
        """
        if now > self._clock:
            self._advance(now)
        scale = self._read_scale
        nodes = [self._nodes.get(key) for key in path]
        k = self._k
        k1 = k + 1.0
        keep = self._change_memory
        pool = self._pooling_prior
        pool_odds = (1.0 - pool) / pool if pool > 0.0 else -1.0
        exp = math.exp
        sqrt = math.sqrt
        a_out: list[float] = []
        b_out: list[float] = []
        latency_out: list[float] = []
        evidence_out: list[float] = []
        for connector in connectors:
            a = self._prior_a
            b = self._prior_b
            lat_mean = self._prior_latency
            lat_strength = 1.0
            s_parent = f_parent = -1.0  # no parent yet (level 0)
            t_parent = w_parent = 0.0
            s = f = t = w = 0.0
            ancestor_reset = -math.inf
            for cells in nodes:
                cell = None if cells is None else cells.get(connector)
                if cell is None:
                    s = f = t = w = 0.0
                else:
                    if cell.reset_ts < ancestor_reset:
                        cell.forget(keep, scale, ancestor_reset)
                    elif cell.reset_ts > ancestor_reset:
                        ancestor_reset = cell.reset_ts
                    s = cell.successes * scale
                    f = cell.failures * scale
                    if with_latency:
                        t = cell.latency_total * scale
                        w = cell.latency_weight * scale
                if s_parent < 0.0:
                    evidence_out.append(s + f)
                else:
                    # This level's prior: the parent's prior plus its data not in this level.
                    rest_a = a + (s_parent - s if s_parent > s else 0.0)
                    rest_b = b + (f_parent - f if f_parent > f else 0.0)
                    total = rest_a + rest_b
                    if total <= k:  # the siblings know less than k: borrow all of it
                        kappa = total
                    elif pool_odds >= 0.0:
                        # Spike-and-slab: is this context like its siblings? (module doc)
                        n = s + f
                        if n > 0.0:
                            c = 1.0 / n + 1.0 / total
                            g = 1.0 / (k1 * c)
                            pbar = (s + rest_a) / (n + total)
                            d = s / n - rest_a / total
                            z2 = d * d / (pbar * (1.0 - pbar) * c)
                            bf = sqrt(1.0 + g) * exp(-0.5 * z2 * g / (1.0 + g))
                            kappa = k + bf / (bf + pool_odds) * (total - k)
                        else:
                            kappa = k + pool * (total - k)
                    else:
                        kappa = k
                    a = kappa * rest_a / total
                    b = kappa * rest_b / total
                    if with_latency:
                        rest_w = lat_strength + (w_parent - w if w_parent > w else 0.0)
                        rest_t = lat_mean * lat_strength + (t_parent - t if t_parent > t else 0.0)
                        lat_mean = rest_t / rest_w
                        lat_strength = k if k < rest_w else rest_w
                s_parent = s
                f_parent = f
                t_parent = t
                w_parent = w
            a_out.append(a + s)
            b_out.append(b + f)
            if with_latency:
                latency_out.append((lat_mean * lat_strength + t) / (lat_strength + w))
        return a_out, b_out, latency_out, evidence_out

    def counts(self, connector: str, key: tuple[str, ...], now: float) -> tuple[float, float]:
        """Discounted ``(successes, failures)`` of one connector in one context."""
        self._advance(now)
        cells = self._nodes.get(key)
        cell = None if cells is None else cells.get(connector)
        if cell is None:
            return 0.0, 0.0
        return cell.successes * self._read_scale, cell.failures * self._read_scale

    def rebase(self, epoch: float) -> None:
        """Move the epoch forward to ``epoch`` (at most the clock), rescaling every sum.

        O(cells): ``maintain`` (from the engine's ``tick``) calls it every ~144 half-lives;
        ``observe`` only if ticks stopped for over 800 half-lives.
        """
        if self._epoch is None or epoch <= self._epoch:
            return
        epoch = min(epoch, self._clock)
        factor = math.exp(-(epoch - self._epoch) * self._decay_rate)
        for cells in self._nodes.values():
            for cell in cells.values():
                cell.successes *= factor
                cell.failures *= factor
                cell.latency_total *= factor
                cell.latency_weight *= factor
        self._epoch = epoch
        self._read_scale = math.exp(-(self._clock - epoch) * self._decay_rate)

    def maintain(self, now: float) -> int:
        """Rebase when due and drop cells decayed below ``prune_below``; return cells dropped."""
        self._advance(now)
        if self._epoch is not None and (self._clock - self._epoch) * self._decay_rate > _REBASE_AT:
            self.rebase(self._clock)
        floor = self.config.prune_below
        scale = self._read_scale
        dropped = 0
        for key in list(self._nodes):
            cells = self._nodes[key]
            for connector in list(cells):
                cell = cells[connector]
                if (cell.successes + cell.failures) * scale < floor:
                    del cells[connector]
                    dropped += 1
            if not cells:
                del self._nodes[key]
        return dropped

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form: sums as of the clock, one row per cell (see :meth:`load`)."""
        scale = self._read_scale
        rows = [
            [
                list(key),
                connector,
                cell.successes * scale,
                cell.failures * scale,
                cell.latency_total * scale,
                cell.latency_weight * scale,
                cell.cusum_down,
                cell.cusum_up,
                cell.reset_ts if math.isfinite(cell.reset_ts) else None,
            ]
            for key, cells in self._nodes.items()
            for connector, cell in cells.items()
        ]
        clock = self._clock if math.isfinite(self._clock) else None
        return {"clock": clock, "cells": rows}

    def load(self, data: dict[str, Any]) -> None:
        """Replace all state with what :meth:`to_dict` saved."""
        self._nodes.clear()
        clock = data.get("clock")
        self._clock = -math.inf if clock is None else float(clock)
        self._epoch = None if clock is None else float(clock)
        self._read_scale = 1.0
        for key, connector, s, f, lt, lw, down, up, reset in data.get("cells", []):
            cell = _Cell()
            cell.successes, cell.failures = float(s), float(f)
            cell.latency_total, cell.latency_weight = float(lt), float(lw)
            cell.cusum_down, cell.cusum_up = float(down), float(up)
            cell.reset_ts = -math.inf if reset is None else float(reset)
            self._nodes.setdefault(tuple(str(k) for k in key), {})[str(connector)] = cell
