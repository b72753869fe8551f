"""Circuit breakers in event time: take a failing connector out of routing, probe, put it back.

State machine (all times are event times, so a replay trips at the same payments)::

    closed --(failure run >= threshold, or health rate < floor)--> open
    open --(cooldown elapsed)--> half_open
    half_open --(probe_successes probes succeed in a row)--> closed
    half_open --(a probe fails)--> open, cooldown doubled (up to max_cooldown_s)

What counts: a *healthy* outcome is a success or an issuer decline (the connector reached
the bank; ``BreakerConfig.issuer_decline_codes``). Timeouts, connector errors and failures
without a code are *unhealthy*. The success-rate learner sees every outcome; the breaker
only asks "is the connector up?".

The failure-run threshold is the seed's 5, raised when the connector's own long-run health
rate ``h`` makes a run of 5 plausible by chance: it is the smallest ``n >= 5`` (and
``<= max_failure_threshold``) with ``(1 - h) ** n <= chance_run_probability``. At the default
``1e-6``: ``h = 0.95`` -> 5, ``h = 0.9`` -> 6, ``h = 0.8`` -> 9. Without this, a busy connector
whose failures carry no code would be opened by bad luck every few minutes. ``h`` is the
posterior mean of a Beta(19, 1) prior (healthy until shown otherwise) updated with closed-state
outcomes, half-life ``baseline_half_life_s``; it is read when a failure run starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from apos.core.config import BreakerConfig
from apos.core.stats.decayed_beta import DecayedBeta

__all__ = ["BreakerBoard", "BreakerState", "BreakerTransition", "CircuitBreaker"]


class BreakerState(StrEnum):
    """Where a connector's breaker is: routable, out, or being probed."""

    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


