"""A/B tests between two routing configurations, split by a stable hash of the payment id.

An :class:`Experiment` is a pure object: the engine asks it which arm a payment is in when
routing (:meth:`Experiment.arm_for`) and tells it first-attempt outcomes when observing
(:meth:`Experiment.record`). The metric is the first-attempt success rate, what a router
controls; the report gives each arm's rate, the difference (treatment minus control) and
its 95% Newcombe interval.

Both arms share the engine's learner, so each arm also learns from the other's traffic:
the experiment compares *policies* given the same knowledge, not separately trained models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from apos.core.config import PolicyConfig
from apos.core.routing.rules import stable_fraction
from apos.core.stats.proportions import newcombe_difference_interval

__all__ = ["ArmResult", "Experiment", "ExperimentArm", "ExperimentResult"]

ExperimentArm = Literal["control", "treatment"]


@dataclass(frozen=True, slots=True)
class ArmResult:
    """One arm's tally: first-attempt successes over first attempts."""

    policy: str
    attempts: int
    successes: int

    @property
    def success_rate(self) -> float:
        """Successes over attempts (0 with no attempts)."""
        return self.successes / self.attempts if self.attempts else 0.0


@dataclass(frozen=True, slots=True)
class ExperimentResult:
    """Where an experiment stands.

    Attributes:
        experiment_id: The experiment.
        control: Arm A.
        treatment: Arm B.
        difference: ``treatment.success_rate - control.success_rate``.
        ci_low: Lower end of the 95% Newcombe interval of the difference.
        ci_high: Upper end.
        significant: The interval excludes 0.
        running: Not stopped yet.
    """

    experiment_id: str
    control: ArmResult
    treatment: ArmResult
    difference: float
    ci_low: float
    ci_high: float
    significant: bool
    running: bool


class Experiment:
    """An A/B test of two policy configurations over one merchant's (or all) payments.

    Parameters:
        experiment_id: Names the experiment; also salts the split hash, so two experiments
            split the same payments independently.
        control: Arm A's configuration.
        treatment: Arm B's configuration.
        started_at: Event time from which payments are split.
        treatment_share: Share of payments in arm B.
        merchant_id: The merchant it applies to; ``None`` for all.

    Examples:
        >>> exp = Experiment("thompson-vs-rules", PolicyConfig(policy="rules"),
        ...                  PolicyConfig(policy="thompson"), started_at=0.0)
        >>> for i in range(1000):
        ...     arm = exp.arm_for(f"pay_{i}")
        ...     exp.record(f"pay_{i}", "m1", success=(arm == "treatment") or i % 5 > 0,
        ...                ts=float(i))
        >>> result = exp.result()
        >>> result.control.attempts + result.treatment.attempts, result.significant
        (1000, True)
        >>> round(result.difference, 3), round(result.ci_low, 3), round(result.ci_high, 3)
        (0.172, 0.14, 0.207)

    References:
        [^1]: Kohavi, R., Tang, D. and Xu, Y., 2020. Trustworthy Online Controlled
            Experiments. Cambridge University Press (ch. 4, randomization by hashing).
        [^2]: Newcombe, R.G., 1998. Interval estimation for the difference between
            independent proportions. Statistics in Medicine, 17(8), 873-890.
    """

    def __init__(
        self,
        experiment_id: str,
        control: PolicyConfig,
        treatment: PolicyConfig,
        started_at: float,
        treatment_share: float = 0.5,
        merchant_id: str | None = None,
    ) -> None:
        if not 0.0 < treatment_share < 1.0:
            raise ValueError("treatment_share must be strictly between 0 and 1")
        self.experiment_id = experiment_id
        self.control = control
        self.treatment = treatment
        self.started_at = started_at
        self.stopped_at: float | None = None
        self.treatment_share = treatment_share
        self.merchant_id = merchant_id
        self._attempts = {"control": 0, "treatment": 0}
        self._successes = {"control": 0, "treatment": 0}

    def applies(self, merchant_id: str, ts: float) -> bool:
        """Whether a payment of ``merchant_id`` at event time ``ts`` is in the experiment."""
        if self.merchant_id is not None and merchant_id != self.merchant_id:
            return False
        return ts >= self.started_at and (self.stopped_at is None or ts < self.stopped_at)

    def arm_for(self, payment_id: str) -> ExperimentArm:
        """The arm of ``payment_id``: fixed by a hash, the same for every attempt."""
        fraction = stable_fraction(payment_id, self.experiment_id)
        return "treatment" if fraction < self.treatment_share else "control"

    def policy_for(self, arm: ExperimentArm) -> PolicyConfig:
        """The configuration of ``arm``."""
        return self.treatment if arm == "treatment" else self.control

    def record(self, payment_id: str, merchant_id: str, success: bool, ts: float) -> None:
        """Count one first-attempt outcome, if it belongs to the experiment."""
        if not self.applies(merchant_id, ts):
            return
        arm = self.arm_for(payment_id)
        self._attempts[arm] += 1
        self._successes[arm] += int(success)

    def stop(self, now: float) -> None:
        """Stop splitting (and counting) from event time ``now`` on."""
        if self.stopped_at is None:
            self.stopped_at = now

    def result(self) -> ExperimentResult:
        """Each arm's success rate, the difference and its 95% interval."""
        control = ArmResult(
            self.control.policy, self._attempts["control"], self._successes["control"]
        )
        treatment = ArmResult(
            self.treatment.policy, self._attempts["treatment"], self._successes["treatment"]
        )
        low, high = newcombe_difference_interval(
            control.successes, control.attempts, treatment.successes, treatment.attempts
        )
        return ExperimentResult(
            experiment_id=self.experiment_id,
            control=control,
            treatment=treatment,
            difference=treatment.success_rate - control.success_rate,
            ci_low=low,
            ci_high=high,
            significant=low > 0.0 or high < 0.0,
            running=self.stopped_at is None,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (see :meth:`from_dict`)."""
        return {
            "experiment_id": self.experiment_id,
            "control": self.control.model_dump(mode="json"),
            "treatment": self.treatment.model_dump(mode="json"),
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "treatment_share": self.treatment_share,
            "merchant_id": self.merchant_id,
            "attempts": dict(self._attempts),
            "successes": dict(self._successes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        """Rebuild an experiment saved by :meth:`to_dict`."""
        exp = cls(
            str(data["experiment_id"]),
            PolicyConfig.model_validate(data["control"]),
            PolicyConfig.model_validate(data["treatment"]),
            float(data["started_at"]),
            float(data["treatment_share"]),
            data.get("merchant_id"),
        )
        exp.stopped_at = None if data.get("stopped_at") is None else float(data["stopped_at"])
        for arm in ("control", "treatment"):
            exp._attempts[arm] = int(data["attempts"][arm])
            exp._successes[arm] = int(data["successes"][arm])
        return exp
