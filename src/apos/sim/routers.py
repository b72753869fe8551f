"""What the simulator drives: anything with the ``Engine``'s ``route`` / ``observe`` / ``tick``.

A router is given a :class:`~apos.core.payment.Payment` and answers with a decision (any
object with ``connector`` and ``decision_id``). It later observes each outcome as a
:class:`~apos.core.events.PaymentEvent`. Two optional fast paths keep the benchmark quick
without changing what a router learns from:

* ``observe_outcome(connector, success, now)`` — the simulator calls this instead of
  building a ``PaymentEvent`` (baselines only read connector and status anyway);
* ``choose_batch(stream, start, stop)`` — a router that needs no feedback (the oracle)
  picks for a whole slice of payments at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from apos.core.events import PaymentEvent
from apos.core.payment import Payment

if TYPE_CHECKING:
    from apos.sim.stream import Stream

__all__ = [
    "BatchRouter",
    "Choice",
    "FastObserver",
    "Note",
    "RouteDecision",
    "Router",
    "RouterFactory",
    "RunContext",
]


class RouteDecision(Protocol):
    """The part of ``apos.Decision`` the simulator reads."""

    @property
    def connector(self) -> str: ...

    @property
    def decision_id(self) -> str | None: ...


class Choice(NamedTuple):
    """A minimal decision, as the baselines return it (preallocated per connector)."""

    connector: str
    decision_id: str | None = None
    explored: bool = False


@runtime_checkable
class Router(Protocol):
    """The surface of ``apos.Engine`` the simulator drives."""

    def route(self, payment: Payment, now: float) -> RouteDecision: ...

    def observe(self, event: PaymentEvent, now: float) -> None: ...

    def tick(self, now: float) -> object: ...


@runtime_checkable
class FastObserver(Protocol):
    """A router that learns only connector and success from each outcome."""

    def observe_outcome(self, connector: str, success: bool, now: float) -> None: ...


@runtime_checkable
class BatchRouter(Protocol):
    """A router that needs no feedback and routes a whole slice at once."""

    def choose_batch(self, stream: Stream, start: int, stop: int) -> npt.NDArray[np.int64]: ...


@dataclass(frozen=True, slots=True)
class Note:
    """Something a router reported: an anomaly it raised or an action it took."""

    time: float  # epoch seconds of simulated time
    kind: str  # "anomaly" | "action"
    text: str


@dataclass(frozen=True, slots=True)
class RunContext:
    """What a router factory may know about the run it is built for."""

    stream: Stream
    seed: int
    connectors: tuple[str, ...]
    # Connectors ordered by traffic-weighted mean true success rate over the whole run
    # (what a team would configure after studying last month's data); see fixed_best.
    priority: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


RouterFactory = Callable[[RunContext], Any]