_SEVERITY = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """One change of a breaker's state, for the audit log and alerts.

    Attributes:
        connector: The connector.
        merchant_id: The merchant for a per-merchant breaker, ``None`` for the global one.
        from_state: State before.
        to_state: State after.
        at: Event time of the change (epoch seconds).
        reason: Why, in words.
    """

    connector: str
    merchant_id: str | None
    from_state: BreakerState
    to_state: BreakerState
    at: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form."""
        return {
            "connector": self.connector,
            "merchant_id": self.merchant_id,
            "from_state": self.from_state.value,
            "to_state": self.to_state.value,
            "at": self.at,
            "reason": self.reason,
        }


class CircuitBreaker:
    """One breaker: a connector (optionally for one merchant), driven by outcomes in event time.

    Parameters:
        connector: The connector it guards.
        merchant_id: The merchant, or ``None`` for the connector-wide breaker.
        config: Thresholds, cooldowns and probes.

    Attributes:
        state: Current :class:`BreakerState`.
        failure_run: Unhealthy outcomes in a row (closed state).
        run_threshold: Failure run that opens it, fixed when the current run started.
        retry_at: When an open breaker half-opens.
        cooldown_s: The current cooldown (doubles after a failed probe).
        probe_successes: Probe successes in a row (half-open state).

    Examples:
        >>> breaker = CircuitBreaker("stripe", None, BreakerConfig(cooldown_s=30))
        >>> for ts in range(5):
        ...     change = breaker.record(healthy=False, ts=float(ts))
        >>> breaker.state, change.reason
        (<BreakerState.OPEN: 'open'>, '5 connector failures in a row (threshold 5)')
        >>> breaker.advance(now=34.0).to_state  # cooldown over: let probes through
        <BreakerState.HALF_OPEN: 'half_open'>
        >>> [breaker.record(healthy=True, ts=40.0 + i) for i in range(3)][-1].to_state
        <BreakerState.CLOSED: 'closed'>

    References:
        [^1]: Nygard, M.T., 2018. Release It! Design and Deploy Production-Ready Software,
            2nd ed., ch. 5 "Circuit Breaker". Pragmatic Bookshelf.
    """

    __slots__ = (
        "baseline",
        "config",
        "connector",
        "cooldown_s",
        "failure_run",
        "half_open_since",
        "health",
        "merchant_id",
        "opened_at",
        "probe_successes",
        "retry_at",
        "run_threshold",
        "state",
    )

    def __init__(self, connector: str, merchant_id: str | None, config: BreakerConfig) -> None:
        self.connector = connector
        self.merchant_id = merchant_id
        self.config = config
        self.state = BreakerState.CLOSED
        self.failure_run = 0
        self.run_threshold = config.failure_threshold
        self.health = DecayedBeta(config.half_life_s)
        # A connector is presumed healthy until shown otherwise: prior health 0.95 over 20
        # pseudo-outcomes, which makes the cold-start threshold the seed's 5.
        self.baseline = DecayedBeta(config.baseline_half_life_s, prior_a=19.0, prior_b=1.0)
        self.opened_at = 0.0
        self.retry_at = 0.0
        self.half_open_since = 0.0
        self.cooldown_s = config.cooldown_s
        self.probe_successes = 0

    def threshold(self, now: float) -> int:
        """The failure run that would open the breaker if a run started at ``now``."""
        cfg = self.config
        alpha = cfg.chance_run_probability
        unhealthy = 1.0 - self.baseline.get(now)
        if alpha <= 0.0 or unhealthy <= 0.0:
            return cfg.failure_threshold
        needed = math.ceil(math.log(alpha) / math.log(unhealthy) - 1e-9)
        return min(max(cfg.failure_threshold, needed), cfg.max_failure_threshold)

    def record(self, healthy: bool, ts: float) -> BreakerTransition | None:
        """Learn one outcome at event time ``ts``; return the state change it caused, if any."""
        self.health.update(1.0 if healthy else 0.0, ts)
        state = self.state
        if state is BreakerState.CLOSED:
            if not healthy and self.failure_run == 0:
                # Fixed at the start of the run, from the health seen before it.
                self.run_threshold = self.threshold(ts)
            self.baseline.update(1.0 if healthy else 0.0, ts)
            if healthy:
                self.failure_run = 0
                return None
            self.failure_run += 1
            if self.failure_run >= self.run_threshold:
                return self._open(
                    ts,
                    f"{self.failure_run} connector failures in a row "
                    f"(threshold {self.run_threshold})",
                )
            s, f = self.health.counts(ts)
            if s + f >= self.config.floor_min_evidence and s / (s + f) < self.config.health_floor:
                return self._open(
                    ts,
                    f"health rate {s / (s + f):.3f} below floor {self.config.health_floor} "
                    f"over {s + f:.0f} recent outcomes",
                )
            return None
        if state is BreakerState.HALF_OPEN and ts >= self.half_open_since:
            if not healthy:
                self.cooldown_s = min(self.cooldown_s * 2.0, self.config.max_cooldown_s)
                return self._open(ts, f"probe failed; next probe in {self.cooldown_s:.0f}s")
            self.probe_successes += 1
            if self.probe_successes >= self.config.probe_successes:
                return self._close(ts)
        # Open, or an outcome of traffic sent before the probes began: it decides nothing.
        return None

    def advance(self, now: float) -> BreakerTransition | None:
        """Half-open an open breaker whose cooldown has elapsed by ``now``."""
        if self.state is not BreakerState.OPEN or now < self.retry_at:
            return None
        # Probes start at retry_at, not at ``now``, so the answer does not depend on how
        # often anyone calls this.
        self.state = BreakerState.HALF_OPEN
        self.half_open_since = self.retry_at
        self.probe_successes = 0
        return BreakerTransition(
            self.connector,
            self.merchant_id,
            BreakerState.OPEN,
            BreakerState.HALF_OPEN,
            self.retry_at,
            f"cooldown of {self.cooldown_s:.0f}s elapsed; probing",
        )

    def _open(self, ts: float, reason: str) -> BreakerTransition:
        before = self.state
        self.state = BreakerState.OPEN
        self.opened_at = ts
        self.retry_at = ts + self.cooldown_s
        self.failure_run = 0
        self.probe_successes = 0
        return BreakerTransition(
            self.connector, self.merchant_id, before, BreakerState.OPEN, ts, reason
        )

    def _close(self, ts: float) -> BreakerTransition:
        self.state = BreakerState.CLOSED
        self.cooldown_s = self.config.cooldown_s
        self.failure_run = 0
        return BreakerTransition(
            self.connector,
            self.merchant_id,
            BreakerState.HALF_OPEN,
            BreakerState.CLOSED,
            ts,
            f"{self.probe_successes} probes succeeded in a row",
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (see :meth:`from_dict`)."""
        return {
            "connector": self.connector,
            "merchant_id": self.merchant_id,
            "state": self.state.value,
            "failure_run": self.failure_run,
            "run_threshold": self.run_threshold,
            "health": [self.health.successes, self.health.failures, self.health.last_ts],
            "baseline": [self.baseline.successes, self.baseline.failures, self.baseline.last_ts],
            "opened_at": self.opened_at,
            "retry_at": self.retry_at,
            "half_open_since": self.half_open_since,
            "cooldown_s": self.cooldown_s,
            "probe_successes": self.probe_successes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], config: BreakerConfig) -> CircuitBreaker:
        """Rebuild a breaker saved by :meth:`to_dict`."""
        breaker = cls(str(data["connector"]), data["merchant_id"], config)
        breaker.state = BreakerState(data["state"])
        breaker.failure_run = int(data["failure_run"])
        breaker.run_threshold = int(data["run_threshold"])
        for estimator, (s, f, ts) in (
            (breaker.health, data["health"]),
            (breaker.baseline, data["baseline"]),
        ):
            estimator.successes, estimator.failures = float(s), float(f)
            estimator.last_ts = None if ts is None else float(ts)
        breaker.opened_at = float(data["opened_at"])
        breaker.retry_at = float(data["retry_at"])
        breaker.half_open_since = float(data["half_open_since"])
        breaker.cooldown_s = float(data["cooldown_s"])
        breaker.probe_successes = int(data["probe_successes"])
        return breaker


BreakerKey = tuple[str, str | None]


