"""The decision engine: learns from outcomes, routes payments, trips breakers, runs A/B tests.

.. code-block:: python

    engine = Engine(connectors=["stripe", "adyen", "checkout"], seed=7)
    decision = engine.route(payment, now=1_700_000_000.0)   # hot path, in-memory only
    engine.observe(event, now=1_700_000_001.0)              # learn from a final outcome
    report = engine.tick(now=1_700_000_005.0)               # breaker housekeeping
    saved = engine.snapshot(); engine = Engine.restore(saved)  # warm restart

``route`` in order: pick the configuration (an experiment arm or the merchant's), screen the
eligible connectors through the breakers, read the learner's posteriors for them, then

1. no connector closed: probe a half-open one, or, if all are open, send the payment to the
   one due soonest for a recovery probe (never zero connectors);
2. a half-open connector eligible: with probability ``probe_fraction``, probe it;
3. otherwise the policy chooses among the closed connectors; a learning policy defers to the
   rules at cold start (``min_evidence``), when unsure (``min_confidence``) or on error.

The engine does no I/O, never reads the clock (every ``now`` is event time in epoch seconds)
and draws all randomness from one ``random.Random(seed)`` and a table seeded by ``seed``:
two engines with the same seed, fed the same calls, make the same decisions.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any, Final

from apos.core.breaker import BreakerBoard, BreakerState
from apos.core.config import EngineConfig, PolicyConfig, version_of
from apos.core.decision import BreakerStatus, Decision, TickReport
from apos.core.events import PaymentEvent, PaymentStatus
from apos.core.experiments import Experiment, ExperimentArm, ExperimentResult
from apos.core.payment import ContextKeys, Payment
from apos.core.routing.base import Candidates, LearningPolicy
from apos.core.routing.draws import PosteriorDraws
from apos.core.routing.greedy import EpsilonGreedy
from apos.core.routing.learner import ContextLearner
from apos.core.routing.rules import RulesPolicy
from apos.core.routing.thompson import ThompsonSampling

__all__ = ["SNAPSHOT_FORMAT", "Engine"]

SNAPSHOT_FORMAT: Final = "apos.engine/1"

_CLOSED = BreakerState.CLOSED
_HALF_OPEN = BreakerState.HALF_OPEN


def _decision_id(bits: int) -> str:
    """``dec_`` and 96 random bits as three groups of 8 hex digits.

    A run of 12 or more hex digits can be all decimal and pass the Luhn check; the id would
    then be refused as a card number when an outcome event sends it back.
    """
    return f"dec_{bits >> 64:08x}_{(bits >> 32) & 0xFFFFFFFF:08x}_{bits & 0xFFFFFFFF:08x}"


class _Resolved:
    """A policy configuration turned into the objects that run it (cached per merchant)."""

    __slots__ = (
        "config",
        "costs",
        "learning",
        "needs_latency",
        "penalised",
        "rules",
        "version",
    )

    def __init__(self, config: PolicyConfig, version: str) -> None:
        self.config = config
        self.version = version
        self.rules = RulesPolicy(config.rules, config.priority)
        self.learning: LearningPolicy | None
        if config.policy == "thompson":
            self.learning = ThompsonSampling()
        elif config.policy == "greedy":
            self.learning = EpsilonGreedy(config.epsilon)
        else:
            self.learning = None
        self.costs = config.connector_costs
        self.needs_latency = config.latency_weight > 0.0
        self.penalised = self.needs_latency or (config.cost_weight > 0.0 and bool(self.costs))


class Engine:
    """Routes payments to connectors and learns from their outcomes, in event time.

    Parameters:
        connectors: The connectors known at start (more are added as events or payments
            name them). Names are compared in lower case. Any iterable of names; a bare
            string is refused (``TypeError``).
        seed: Seeds every random choice and the decision ids.
        config: Policies, learner and breakers; defaults to ``EngineConfig()``.

    Examples:
        >>> from datetime import UTC, datetime
        >>> engine = Engine(connectors=["stripe", "adyen"], seed=7)
        >>> payment = Payment(payment_id="p1", merchant_id="m1", amount=1999, currency="USD",
        ...                   card_network="visa", country="US")
        >>> first = engine.route(payment, now=1_700_000_000.0)
        >>> first.connector, first.fallback, first.reasons[0]  # cold start: the rules decide
        ('stripe', True, 'fallback to rules: 0.0 observations, below min_evidence 10')
        >>> at = datetime.fromtimestamp(1_700_000_000, UTC)
        >>> for i in range(200):
        ...     for connector, ok in (("stripe", i % 2 == 0), ("adyen", i % 10 != 0)):
        ...         engine.observe(PaymentEvent(
        ...             event_id=f"e{i}{connector}", payment_id=f"p{i}", merchant_id="m1",
        ...             connector=connector, amount=1999, currency="USD", card_network="visa",
        ...             issuer_country="US", status="succeeded" if ok else "failed",
        ...             occurred_at=at), now=1_700_000_000.0)
        >>> decision = engine.route(payment, now=1_700_000_000.0)
        >>> decision.connector, decision.confidence, decision.propensity, decision.policy
        ('adyen', 1.0, 1.0, 'thompson')
    """

    def __init__(
        self,
        connectors: Sequence[str],
        seed: int = 0,
        config: EngineConfig | None = None,
    ) -> None:
        if isinstance(connectors, str):  # not one-letter connectors "s", "t", "r", ...
            raise TypeError("connectors must be a sequence of connector names, not a string")
        names = list(dict.fromkeys(c.lower() for c in connectors))
        if not names:
            raise ValueError("an engine needs at least one connector")
        self.config = config if config is not None else EngineConfig()
        self.seed = seed
        self._rng = random.Random(seed)
        # Connectors named at construction serve every merchant; one learnt from a merchant's
        # events or eligible lists serves that merchant only (another merchant's connector
        # account must never be routed to or explored).
        self._connectors = names
        self._known = set(names)
        self._base: list[str] = list(names)
        self._by_merchant: dict[str, list[str]] = {}
        self._learner = ContextLearner(self.config.learner)
        self._context = ContextKeys(self.config.learner.context_order)
        self._draws = PosteriorDraws(self.config.learner.posterior_draws, seed)
        self._breakers = BreakerBoard(self.config.breaker)
        self._issuer_declines = frozenset(self.config.breaker.issuer_decline_codes)
        self._connector_errors = frozenset(self.config.breaker.connector_error_codes)
        self._experiments: dict[str, Experiment] = {}
        self._running: list[Experiment] = []
        self._resolved: dict[str, _Resolved] = {}
        self._arm_resolved: dict[tuple[str, str], _Resolved] = {}
        self._last_prune: float | None = None
        self.decisions_made = 0

    # ------------------------------------------------------------------ configuration

    @property
    def connectors(self) -> tuple[str, ...]:
        """Every connector the engine knows, in the order it learnt of them."""
        return tuple(self._connectors)

    @property
    def clock(self) -> float:
        """The latest event time the engine has learnt or routed at (-inf before any)."""
        return self._learner.clock

    def connectors_for(self, merchant_id: str) -> tuple[str, ...]:
        """The connectors ``merchant_id``'s payments may go to when they name none: those the
        engine was built with, then those learnt from this merchant's events and requests."""
        own = self._by_merchant.get(merchant_id)
        return tuple(own if own is not None else self._base)

    def model_version(self, merchant_id: str) -> str:
        """The model version written on the merchant's decisions (outside experiments)."""
        return self._resolve_merchant(merchant_id).version

    def reconfigure(self, config: EngineConfig) -> None:
        """Switch to ``config``, keeping everything learnt, breaker states and experiments."""
        state = self.snapshot()
        self.config = config
        self._learner = ContextLearner(config.learner)
        self._context = ContextKeys(config.learner.context_order)
        self._draws = PosteriorDraws(config.learner.posterior_draws, self.seed)
        self._breakers = BreakerBoard(config.breaker)
        self._issuer_declines = frozenset(config.breaker.issuer_decline_codes)
        self._connector_errors = frozenset(config.breaker.connector_error_codes)
        self._resolved.clear()
        self._arm_resolved.clear()
        self.load_snapshot(state)

    def _resolve_merchant(self, merchant_id: str) -> _Resolved:
        resolved = self._resolved.get(merchant_id)
        if resolved is None:
            cfg = self.config
            policy = cfg.policy_for(merchant_id)
            resolved = _Resolved(policy, version_of(policy, cfg.learner, cfg.breaker))
            self._resolved[merchant_id] = resolved
        return resolved

    def _resolve_arm(self, experiment: Experiment, arm: ExperimentArm) -> _Resolved:
        key = (experiment.experiment_id, arm)
        resolved = self._arm_resolved.get(key)
        if resolved is None:
            policy = experiment.policy_for(arm)
            version = version_of(policy, self.config.learner, self.config.breaker)
            resolved = self._arm_resolved[key] = _Resolved(policy, version)
        return resolved

    def _know(self, connector: str) -> None:
        if connector not in self._known:
            self._known.add(connector)
            self._connectors.append(connector)

    def _offer(self, merchant_id: str, connector: str) -> None:
        """Make ``connector`` one of ``merchant_id``'s, if it is not already (or shared)."""
        own = self._by_merchant.get(merchant_id)
        if connector in self._base or (own is not None and connector in own):
            return
        self._know(connector)
        if own is None:
            own = self._by_merchant[merchant_id] = list(self._base)
        own.append(connector)

    def _eligible(self, payment: Payment) -> list[str]:
        given = payment.eligible_connectors
        merchant = payment.merchant_id
        if given is None:
            own = self._by_merchant.get(merchant)
            return own if own is not None else self._base
        eligible: list[str] = []
        for name in given:
            connector = name.lower()
            if connector in eligible:
                continue
            eligible.append(connector)
            self._offer(merchant, connector)
        if not eligible:
            raise ValueError(f"payment {payment.payment_id!r} has no eligible connector")
        return eligible

    # ------------------------------------------------------------------ routing

    def route(self, payment: Payment, now: float) -> Decision:
        """Choose a connector for ``payment`` at event time ``now`` (see the module docstring).

        Raises:
            ValueError: ``payment.eligible_connectors`` is an empty tuple.
        """
        merchant = payment.merchant_id
        rng = self._rng
        reasons: list[str] = []
        experiment_id: str | None = None
        arm: ExperimentArm | None = None
        resolved: _Resolved | None = None
        for experiment in self._running:
            if experiment.applies(merchant, now):
                experiment_id = experiment.experiment_id
                arm = experiment.arm_for(payment.payment_id)
                resolved = self._resolve_arm(experiment, arm)
                reasons.append(f"experiment {experiment_id!r}: arm {arm}")
                break
        if resolved is None:
            resolved = self._resolved.get(merchant) or self._resolve_merchant(merchant)
        policy_cfg = resolved.config

        eligible = self._eligible(payment)
        n = len(eligible)
        closed: list[int] = []
        half_open: list[int] = []
        opened: list[int] = []
        board = self._breakers
        if not policy_cfg.elimination or board.all_closed_for(merchant):
            closed = list(range(n))
        else:
            for i, connector in enumerate(eligible):
                state = board.state(connector, merchant, now)
                if state is _CLOSED:
                    closed.append(i)
                elif state is _HALF_OPEN:
                    half_open.append(i)
                else:
                    opened.append(i)

        # The learner's view of every eligible connector.
        learner_failed = False
        penalties: list[float] | None = None
        try:
            a, b, latency, evidence = self._learner.estimate(
                eligible, self._context.path(payment), now, resolved.needs_latency
            )
            means = [a_i / (a_i + b_i) for a_i, b_i in zip(a, b, strict=True)]
            scores = means
            if resolved.penalised:
                lw = policy_cfg.latency_weight
                cw = policy_cfg.cost_weight
                costs = resolved.costs
                penalties = [
                    (lw * latency[i] if latency else 0.0) + cw * costs.get(c, 0.0)
                    for i, c in enumerate(eligible)
                ]
                scores = [m - p for m, p in zip(means, penalties, strict=True)]
        except Exception as exc:  # the learner must never take routing down with it
            learner_failed = True
            reasons.append(f"learner failed ({type(exc).__name__}); scores unavailable")
            a = b = [1.0] * n
            means = scores = evidence = [0.0] * n
            penalties = None

        probe_fraction = self.config.breaker.probe_fraction
        fallback = False
        if closed and not (half_open and rng.random() < probe_fraction):
            considered = closed
            shares, winners, learner_failed = self._win_table(
                considered, a, b, penalties, learner_failed, reasons
            )
            if len(considered) == n:
                greedy = max(range(n), key=scores.__getitem__)
            else:
                greedy = max(range(len(considered)), key=lambda j: scores[considered[j]])
            available = eligible if len(considered) == n else [eligible[i] for i in considered]
            learning = resolved.learning
            pick: int | None = None
            propensity = 1.0
            if learning is not None:
                pick, propensity, why = self._learning_choice(
                    learning,
                    policy_cfg,
                    available,
                    scores,
                    means,
                    evidence,
                    considered,
                    shares,
                    winners,
                    greedy,
                    learner_failed,
                )
                reasons.append(why)
            if pick is None:
                fallback = learning is not None
                choice = resolved.rules.choose(payment, available)
                pick = available.index(choice.connector)
                propensity = choice.propensity
                reasons.append(choice.reason)
            if half_open:
                propensity *= 1.0 - probe_fraction
            explored = pick != greedy
            if explored and not fallback and learning is not None:
                best = considered[greedy]
                reasons.append(
                    f"exploring: {eligible[best]} has the best expected score, {scores[best]:.3f}"
                )
        elif half_open:
            considered = closed + half_open
            shares, _, learner_failed = self._win_table(
                considered, a, b, penalties, learner_failed, reasons
            )
            j = rng.randrange(len(half_open))
            pick = len(closed) + j
            share = probe_fraction if closed else 1.0
            propensity = share / len(half_open)
            explored = True
            reasons.append(
                f"probe of half-open connector {eligible[half_open[j]]}"
                + (f" ({share:.0%} of traffic)" if closed else "; no closed connector left")
            )
        else:
            considered = opened
            shares, _, learner_failed = self._win_table(
                considered, a, b, penalties, learner_failed, reasons
            )
            due = [board.retry_at(eligible[i], merchant) for i in considered]
            pick = min(range(len(considered)), key=lambda j: (due[j], -scores[considered[j]]))
            propensity = 1.0
            fallback = True
            greedy = max(range(len(considered)), key=lambda j: scores[considered[j]])
            explored = pick != greedy
            reasons.append(
                f"every eligible connector is open; chose {eligible[considered[pick]]}, "
                f"the first due for a recovery probe (at {due[pick]:.0f})"
            )
        if opened and considered is not opened:
            reasons.append("held back by open breaker: " + ", ".join(eligible[i] for i in opened))

        chosen = considered[pick]
        # Alternatives: the chosen one, then routable, half-open and open ones, by score.
        if len(closed) == n:
            by_score = sorted(range(n), key=scores.__getitem__, reverse=True)
            by_score.remove(chosen)
            ranked = [chosen, *by_score]
        else:
            ranked = [chosen]
            for group in (closed, half_open, opened):
                ranked.extend(sorted((i for i in group if i != chosen), key=lambda i: -scores[i]))
        self.decisions_made += 1
        return Decision(
            decision_id=_decision_id(rng.getrandbits(96)),
            payment_id=payment.payment_id,
            merchant_id=merchant,
            connector=eligible[chosen],
            alternatives=tuple([(eligible[i], scores[i]) for i in ranked]),
            confidence=0.0 if learner_failed else shares[pick],
            explored=explored,
            propensity=propensity,
            policy=policy_cfg.policy,
            model_version=resolved.version,
            reasons=tuple(reasons),
            fallback=fallback,
            decided_at=now,
            experiment_id=experiment_id,
            experiment_arm=arm,
        )

    def _win_table(
        self,
        considered: list[int],
        a: list[float],
        b: list[float],
        penalties: list[float] | None,
        learner_failed: bool,
        reasons: list[str],
    ) -> tuple[list[float], Any, bool]:
        """Shares and winners of the draws table over ``considered``; uniform if it fails."""
        k = len(considered)
        if k == 1:
            return [1.0], None, learner_failed
        if not learner_failed:
            try:
                if k == len(a):
                    winners, shares = self._draws.win_table(a, b, penalties)
                else:
                    winners, shares = self._draws.win_table(
                        [a[i] for i in considered],
                        [b[i] for i in considered],
                        None if penalties is None else [penalties[i] for i in considered],
                    )
                return shares, winners, False
            except Exception as exc:  # never take routing down; say so instead
                reasons.append(f"posterior draws failed ({type(exc).__name__})")
        return [1.0 / k] * k, None, True

    def _learning_choice(
        self,
        learning: LearningPolicy,
        policy_cfg: PolicyConfig,
        available: list[str],
        scores: list[float],
        means: list[float],
        evidence: list[float],
        considered: list[int],
        shares: list[float],
        winners: Any,
        greedy: int,
        learner_failed: bool,
    ) -> tuple[int | None, float, str]:
        """The learning policy's pick and propensity, or ``None`` and why the rules decide."""
        if learner_failed:
            return None, 1.0, "fallback to rules: the learner failed"
        total = sum(evidence[i] for i in considered)
        if total < policy_cfg.min_evidence:
            return (
                None,
                1.0,
                f"fallback to rules: {total:.1f} observations, "
                f"below min_evidence {policy_cfg.min_evidence:g}",
            )
        if shares[greedy] < policy_cfg.min_confidence:
            return (
                None,
                1.0,
                f"fallback to rules: P(best) of {available[greedy]} is {shares[greedy]:.2f}, "
                f"below min_confidence {policy_cfg.min_confidence:g}",
            )
        candidates = Candidates(available, [scores[i] for i in considered], shares, winners, greedy)
        pick, propensity = learning.choose(candidates, self._rng)
        chosen = considered[pick]
        return (
            pick,
            propensity,
            f"{learning.name}: {available[pick]}, P(best) {shares[pick]:.2f}, "
            f"expected success {means[chosen]:.3f} over {evidence[chosen]:.0f} recent outcomes",
        )

    # ------------------------------------------------------------------ learning

    def observe(self, event: PaymentEvent, now: float) -> None:
        """Learn from one outcome. Pending outcomes are ignored; unknown connectors are added.

        Learning is positioned at the event's own ``occurred_at`` (event time), but never
        later than ``now``: an event dated ahead of the engine's clock is learnt at ``now``,
        so no event can advance the clock others are judged by; ``now`` is also used when an
        event lacks a time. Connector errors (``connector_error_codes``:
        timeouts, connector-side errors) that arrive while the connector's breaker is open
        or half-open feed the breaker only, not the success-rate learner. Not idempotent: the store
        deduplicates by ``event_id`` before events reach the engine. Fields a partially
        built event lacks are treated as missing, never as errors.
        """
        status = getattr(event, "status", None)
        if not isinstance(status, PaymentStatus):
            try:
                status = PaymentStatus(str(status))
            except ValueError:
                return
        if not status.is_final:
            return
        connector = str(getattr(event, "connector", "") or "").lower()
        merchant = str(getattr(event, "merchant_id", "") or "")
        if not connector or not merchant:
            return
        self._offer(merchant, connector)
        try:
            ts = float(event.occurred_ts)
        except (AttributeError, TypeError, ValueError, OverflowError):
            ts = now
        # Never past ``now``: a sender's clock must not move the time every merchant's
        # statistics, breakers and experiments run on (apos.core.event_time).
        if not math.isfinite(ts) or ts > now:
            ts = now
        path = self._context.path_of(
            merchant,
            getattr(event, "payment_method", None),
            getattr(event, "card_network", None),
            getattr(event, "issuer_country", None),
            getattr(event, "amount", None),
            getattr(event, "currency", None),
        )
        latency = getattr(event, "latency_ms", None)
        if latency is not None and not (math.isfinite(latency) and latency >= 0.0):
            latency = None
        success = status.is_success
        code = getattr(event, "error_code", None)
        code = code.lower() if isinstance(code, str) else None
        healthy = success or (code is not None and code in self._issuer_declines)
        # Outages are the breakers' business: a connector error (timeout, 5xx...) arriving
        # once the breaker is open (timeouts still in flight, failed probes) says the
        # connector is down, not how well it does when up; learning it would keep traffic
        # away long after the recovery. The errors that opened the breaker are learnt, and
        # so is every failure not positively identified as a connector error.
        if (
            code is None
            or code not in self._connector_errors
            or self._breakers.state(connector, merchant, ts) is _CLOSED
        ):
            self._learner.observe(connector, path, success, latency, ts)
        self._breakers.record(connector, merchant, healthy, ts)
        # An experiment compares how APOS routed: only first attempts that followed one of
        # its decisions count, not payments the switch routed by itself.
        if (
            self._running
            and getattr(event, "attempt", 1) == 1
            and getattr(event, "decision_id", None)
        ):
            payment_id = str(getattr(event, "payment_id", ""))
            for experiment in self._running:
                experiment.record(payment_id, merchant, success, ts)

    def tick(self, now: float) -> TickReport:
        """Housekeeping at event time ``now``.

        Half-opens breakers whose cooldown is over; reports every breaker change and every
        success-rate change the learner detected since the last tick; once per learner
        half-life, drops learner cells decayed to nothing (and rebases the learner's epoch).
        """
        self._breakers.advance(now)
        pruned = 0
        if self._last_prune is None:
            self._last_prune = now
        elif now - self._last_prune >= self.config.learner.half_life_s:
            pruned = self._learner.maintain(now)
            self._last_prune = now
        not_closed = tuple(
            BreakerStatus(
                b.connector,
                b.merchant_id,
                b.state.value,
                b.retry_at if b.state is BreakerState.OPEN else None,
            )
            for b in self._breakers.not_closed()
        )
        return TickReport(
            now,
            tuple(self._breakers.drain()),
            not_closed,
            pruned,
            tuple(self._learner.drain_changes()),
        )

    def context_of(self, payment: Payment) -> dict[str, str]:
        """The payment's finest context as ``{dimension: value}``, coarse to fine.

        What the learner keys this payment's statistics by, in the configured order; use it
        to show a context without assuming the order.

        >>> context = Engine(["stripe"]).context_of(Payment("p1", "m1", 1999, "USD"))
        >>> list(context.items())[-2:]
        [('amount_band', 'lt100'), ('merchant', 'm1')]
        """
        return dict(zip(self._context.order, self._context.path(payment)[-1], strict=True))

    def breaker_state(
        self, connector: str, merchant_id: str | None = None, now: float | None = None
    ) -> BreakerState:
        """A breaker's state: the connector-wide one, or the effective one for a merchant.

        With ``now`` an open breaker whose cooldown is over is half-opened first.
        """
        connector = connector.lower()
        if merchant_id is not None and now is not None:
            return self._breakers.state(connector, merchant_id, now)
        breaker = self._breakers.get(connector, merchant_id)
        if breaker is None:
            return BreakerState.CLOSED
        if now is not None and breaker.state is BreakerState.OPEN:
            breaker.advance(now)
        return breaker.state

    def failure_threshold(self, connector: str, now: float) -> int:
        """The failure run that would open the connector-wide breaker if it started at ``now``."""
        breaker = self._breakers.get(connector.lower())
        if breaker is None:
            return self.config.breaker.failure_threshold
        return breaker.threshold(now)

    # ------------------------------------------------------------------ experiments

    def start_experiment(self, experiment: Experiment) -> None:
        """Start splitting payments between the experiment's arms.

        Raises:
            ValueError: An experiment with that id is already known.
        """
        if experiment.experiment_id in self._experiments:
            raise ValueError(f"experiment {experiment.experiment_id!r} already exists")
        self._experiments[experiment.experiment_id] = experiment
        if experiment.stopped_at is None:
            self._running.append(experiment)

    def stop_experiment(self, experiment_id: str, now: float) -> ExperimentResult:
        """Stop an experiment at event time ``now`` and return its final result.

        Raises:
            KeyError: No such experiment.
        """
        experiment = self._experiments[experiment_id]
        experiment.stop(now)
        self._running = [e for e in self._running if e is not experiment]
        return experiment.result()

    def experiment_result(self, experiment_id: str) -> ExperimentResult:
        """Where an experiment stands (running or stopped).

        Raises:
            KeyError: No such experiment.
        """
        return self._experiments[experiment_id].result()

    @property
    def experiments(self) -> tuple[Experiment, ...]:
        """Every experiment, running or stopped, in the order they were started."""
        return tuple(self._experiments.values())

    # ------------------------------------------------------------------ warm restart

    def reseed(self, seed: int) -> None:
        """Draw future random choices (and decision ids) from ``seed``, keeping what is learnt.

        Instances restored from one shared snapshot call this with distinct seeds, or they
        would all draw the same numbers and issue the same decision ids.
        """
        self.seed = seed
        self._rng.seed(seed)
        # The draws table is part of the random state: rebuilt so that a snapshot taken
        # after this (which records the seed) restores to the very same decisions.
        self._draws = PosteriorDraws(self.config.learner.posterior_draws, seed)

    def snapshot(self) -> dict[str, Any]:
        """Everything learnt and the random state, as JSON-serialisable data."""
        version, internal, gauss = self._rng.getstate()
        return {
            "format": SNAPSHOT_FORMAT,
            "seed": self.seed,
            "connectors": list(self._base),
            "merchant_connectors": {
                m: own[len(self._base) :] for m, own in self._by_merchant.items()
            },
            "config": self.config.model_dump(mode="json"),
            "rng": [version, list(internal), gauss],
            "decisions_made": self.decisions_made,
            "last_prune": self._last_prune,
            "context_order": list(self._context.order),
            "learner": self._learner.to_dict(),
            "breakers": self._breakers.to_dict(),
            "experiments": [e.to_dict() for e in self._experiments.values()],
        }

    @classmethod
    def restore(cls, snapshot: Mapping[str, Any], config: EngineConfig | None = None) -> Engine:
        """An engine continuing from ``snapshot``; ``config`` overrides the saved one.

        Raises:
            ValueError: The snapshot is not in a format this version reads.
        """
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"not an {SNAPSHOT_FORMAT} snapshot: {snapshot.get('format')!r}")
        cfg = config if config is not None else EngineConfig.model_validate(snapshot["config"])
        engine = cls(snapshot["connectors"], seed=int(snapshot["seed"]), config=cfg)
        engine.load_snapshot(snapshot)
        return engine

    def load_snapshot(self, snapshot: Mapping[str, Any]) -> None:
        """Replace this engine's learnt and random state with ``snapshot``'s (config stays).

        Raises:
            ValueError: The snapshot is not in a format this version reads.
        """
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"not an {SNAPSHOT_FORMAT} snapshot: {snapshot.get('format')!r}")
        # A snapshot's own shared connectors join this engine's. One written before
        # merchant_connectors lists every connector any merchant used as shared: those stay
        # known (their learnt cells are kept) but are offered to a merchant again only once
        # its own events or requests name them, never to everyone.
        shared = "merchant_connectors" in snapshot
        for connector in snapshot["connectors"]:
            if shared and connector not in self._known:
                self._base.append(str(connector))
            self._know(str(connector))
        for merchant, extra in snapshot.get("merchant_connectors", {}).items():
            for connector in extra:
                self._offer(str(merchant), str(connector))
        seed = int(snapshot["seed"])
        if seed != self.seed:  # the draws table belongs to the random state too
            self.seed = seed
            self._draws = PosteriorDraws(self.config.learner.posterior_draws, seed)
        version, internal, gauss = snapshot["rng"]
        self._rng.setstate((int(version), tuple(int(x) for x in internal), gauss))
        self.decisions_made = int(snapshot.get("decisions_made", 0))
        last_prune = snapshot.get("last_prune")
        self._last_prune = None if last_prune is None else float(last_prune)
        # Cells are keyed by context: another order makes them meaningless, so start afresh.
        if tuple(snapshot.get("context_order", ())) == self._context.order:
            self._learner.load(snapshot["learner"])
        self._breakers.load(snapshot["breakers"])
        self._experiments = {}
        self._running = []
        self._arm_resolved.clear()
        for data in snapshot.get("experiments", []):
            self.start_experiment(Experiment.from_dict(data))
