"""What the engine answers: a routing :class:`Decision`, and a :class:`TickReport`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apos.core.breaker import BreakerTransition
from apos.core.routing.learner import ContextChange

__all__ = ["BreakerStatus", "Decision", "TickReport"]


@dataclass(frozen=True, slots=True)
class Decision:
    """One routing decision, with everything needed to audit and evaluate it later.

    Attributes:
        decision_id: ``dec_`` and 24 hex digits drawn from the engine's seeded generator:
            reproducible for a seed, distinct across engines seeded differently.
        payment_id: The payment routed.
        merchant_id: Its merchant.
        connector: Where to send it.
        alternatives: Every eligible connector with its score, best first, the chosen one
            first of all; then the other routable ones by score, then half-open, then open
            ones (what a retry should try next). The score is the objective at the posterior
            mean: ``E[P(success)] - latency_weight * latency_ms - cost_weight * cost``.
        confidence: Posterior probability that ``connector`` has the best score among the
            connectors the decision chose from, estimated from the engine's table of
            posterior draws (``docs/routing.md``). In [0, 1].
        explored: True when ``connector`` is not the one with the best score at the
            posterior mean among the routable connectors: an exploration draw, a probe of a
            half-open connector, or a rule overriding the learner.
        propensity: Probability that this policy, in this state, sends this payment to
            ``connector``; in (0, 1]. Exact for rules (1, or the split share) and
            epsilon-greedy; for Thompson sampling it is the exact probability of the
            quantised sampler the engine runs (its share of the draws table). Multiplied by
            the chance of not probing when a half-open connector was eligible.
        policy: ``thompson``, ``greedy`` or ``rules``: the policy configured for the payment.
        model_version: ``<policy>-<hash of the configuration>``.
        reasons: Why, in words, most important first.
        fallback: True when the configured policy did not decide: the rules stood in for a
            learning policy, or every eligible connector was open.
        decided_at: Event time of the decision (the ``now`` it was made at).
        experiment_id: The A/B experiment the payment fell in, if any.
        experiment_arm: ``control`` or ``treatment`` when in an experiment.
    """

    decision_id: str
    payment_id: str
    merchant_id: str
    connector: str
    alternatives: tuple[tuple[str, float], ...]
    confidence: float
    explored: bool
    propensity: float
    policy: str
    model_version: str
    reasons: tuple[str, ...]
    fallback: bool
    decided_at: float
    experiment_id: str | None = None
    experiment_arm: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (alternatives as ``[connector, score]`` pairs)."""
        return {
            "decision_id": self.decision_id,
            "payment_id": self.payment_id,
            "merchant_id": self.merchant_id,
            "connector": self.connector,
            "alternatives": [[c, s] for c, s in self.alternatives],
            "confidence": self.confidence,
            "explored": self.explored,
            "propensity": self.propensity,
            "policy": self.policy,
            "model_version": self.model_version,
            "reasons": list(self.reasons),
            "fallback": self.fallback,
            "decided_at": self.decided_at,
            "experiment_id": self.experiment_id,
            "experiment_arm": self.experiment_arm,
        }


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    """A breaker that is not closed, as listed by :class:`TickReport`."""

    connector: str
    merchant_id: str | None
    state: str
    retry_at: float | None


@dataclass(frozen=True, slots=True)
class TickReport:
    """What ``Engine.tick`` did: breaker changes to audit and alert on, and housekeeping.

    Attributes:
        now: The event time of the tick.
        transitions: Every breaker state change since the previous tick, oldest first
            (including those noticed while routing or observing).
        not_closed: Breakers open or half-open after the tick.
        pruned_cells: Learner cells dropped for having decayed to nothing.
        context_changes: Success-rate changes the learner's detectors found since the
            previous tick (a connector got worse or better for some kind of payment).
    """

    now: float
    transitions: tuple[BreakerTransition, ...]
    not_closed: tuple[BreakerStatus, ...]
    pruned_cells: int = 0
    context_changes: tuple[ContextChange, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form."""
        return {
            "now": self.now,
            "transitions": [t.to_dict() for t in self.transitions],
            "not_closed": [
                {
                    "connector": b.connector,
                    "merchant_id": b.merchant_id,
                    "state": b.state,
                    "retry_at": b.retry_at,
                }
                for b in self.not_closed
            ],
            "pruned_cells": self.pruned_cells,
            "context_changes": [
                {
                    "connector": c.connector,
                    "context": list(c.context),
                    "at": c.at,
                    "direction": c.direction,
                    "rate_before": c.rate_before,
                }
                for c in self.context_changes
            ],
        }