class BreakerBoard:
    """All breakers: one per connector and, if configured, one per connector x merchant.

    A connector's effective state for a merchant is the worse of the two. State changes are
    queued as they happen (in ``record`` and in the lazy ``state`` checks of ``route``) and
    handed out by :meth:`drain`, so the engine's ``tick`` can report every one of them.

    Parameters:
        config: Shared by every breaker.
    """

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self._breakers: dict[BreakerKey, CircuitBreaker] = {}
        # Breakers not closed, in the order they left closed: what tick() needs to visit.
        self._not_closed: dict[BreakerKey, CircuitBreaker] = {}
        # How many of them each scope has (merchant id, None for connector-wide): lets the
        # router skip the per-connector look-ups for a merchant none of them concerns.
        self._not_closed_in: dict[str | None, int] = {}
        self._changes: list[BreakerTransition] = []

    def record(self, connector: str, merchant_id: str, healthy: bool, ts: float) -> None:
        """Feed one outcome to the connector's breaker and its merchant breaker."""
        if not self.config.enabled:
            return
        self._record((connector, None), healthy, ts)
        if self.config.per_merchant:
            self._record((connector, merchant_id), healthy, ts)

    def _record(self, key: BreakerKey, healthy: bool, ts: float) -> None:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(key[0], key[1], self.config)
        if breaker.state is BreakerState.OPEN:
            self._note(key, breaker, breaker.advance(ts))
        self._note(key, breaker, breaker.record(healthy, ts))

    def _note(
        self, key: BreakerKey, breaker: CircuitBreaker, change: BreakerTransition | None
    ) -> None:
        if change is None:
            return
        self._changes.append(change)
        if breaker.state is BreakerState.CLOSED:
            if self._not_closed.pop(key, None) is not None:
                self._count(key[1], -1)
        elif key not in self._not_closed:
            self._not_closed[key] = breaker
            self._count(key[1], 1)

    def _count(self, scope: str | None, delta: int) -> None:
        left = self._not_closed_in.get(scope, 0) + delta
        if left:
            self._not_closed_in[scope] = left
        else:
            self._not_closed_in.pop(scope, None)

    def all_closed(self) -> bool:
        """True when no breaker is open or half-open (the common case, checked first)."""
        return not self._not_closed or not self.config.enabled

    def all_closed_for(self, merchant_id: str) -> bool:
        """True when no connector-wide breaker and none of ``merchant_id``'s is open or
        half-open: every connector is closed for that merchant (hot path)."""
        if not self._not_closed or not self.config.enabled:
            return True
        scopes = self._not_closed_in
        return None not in scopes and merchant_id not in scopes

    def state(self, connector: str, merchant_id: str, now: float) -> BreakerState:
        """The connector's effective state for the merchant at ``now`` (hot path)."""
        breaker = self._breakers.get((connector, None))
        state = BreakerState.CLOSED
        if breaker is not None and breaker.state is not BreakerState.CLOSED:
            if breaker.state is BreakerState.OPEN and now >= breaker.retry_at:
                self._note((connector, None), breaker, breaker.advance(now))
            state = breaker.state
        if self.config.per_merchant:
            local = self._breakers.get((connector, merchant_id))
            if local is not None and local.state is not BreakerState.CLOSED:
                if local.state is BreakerState.OPEN and now >= local.retry_at:
                    self._note((connector, merchant_id), local, local.advance(now))
                if _SEVERITY[local.state] > _SEVERITY[state]:
                    state = local.state
        return state

    def retry_at(self, connector: str, merchant_id: str) -> float:
        """When the connector's open breaker(s) for the merchant will next half-open."""
        due = 0.0
        for key in ((connector, None), (connector, merchant_id)):
            breaker = self._breakers.get(key)
            if breaker is not None and breaker.state is BreakerState.OPEN:
                due = max(due, breaker.retry_at)
        return due

    def get(self, connector: str, merchant_id: str | None = None) -> CircuitBreaker | None:
        """The breaker of a connector (for a merchant), if it has seen any outcome."""
        return self._breakers.get((connector, merchant_id))

    def advance(self, now: float) -> None:
        """Half-open every open breaker whose cooldown has elapsed by ``now``."""
        for key, breaker in list(self._not_closed.items()):
            self._note(key, breaker, breaker.advance(now))

    def drain(self) -> list[BreakerTransition]:
        """The state changes since the last call, oldest first."""
        changes, self._changes = self._changes, []
        return changes

    def not_closed(self) -> list[CircuitBreaker]:
        """Breakers currently open or half-open."""
        return list(self._not_closed.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (see :meth:`load`)."""
        return {"breakers": [b.to_dict() for b in self._breakers.values()]}

    def load(self, data: dict[str, Any]) -> None:
        """Replace every breaker with those saved by :meth:`to_dict`."""
        self._breakers.clear()
        self._not_closed.clear()
        self._not_closed_in.clear()
        self._changes.clear()
        for item in data.get("breakers", []):
            breaker = CircuitBreaker.from_dict(item, self.config)
            key = (breaker.connector, breaker.merchant_id)
            self._breakers[key] = breaker
            if breaker.state is not BreakerState.CLOSED:
                self._not_closed[key] = breaker
                self._count(key[1], 1)
