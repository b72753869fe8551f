"""Static rule-based routing: conditions, priority lists, percentage splits.

The rules are every merchant's fallback: the learning policies defer to them at cold start,
when unsure, or when the learner fails, and a merchant may choose them outright
(``policy = "rules"``). Their propensity is exact: 1 for a priority choice, the connector's
(renormalised) split share for a split, where the stable hash of the payment id plays the
part of the coin.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from apos.core.config import RoutingRule
from apos.core.payment import Payment

__all__ = ["RuleChoice", "RulesPolicy", "rule_matches", "stable_fraction"]

_TWO_64 = float(2**64)


def stable_fraction(payment_id: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by ``(salt, payment_id)``: the same on every host and run.

    BLAKE2b rather than ``hash()``, which is salted per process.

    >>> stable_fraction("pay_1", "split") == stable_fraction("pay_1", "split")
    True
    >>> 0.0 <= stable_fraction("pay_1") < 1.0
    True
    """
    digest = hashlib.blake2b(f"{salt}\x00{payment_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _TWO_64


def rule_matches(rule: RoutingRule, payment: Payment) -> bool:
    """Whether every condition of ``rule`` holds for ``payment``."""
    if rule.payment_methods is not None and (
        (payment.payment_method or "").lower() not in rule.payment_methods
    ):
        return False
    if rule.card_networks is not None and (
        (payment.card_network or "").lower() not in rule.card_networks
    ):
        return False
    if rule.countries is not None and (payment.country or "").upper() not in rule.countries:
        return False
    if rule.currencies is not None and payment.currency.upper() not in rule.currencies:
        return False
    if rule.min_amount is not None and payment.amount < rule.min_amount:
        return False
    return rule.max_amount is None or payment.amount < rule.max_amount


@dataclass(frozen=True, slots=True)
class RuleChoice:
    """What the rules decided: the connector, the probability of that choice, and why."""

    connector: str
    propensity: float
    reason: str


class RulesPolicy:
    """Route by the first matching rule that has an available connector, else by priority.

    Parameters:
        rules: Tried in order.
        priority: Last resort when no rule decides; connectors not in it follow in the order
            the caller lists them as available.

    Examples:
        >>> from apos.core.config import RoutingRule
        >>> policy = RulesPolicy(
        ...     [RoutingRule(name="eu", countries=["DE", "FR"], connectors=["adyen"]),
        ...      RoutingRule(name="ab", split={"stripe": 70, "checkout": 30})],
        ...     priority=["stripe"])
        >>> policy.choose(Payment("p1", "m1", 500, "EUR", country="DE"), ["stripe", "adyen"])
        RuleChoice(connector='adyen', propensity=1.0, reason="rule 'eu': priority -> adyen")
        >>> policy.choose(Payment("p2", "m1", 500, "EUR", country="DE"), ["stripe"]).reason
        "rule 'ab': split, 100% share -> stripe"
    """

    name = "rules"

    def __init__(self, rules: Sequence[RoutingRule], priority: Sequence[str]) -> None:
        self.rules = tuple(rules)
        self.priority = tuple(priority)

    def choose(self, payment: Payment, available: Sequence[str]) -> RuleChoice:
        """Pick one of ``available`` (non-empty) for ``payment``."""
        if not available:
            raise ValueError("the rules need at least one available connector")
        for rule in self.rules:
            if not rule_matches(rule, payment):
                continue
            if rule.split:
                members = [(c, pct) for c, pct in rule.split.items() if c in available]
                if not members:
                    continue
                total = sum(pct for _, pct in members)
                point = stable_fraction(payment.payment_id, rule.name) * total
                chosen, weight = members[-1]  # floating-point leftovers land on the last
                for connector, pct in members:
                    point -= pct
                    if point < 0.0:
                        chosen, weight = connector, pct
                        break
                share = weight / total
                return RuleChoice(
                    chosen, share, f"rule {rule.name!r}: split, {share:.0%} share -> {chosen}"
                )
            for connector in rule.connectors:
                if connector in available:
                    return RuleChoice(
                        connector, 1.0, f"rule {rule.name!r}: priority -> {connector}"
                    )
        for connector in self.priority:
            if connector in available:
                return RuleChoice(connector, 1.0, f"default priority -> {connector}")
        return RuleChoice(available[0], 1.0, f"default order -> {available[0]}")
