"""Configuration of the decision engine: defaults for every merchant, per-merchant overrides.

One :class:`EngineConfig` holds

* ``default``: the :class:`PolicyConfig` every merchant gets (policy, objective weights,
  fallback thresholds, routing rules);
* ``merchants``: per-merchant overrides. Given as mappings (TOML tables, JSON objects) they
  are *partial*: the keys given replace the default's, the rest is inherited;
* ``learner``: the success-rate learner (half-life, shrinkage strength, priors);
* ``breaker``: the circuit breakers (thresholds, cooldowns, probes).

Every model is frozen and rejects unknown keys, so a typo is an error rather than a silent
default. :meth:`EngineConfig.model_version` hashes what shapes a merchant's decisions, so the
version written on every decision changes exactly when its configuration does.

>>> config = EngineConfig(merchants={"m2": {"policy": "rules", "priority": ["adyen"]}})
>>> config.policy_for("m1").policy, config.policy_for("m2").policy
('thompson', 'rules')
>>> config.model_version("m1").startswith("thompson-")
True
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from apos.core.payment import DEFAULT_CONTEXT_ORDER, ContextKeys

__all__ = [
    "DEFAULT_CONNECTOR_ERROR_CODES",
    "DEFAULT_ISSUER_DECLINE_CODES",
    "BreakerConfig",
    "EngineConfig",
    "LearnerConfig",
    "PolicyConfig",
    "PolicyName",
    "RoutingRule",
    "version_of",
]

PolicyName = Literal["rules", "greedy", "thompson"]

# Decline codes that come from the issuer: the connector reached the card's bank and relayed
# its answer, so the connector itself is healthy. They count against the connector's success
# rate (the router learns from them) but never towards opening its circuit breaker.
DEFAULT_ISSUER_DECLINE_CODES: Final[tuple[str, ...]] = (
    "authentication_required",
    "card_declined",
    "card_not_supported",
    "card_velocity_exceeded",
    "do_not_honor",
    "expired_card",
    "fraudulent",
    "incorrect_cvc",
    "insufficient_funds",
    "invalid_card_number",
    "issuer_unavailable",
    "lost_card",
    "stolen_card",
    "try_again_later",
)

# Error codes that say the connector itself failed (it did not answer, or answered with an
# error of its own). While a connector's breaker is open, failures with these codes feed the
# breaker only, not the success-rate learner: they describe an outage, not the connector.
DEFAULT_CONNECTOR_ERROR_CODES: Final[tuple[str, ...]] = (
    "bad_gateway",
    "connection_error",
    "connector_error",
    "connector_unavailable",
    "gateway_timeout",
    "internal_server_error",
    "network_error",
    "processing_error",
    "service_unavailable",
    "timeout",
)

_FROZEN = ConfigDict(frozen=True, extra="forbid")


def _lower_sorted(values: tuple[str, ...] | None) -> tuple[str, ...] | None:
    # Sorted so that equal configurations hash (and version) equally.
    return None if values is None else tuple(sorted({v.lower() for v in values}))


class RoutingRule(BaseModel):
    """One static routing rule: conditions on the payment, then a priority list or a split.

    A rule matches a payment when every condition given matches (an omitted condition matches
    anything). Rules are tried in order; the first matching rule with an available connector
    decides. ``connectors`` is a priority list (the first available one wins); ``split``
    sends a percentage of payments to each connector, by a stable hash of the payment id
    (see :func:`apos.core.routing.rules.stable_fraction`), so a payment always splits the same
    way. When some split connectors are unavailable their share goes to the others in
    proportion.

    Attributes:
        name: Shown in decision reasons and salted into the split hash.
        payment_methods: Matches these payment methods (``card``, ``wallet``, ...).
        card_networks: Matches these card networks.
        countries: Matches these issuer countries (ISO 3166-1 alpha-2).
        currencies: Matches these currencies (ISO 4217).
        min_amount: Matches amounts ``>=`` this, in minor units.
        max_amount: Matches amounts ``<`` this, in minor units.
        connectors: Priority list.
        split: Connector to percentage; the percentages sum to 100.
    """

    model_config = _FROZEN

    name: str = Field(min_length=1, max_length=128)
    payment_methods: tuple[str, ...] | None = None
    card_networks: tuple[str, ...] | None = None
    countries: tuple[str, ...] | None = None
    currencies: tuple[str, ...] | None = None
    min_amount: int | None = Field(default=None, ge=0)
    max_amount: int | None = Field(default=None, ge=0)
    connectors: tuple[str, ...] = ()
    split: dict[str, float] = Field(default_factory=dict)

    @field_validator("payment_methods", "card_networks")
    @classmethod
    def _lower_set(cls, values: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return _lower_sorted(values)

    @field_validator("connectors")
    @classmethod
    def _priority(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        # A priority list keeps its order; duplicates after the first are dropped.
        return tuple(dict.fromkeys(v.lower() for v in values))

    @field_validator("countries", "currencies")
    @classmethod
    def _upper(cls, values: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if values is None else tuple(sorted({v.upper() for v in values}))

    @field_validator("split")
    @classmethod
    def _percentages(cls, split: dict[str, float]) -> dict[str, float]:
        if not split:
            return split
        if any(not pct > 0.0 for pct in split.values()):
            raise ValueError("every split percentage must be positive")
        if abs(sum(split.values()) - 100.0) > 1e-6:
            raise ValueError(f"split percentages sum to {sum(split.values())}, not 100")
        return {c.lower(): float(pct) for c, pct in split.items()}

    @model_validator(mode="after")
    def _decides_something(self) -> RoutingRule:
        if not self.connectors and not self.split:
            raise ValueError("a rule needs a priority list (connectors) or a split")
        if self.connectors and self.split:
            raise ValueError("give either connectors (priority) or split, not both")
        if (
            self.min_amount is not None
            and self.max_amount is not None
            and self.min_amount >= self.max_amount
        ):
            raise ValueError("min_amount must be below max_amount")
        return self


class PolicyConfig(BaseModel):
    """How one merchant's payments are routed.

    Attributes:
        policy: ``thompson`` (Thompson sampling over the learnt success rates), ``greedy``
            (best expected score, uniform exploration with probability ``epsilon``) or
            ``rules`` (the static rules only).
        epsilon: Exploration probability of ``greedy``.
        latency_weight: Success-rate points one millisecond of expected latency costs in the
            objective ``P(success) - latency_weight * latency_ms - cost_weight * cost``;
            e.g. ``1e-4`` makes 100 ms worth one percentage point of success rate.
        cost_weight: Success-rate points one unit of ``connector_costs`` costs.
        connector_costs: Per-connector cost in any unit the merchant likes (e.g. fee in basis
            points); connectors not listed cost 0.
        min_confidence: The learning policies defer to the rules when the posterior
            probability that their best connector is really the best is below this.
            0 (the default) disables the check; see ``docs/routing.md`` before raising it.
        min_evidence: The learning policies defer to the rules while the candidates together
            have fewer (decayed) observations than this: the cold start.
        rules: The static rules, tried in order; the fallback of every policy.
        priority: Last resort of the rules when no rule matches; empty means the order the
            engine was given its connectors in.
        elimination: Whether connectors whose breaker is open are taken out of this
            merchant's rotation (and probed). The breakers keep counting either way; turn it
            off only for a merchant whose switch does its own failover.
    """

    model_config = _FROZEN

    policy: PolicyName = "thompson"
    epsilon: float = Field(default=0.05, ge=0.0, le=1.0)
    latency_weight: float = Field(default=0.0, ge=0.0)
    cost_weight: float = Field(default=0.0, ge=0.0)
    connector_costs: dict[str, float] = Field(default_factory=dict)
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    min_evidence: float = Field(default=10.0, ge=0.0)
    rules: tuple[RoutingRule, ...] = ()
    priority: tuple[str, ...] = ()
    elimination: bool = True

    @field_validator("priority")
    @classmethod
    def _lower_priority(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v.lower() for v in values))

    @field_validator("connector_costs")
    @classmethod
    def _lower_costs(cls, costs: dict[str, float]) -> dict[str, float]:
        return {c.lower(): float(v) for c, v in costs.items()}


class LearnerConfig(BaseModel):
    """The success-rate learner (see :class:`apos.core.routing.learner.ContextLearner`).

    Attributes:
        half_life_s: Event-time seconds after which an outcome counts half.
        shrinkage_strength: ``k``, the pseudo-observations a context borrows from its
            siblings when its own data say it differs from them.
        pooling_prior: Prior probability that a finer context behaves like its siblings;
            the data turn it into a posterior probability, and the context borrows up to
            everything its siblings know in that proportion. 0 gives fixed-``k`` shrinkage.
        change_shift: Success-rate shift the per-context change detectors are tuned to
            (a CUSUM each way); 0 disables change detection.
        change_threshold: CUSUM alarm threshold (log-likelihood ratio, nats).
        change_memory: Outcomes a context keeps (at its old rate) after a detected change,
            and half the evidence it needs before its detector runs.
        prior_success_rate: Success rate assumed for a connector nothing is known about.
        prior_strength: Pseudo-observations behind that assumption (2 with 0.5 = uniform).
        prior_latency_ms: Latency assumed for a connector nothing is known about.
        posterior_draws: Rows of the fixed table of draws behind Thompson sampling,
            propensities and confidences (even; more is finer and slower).
        prune_below: Connector-context cells whose decayed evidence falls below this are
            dropped by ``tick`` (about 10 half-lives without traffic at the default).
        context_order: The context dimensions, coarse to fine (see ``apos.core.payment``);
            changing it starts the success-rate learning afresh.
    """

    model_config = _FROZEN

    half_life_s: float = Field(default=3600.0, gt=0.0)
    shrinkage_strength: float = Field(default=10.0, gt=0.0)
    pooling_prior: float = Field(default=0.8, ge=0.0, lt=1.0)
    change_shift: float = Field(default=0.1, ge=0.0, lt=0.5)
    change_threshold: float = Field(default=12.0, gt=0.0)
    change_memory: float = Field(default=10.0, gt=0.0)
    prior_success_rate: float = Field(default=0.5, gt=0.0, lt=1.0)
    prior_strength: float = Field(default=2.0, gt=0.0)
    prior_latency_ms: float = Field(default=300.0, ge=0.0)
    posterior_draws: int = Field(default=256, ge=16, le=8192)
    prune_below: float = Field(default=1e-3, ge=0.0)
    context_order: tuple[str, ...] = DEFAULT_CONTEXT_ORDER

    @field_validator("context_order")
    @classmethod
    def _dimensions(cls, order: tuple[str, ...]) -> tuple[str, ...]:
        ContextKeys(order)  # raises ValueError naming the allowed dimensions
        return order

    @field_validator("posterior_draws")
    @classmethod
    def _even(cls, draws: int) -> int:
        if draws % 2:
            raise ValueError("must be even (draws come in antithetic pairs)")
        return draws


class BreakerConfig(BaseModel):
    """Circuit breakers per connector and per connector x merchant (see ``apos.core.breaker``).

    Attributes:
        enabled: False disables elimination entirely.
        per_merchant: Also keep one breaker per connector x merchant (a merchant's bad
            credentials at one connector should not stop that connector for everyone).
        failure_threshold: Consecutive connector failures that open the breaker (the seed's 5).
        max_failure_threshold: Upper bound of the adaptive threshold below.
        chance_run_probability: The threshold is raised until a healthy connector, at its own
            usual health rate, would produce such a run by chance with at most this
            probability; 0 keeps the threshold fixed.
        health_floor: The breaker also opens when the decayed health rate falls below this...
        floor_min_evidence: ...with at least this many decayed outcomes behind it.
        half_life_s: Half-life of the health rate used by the floor.
        baseline_half_life_s: Half-life of the long-run health rate used by the threshold.
        cooldown_s: Event-time seconds an open breaker waits before half-opening.
        max_cooldown_s: The cooldown doubles each time a probe fails, up to this.
        probe_fraction: Share of eligible payments sent to a half-open connector as probes.
        probe_successes: Probe successes in a row that close a half-open breaker.
        issuer_decline_codes: Error codes meaning "the issuer declined": the connector is
            healthy, so they reset the failure run instead of extending it.
        connector_error_codes: Error codes meaning "the connector itself failed"; those
            arriving while its breaker is open or half-open are not learnt as its success
            rate (an outage is not how the connector does when it is up).
    """

    model_config = _FROZEN

    enabled: bool = True
    per_merchant: bool = True
    failure_threshold: int = Field(default=5, ge=1)
    max_failure_threshold: int = Field(default=20, ge=1)
    chance_run_probability: float = Field(default=1e-6, ge=0.0, lt=1.0)
    health_floor: float = Field(default=0.1, ge=0.0, le=1.0)
    floor_min_evidence: float = Field(default=20.0, gt=0.0)
    half_life_s: float = Field(default=300.0, gt=0.0)
    baseline_half_life_s: float = Field(default=6 * 3600.0, gt=0.0)
    cooldown_s: float = Field(default=30.0, gt=0.0)
    max_cooldown_s: float = Field(default=600.0, gt=0.0)
    probe_fraction: float = Field(default=0.1, gt=0.0, le=1.0)
    probe_successes: int = Field(default=3, ge=1)
    issuer_decline_codes: tuple[str, ...] = DEFAULT_ISSUER_DECLINE_CODES
    connector_error_codes: tuple[str, ...] = DEFAULT_CONNECTOR_ERROR_CODES

    @field_validator("issuer_decline_codes", "connector_error_codes")
    @classmethod
    def _codes(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return _lower_sorted(values) or ()

    @model_validator(mode="after")
    def _ordered(self) -> BreakerConfig:
        if self.max_failure_threshold < self.failure_threshold:
            raise ValueError("max_failure_threshold must be >= failure_threshold")
        if self.max_cooldown_s < self.cooldown_s:
            raise ValueError("max_cooldown_s must be >= cooldown_s")
        return self


class EngineConfig(BaseModel):
    """Everything the decision engine can be configured with; see the module docstring.

    Attributes:
        default: The policy of every merchant without an override.
        merchants: Merchant id to override; mappings are merged over ``default``.
        learner: The success-rate learner.
        breaker: The circuit breakers.
    """

    model_config = _FROZEN

    default: PolicyConfig = Field(default_factory=PolicyConfig)
    merchants: dict[str, PolicyConfig] = Field(default_factory=dict)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)

    @model_validator(mode="before")
    @classmethod
    def _merge_overrides(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("merchants"), dict):
            return data
        default = data.get("default", {})
        if isinstance(default, PolicyConfig):
            default = default.model_dump()
        if not isinstance(default, dict):
            return data  # let field validation report it
        merged = {
            merchant: {**default, **override} if isinstance(override, dict) else override
            for merchant, override in data["merchants"].items()
        }
        return {**data, "merchants": merged}

    def policy_for(self, merchant_id: str) -> PolicyConfig:
        """The policy configuration that applies to ``merchant_id``."""
        return self.merchants.get(merchant_id, self.default)

    def model_version(self, merchant_id: str) -> str:
        """``<policy>-<hash>``: changes whenever the merchant's effective configuration does.

        The hash covers the merchant's policy, the learner and the breakers, not other
        merchants' overrides.
        """
        return version_of(self.policy_for(merchant_id), self.learner, self.breaker)


def version_of(policy: PolicyConfig, learner: LearnerConfig, breaker: BreakerConfig) -> str:
    """The model version of a policy run with a learner and breakers (see ``model_version``).

    >>> version_of(PolicyConfig(), LearnerConfig(), BreakerConfig())[:9]
    'thompson-'
    """
    blob = json.dumps(
        {
            "policy": policy.model_dump(mode="json"),
            "learner": learner.model_dump(mode="json"),
            "breaker": breaker.model_dump(mode="json"),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return f"{policy.policy}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"
