"""Baseline routers APOS is measured against.

========================  ==============================================================
``random``                uniform over the eligible connectors
``round_robin``           cycles through the eligible connectors
``fixed_best``            always the connector with the best traffic-weighted mean true
                          success rate over the whole run (the static priority list a team
                          would configure from last month's data); next in that order when
                          it is not eligible
``sliding_window_sr``     success rate over each connector's last ``window`` outcomes,
                          Laplace-smoothed, best one chosen; with probability ``epsilon``
                          (0.1) a uniformly random eligible connector instead. This is the
                          success-rate routing payment switches ship today.
``oracle``                knows the truth: the eligible connector with the highest true
                          success probability for that payment's segment at that moment
========================  ==============================================================

All take the fast observation path (connector and success only; see ``apos.sim.routers``).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from apos.core.events import PaymentEvent
from apos.core.payment import Payment
from apos.sim.routers import Choice, RouterFactory

if TYPE_CHECKING:
    from apos.sim.stream import Stream

__all__ = [
    "BASELINES",
    "Baseline",
    "FixedBest",
    "Oracle",
    "RandomRouter",
    "RoundRobin",
    "SlidingWindowSR",
]


class Baseline:
    """Shared plumbing: preallocated decisions, outcome events reduced to (connector, success)."""

    def __init__(self, connectors: Sequence[str]) -> None:
        self.connectors = tuple(connectors)
        self._choice = {c: Choice(c) for c in self.connectors}

    def observe(self, event: PaymentEvent, now: float) -> None:
        """Learn from an outcome event (delegates to :meth:`observe_outcome`)."""
        self.observe_outcome(event.connector, event.status.is_success, now)

    def observe_outcome(self, connector: str, success: bool, now: float) -> None:
        """Learn from one outcome; most baselines ignore it."""

    def tick(self, now: float) -> None:
        """Periodic housekeeping; the baselines have none."""


class RandomRouter(Baseline):
    """Uniformly random among eligible connectors."""

    def __init__(self, connectors: Sequence[str], seed: int) -> None:
        super().__init__(connectors)
        self._rng = random.Random(seed)

    def route(self, payment: Payment, now: float) -> Choice:
        """Pick uniformly."""
        eligible = payment.eligible_connectors or self.connectors
        return self._choice[self._rng.choice(eligible)]


class RoundRobin(Baseline):
    """Cycles through eligible connectors."""

    def __init__(self, connectors: Sequence[str]) -> None:
        super().__init__(connectors)
        self._turn = 0

    def route(self, payment: Payment, now: float) -> Choice:
        """The next connector in turn."""
        eligible = payment.eligible_connectors or self.connectors
        self._turn += 1
        return self._choice[eligible[self._turn % len(eligible)]]


class FixedBest(Baseline):
    """A static priority list; the first eligible connector in it."""

    def __init__(self, priority: Sequence[str]) -> None:
        super().__init__(priority)
        self._first = self._choice[self.connectors[0]]

    def route(self, payment: Payment, now: float) -> Choice:
        """The highest-priority eligible connector."""
        eligible = payment.eligible_connectors
        if eligible is None:
            return self._first
        for c in self.connectors:
            if c in eligible:
                return self._choice[c]
        return self._choice[eligible[0]]


class SlidingWindowSR(Baseline):
    """Success rate over the last ``window`` outcomes per connector, epsilon-greedy.

    Args:
        window: Outcomes remembered per connector.
        epsilon: Share of payments routed uniformly at random (exploration).
    """

    def __init__(
        self, connectors: Sequence[str], seed: int, window: int = 200, epsilon: float = 0.1
    ) -> None:
        super().__init__(connectors)
        self._rng = random.Random(seed)
        self.window = window
        self.epsilon = epsilon
        self._outcomes: dict[str, deque[bool]] = {c: deque() for c in self.connectors}
        self._wins = dict.fromkeys(self.connectors, 0)
        self._explore = {c: Choice(c, explored=True) for c in self.connectors}

    def success_rate(self, connector: str) -> float:
        """Laplace-smoothed success rate over the window (0.5 with no data)."""
        n = len(self._outcomes[connector])
        return (self._wins[connector] + 1) / (n + 2)

    def route(self, payment: Payment, now: float) -> Choice:
        """Best windowed success rate, or a random connector with probability epsilon."""
        eligible = payment.eligible_connectors or self.connectors
        if self._rng.random() < self.epsilon:
            return self._explore[self._rng.choice(eligible)]
        best, best_rate = eligible[0], -1.0
        for c in eligible:
            rate = (self._wins[c] + 1) / (len(self._outcomes[c]) + 2)
            if rate > best_rate:
                best, best_rate = c, rate
        return self._choice[best]

    def observe_outcome(self, connector: str, success: bool, now: float) -> None:
        """Push the outcome into the connector's window."""
        window = self._outcomes.get(connector)
        if window is None:
            return
        window.append(success)
        self._wins[connector] += success
        if len(window) > self.window:
            self._wins[connector] -= window.popleft()


class Oracle(Baseline):
    """Routes each payment to the eligible connector with the highest true probability."""

    def route(self, payment: Payment, now: float) -> Choice:
        """Not available per payment: the oracle reads the truth in batches."""
        raise TypeError("the oracle routes whole slices through choose_batch()")

    def choose_batch(self, stream: Stream, start: int, stop: int) -> npt.NDArray[np.int64]:
        """Argmax of the true success probability over eligible connectors."""
        p = np.where(stream.eligible[start:stop], stream.p[start:stop], -1.0)
        return np.asarray(np.argmax(p, axis=1), dtype=np.int64)


BASELINES: dict[str, RouterFactory] = {
    "random": lambda ctx: RandomRouter(ctx.connectors, ctx.seed + 1),
    "round_robin": lambda ctx: RoundRobin(ctx.connectors),
    "fixed_best": lambda ctx: FixedBest(ctx.priority),
    "sliding_window_sr": lambda ctx: SlidingWindowSR(ctx.connectors, ctx.seed + 2),
    "oracle": lambda ctx: Oracle(ctx.connectors),
}
