"""Static rules: conditions, priority lists, percentage splits, validation."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from apos.core.config import PolicyConfig, RoutingRule
from apos.core.routing.rules import RulesPolicy, rule_matches, stable_fraction

from .helpers import payment

ALL = ["stripe", "adyen", "checkout"]


@pytest.mark.parametrize(
    ("rule", "matching", "other"),
    [
        (
            RoutingRule(name="r", payment_methods=["Wallet"], connectors=["adyen"]),
            payment(method="wallet"),
            payment(method="card"),
        ),
        (
            RoutingRule(name="r", card_networks=["AMEX"], connectors=["adyen"]),
            payment(network="amex"),
            payment(network="visa"),
        ),
        (
            RoutingRule(name="r", countries=["de", "FR"], connectors=["adyen"]),
            payment(country="DE"),
            payment(country="US"),
        ),
        (
            RoutingRule(name="r", currencies=["eur"], connectors=["adyen"]),
            payment(currency="EUR"),
            payment(currency="USD"),
        ),
        (
            RoutingRule(name="r", min_amount=1000, max_amount=5000, connectors=["adyen"]),
            payment(amount=1000),
            payment(amount=5000),
        ),
    ],
)
def test_each_condition_selects_its_payments(rule: RoutingRule, matching, other) -> None:  # type: ignore[no-untyped-def]
    assert rule_matches(rule, matching)
    assert not rule_matches(rule, other)
    assert not rule_matches(rule, payment(network=None, country=None, method="x", amount=0))


def test_the_first_matching_rule_with_an_available_connector_decides() -> None:
    policy = RulesPolicy(
        [
            RoutingRule(name="amex", card_networks=["amex"], connectors=["checkout"]),
            RoutingRule(name="eu", countries=["DE"], connectors=["adyen", "stripe"]),
        ],
        priority=["stripe"],
    )
    assert policy.choose(payment(network="amex", country="DE"), ALL).connector == "checkout"
    # checkout unavailable (breaker open): the next matching rule decides.
    choice = policy.choose(payment(network="amex", country="DE"), ["stripe", "adyen"])
    assert (choice.connector, choice.propensity) == ("adyen", 1.0)
    assert "rule 'eu'" in choice.reason
    assert policy.choose(payment(country="DE"), ["stripe"]).connector == "stripe"
    assert policy.choose(payment(country="US"), ["adyen", "stripe"]).reason.startswith(
        "default priority"
    )
    assert policy.choose(payment(country="US"), ["checkout", "adyen"]).connector == "checkout"


def test_a_split_sends_each_connector_its_percentage() -> None:
    policy = RulesPolicy([RoutingRule(name="ab", split={"stripe": 70, "adyen": 30})], [])
    choices = [policy.choose(payment(), ALL) for _ in range(20_000)]
    counts = Counter(c.connector for c in choices)
    assert counts["stripe"] / len(choices) == pytest.approx(0.70, abs=0.015)
    assert counts["adyen"] / len(choices) == pytest.approx(0.30, abs=0.015)
    assert {c.propensity for c in choices if c.connector == "stripe"} == {0.7}


def test_a_payment_always_splits_the_same_way() -> None:
    policy = RulesPolicy([RoutingRule(name="ab", split={"stripe": 50, "adyen": 50})], [])
    fixed = payment(payment_id="pay_42")
    assert len({policy.choose(fixed, ALL).connector for _ in range(20)}) == 1
    assert stable_fraction("pay_42", "ab") == stable_fraction("pay_42", "ab")
    assert stable_fraction("pay_42", "ab") != stable_fraction("pay_42", "cd")


def test_an_unavailable_split_member_gives_its_share_to_the_others() -> None:
    policy = RulesPolicy(
        [RoutingRule(name="abc", split={"stripe": 50, "adyen": 25, "checkout": 25})], []
    )
    choices = [policy.choose(payment(), ["adyen", "checkout"]) for _ in range(10_000)]
    counts = Counter(c.connector for c in choices)
    assert counts["adyen"] / len(choices) == pytest.approx(0.5, abs=0.02)
    assert {c.propensity for c in choices} == {0.5}


def test_rules_need_an_available_connector() -> None:
    with pytest.raises(ValueError):
        RulesPolicy([], []).choose(payment(), [])


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "r"},  # decides nothing
        {"name": "r", "split": {"stripe": 60, "adyen": 30}},  # not 100
        {"name": "r", "split": {"stripe": 100, "adyen": 0}},
        {"name": "r", "connectors": ["a"], "split": {"a": 100}},
        {"name": "r", "connectors": ["a"], "min_amount": 10, "max_amount": 10},
        {"name": "r", "connectors": ["a"], "typo": 1},
    ],
)
def test_invalid_rules_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RoutingRule.model_validate(fields)


def test_priority_lists_keep_their_order_and_lose_duplicates() -> None:
    rule = RoutingRule(name="r", connectors=["Adyen", "stripe", "adyen"])
    assert rule.connectors == ("adyen", "stripe")
    assert PolicyConfig(priority=["B", "a", "b"]).priority == ("b", "a")
