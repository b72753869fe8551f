"""The decision-engine compatibility layer's vocabulary, request models, mappings and state.

The HTTP side is :mod:`apos.service.api.decision_engine`; what maps to what is tabled in
``docs/decision-engine-compat.md``. Field names, enums and defaults are those of Juspay's
decision engine (``src/decider/gatewaydecider/types.rs``, ``src/feedback/types.rs``,
``src/types/txn_details/types.rs``, ``src/types/routing_configuration.rs``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeVar

import orjson
from fastapi.concurrency import run_in_threadpool
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from apos.adapters.db.routing_config import MerchantRoutingConfig, RoutingConfigStore
from apos.core.config import PolicyConfig
from apos.core.events import (
    CARD_NUMBER_REFUSED,
    UNSTORABLE_REFUSED,
    PaymentStatus,
    refuse_card_number,
    unstorable_path,
)
from apos.core.iso import (
    COUNTRIES,
    CURRENCIES,
    CURRENCY_EXPONENTS,
    card_number_path,
    contains_card_number,
    redact_card_numbers,
)
from apos.service.bootstrap import Services, load_engine_config
from apos.service.logs import get_logger
from apos.service.routing import RoutingService

log = get_logger("decision_engine")

# --------------------------------------------------------------------------- vocabulary

TXN_OBJECT_TYPES: Final = frozenset(
    {
        "ORDER_PAYMENT", "MANDATE_REGISTER", "EMANDATE_REGISTER", "MANDATE_PAYMENT",
        "EMANDATE_PAYMENT", "TPV_PAYMENT", "TPV_EMANDATE_REGISTER", "TPV_MANDATE_REGISTER",
        "TPV_EMANDATE_PAYMENT", "TPV_MANDATE_PAYMENT", "PARTIAL_CAPTURE", "PARTIAL_VOID",
        "VAN_PAYMENT", "MOTO_PAYMENT",
    }
)  # fmt: skip

RankingAlgorithm = Literal[
    "SR_BASED_ROUTING", "PL_BASED_ROUTING", "NTW_BASED_ROUTING", "NTW_SR_HYBRID_ROUTING"
]

# The engine's ``TxnStatus`` -> APOS status. Successes and failures follow the engine's own
# scoring sets (``txnSuccessStates`` / ``txnFailureStates``): what the engine rewards APOS
# learns as a success, what it penalises as a failure; the rest is not final yet.
STATUS_MAP: Final[dict[str, PaymentStatus]] = {
    "CHARGED": PaymentStatus.SUCCEEDED,
    "PARTIAL_CHARGED": PaymentStatus.SUCCEEDED,
    "AUTO_REFUNDED": PaymentStatus.SUCCEEDED,
    "VOIDED_POST_CHARGE": PaymentStatus.SUCCEEDED,
    "AUTHORIZED": PaymentStatus.AUTHORIZED,
    "TO_BE_CHARGED": PaymentStatus.AUTHORIZED,
    "CAPTURE_INITIATED": PaymentStatus.AUTHORIZED,
    "CAPTURE_FAILED": PaymentStatus.AUTHORIZED,
    "COD_INITIATED": PaymentStatus.AUTHORIZED,
    "VOIDED": PaymentStatus.AUTHORIZED,
    "VOID_INITIATED": PaymentStatus.AUTHORIZED,
    "VOID_FAILED": PaymentStatus.AUTHORIZED,
    "AUTHENTICATION_FAILED": PaymentStatus.FAILED,
    "AUTHORIZATION_FAILED": PaymentStatus.FAILED,
    "JUSPAY_DECLINED": PaymentStatus.FAILED,
    "FAILURE": PaymentStatus.FAILED,
    "DECLINED": PaymentStatus.FAILED,
    "PENDING_VBV": PaymentStatus.REQUIRES_ACTION,
    "STARTED": PaymentStatus.PENDING,
    "VBV_SUCCESSFUL": PaymentStatus.PENDING,
    "AUTHORIZING": PaymentStatus.PENDING,
    "PENDING": PaymentStatus.PENDING,
    "NOP": PaymentStatus.PENDING,
}
# Hyperswitch derives these spellings from its own enum (``VBVSuccessful``, ``CODInitiated``).
STATUS_ALIASES: Final = {"V_B_V_SUCCESSFUL": "VBV_SUCCESSFUL", "C_O_D_INITIATED": "COD_INITIATED"}
ENFORCED_FAILURE_CODE: Final = "dynamic_routing_failure_enforced"

# Hyperswitch's payment-method categories. Hyperswitch sends its category in ``paymentMethod``
# and a fixed ``paymentMethodType: "UPI"``; the engine's own clients send the category in
# ``paymentMethodType`` (``CARD``) and the sub-type in ``paymentMethod`` (``CREDIT``).
HYPERSWITCH_CATEGORIES: Final = frozenset(
    {
        "card", "card_redirect", "pay_later", "wallet", "bank_redirect", "bank_transfer", "crypto",
        "bank_debit", "reward", "real_time_payment", "upi", "voucher", "gift_card", "open_banking",
        "mobile_payment",
    }
)  # fmt: skip

RULE_TYPES: Final = {
    "successRate": "successRate",
    "success_rate": "successRate",
    "elimination": "elimination",
    "debitRouting": "debitRouting",
    "debit_routing": "debitRouting",
}
RULE_LABELS: Final = {
    "successRate": "Success Rate",
    "elimination": "Elimination",
    "debitRouting": "Debit Routing",
}

MERCHANT_CACHE_TTL_S: Final = 5.0
CONTEXT_TTL: Final = timedelta(hours=24)
CONTEXT_CACHE_SIZE: Final = 50_000
CONTEXT_PURGE_EVERY: Final = 1_000

_IDENTIFIER = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
TOKEN = re.compile(r"^[a-z0-9_.:\-]{1,64}$")
_NOT_TOKEN = re.compile(r"[^a-z0-9_.:\-]+")


def _identifier(value: str) -> str:
    if not _IDENTIFIER.fullmatch(value):  # match() would let a trailing newline through
        raise ValueError("may contain only letters, digits and _ . : - (at most 128)")
    return refuse_card_number(value)


def token(value: str | None) -> str | None:
    """A free-form label as an APOS token (``"Credit Card"`` -> ``"credit_card"``)."""
    if value is None:
        return None
    label = _NOT_TOKEN.sub("_", value.strip().lower()).strip("_")[:64]
    return label or None


# --------------------------------------------------------------------------- request models


class _CamelModel(BaseModel):
    # Unknown fields are ignored, as serde does by default in the engine.
    model_config = ConfigDict(alias_generator=to_camel, extra="ignore", frozen=True)


class PaymentInfo(_CamelModel):
    """The engine's ``paymentInfo``; fields APOS does not use are accepted and ignored."""

    payment_id: str = Field(min_length=1, max_length=128)
    amount: float = Field(ge=0, allow_inf_nan=False, description="major units of currency")
    currency: str
    country: str | None = None
    customer_id: str | None = None
    preferred_gateway: str | None = None
    payment_type: str
    payment_method_type: str
    payment_method: str
    auth_type: str | None = None
    card_isin: str | None = None
    card_type: str | None = None
    card_switch_provider: str | None = None
    card_network: str | None = Field(
        default=None,
        validation_alias=AliasChoices("cardNetwork", "cardBrand"),
        description="APOS extension; the engine's card network is cardSwitchProvider",
    )

    check_payment_id = field_validator("payment_id")(_identifier)
    # Checked before token() turns "4111 1111 1111 1111" into "4111_1111_1111_1111".
    check_labels = field_validator(
        "preferred_gateway", "payment_method_type", "payment_method", "card_network"
    )(refuse_card_number)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if value.upper() not in CURRENCIES:
            raise ValueError("unknown ISO 4217 currency code")
        return value.upper()

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is not None and value.upper() not in COUNTRIES:
            raise ValueError("unknown ISO 3166-1 alpha-2 country code")
        return None if value is None else value.upper()

    @field_validator("payment_type")
    @classmethod
    def _payment_type(cls, value: str) -> str:
        if value not in TXN_OBJECT_TYPES:
            raise ValueError("unknown variant, expected one of the TxnObjectType values")
        return value


class DecideGatewayRequest(_CamelModel):
    """Body of ``POST /decide-gateway`` (the engine's ``DomainDeciderRequestForApiCallV2``)."""

    merchant_id: str = Field(min_length=1, max_length=128)
    payment_info: PaymentInfo
    eligible_gateway_list: list[str] | None = Field(default=None, max_length=64)
    ranking_algorithm: RankingAlgorithm | None = None
    elimination_enabled: bool | None = None

    check_merchant_id = field_validator("merchant_id")(_identifier)

    @field_validator("eligible_gateway_list")
    @classmethod
    def _gateways(cls, value: list[str] | None) -> list[str] | None:
        for gateway in value or ():
            if contains_card_number(gateway):
                raise ValueError(CARD_NUMBER_REFUSED)
        return value


class UpdateGatewayScoreRequest(_CamelModel):
    """Body of ``POST /update-gateway-score`` (the engine's ``UpdateScorePayload``)."""

    merchant_id: str = Field(min_length=1, max_length=128)
    gateway: str = Field(min_length=1, max_length=64)
    gateway_reference_id: str | None = None
    status: str
    payment_id: str = Field(min_length=1, max_length=128)
    enforce_dynamic_routing_failure: bool | None = None
    txn_latency: dict[str, Any] | float | None = None
    customer_id: str | None = None
    payment_method: str | None = None
    payment_method_type: str | None = None

    check_ids = field_validator("merchant_id", "payment_id")(_identifier)
    check_labels = field_validator("gateway")(refuse_card_number)

    @field_validator("status")
    @classmethod
    def _status(cls, value: str) -> str:
        value = STATUS_ALIASES.get(value, value)
        if value not in STATUS_MAP:
            raise ValueError("unknown variant, expected one of the TxnStatus values")
        return value

    def latency_ms(self) -> float | None:
        """``txnLatency`` in milliseconds (``{"gatewayLatency": ms}`` or a number)."""
        raw: Any = self.txn_latency
        if isinstance(raw, dict):
            raw = raw.get("gatewayLatency", raw.get("milliseconds"))
        if isinstance(raw, int | float) and math.isfinite(raw) and 0 <= raw <= 3_600_000:
            return float(raw)
        return None


class GatewayExtraScore(_CamelModel):
    gateway_name: str
    gateway_sigma_factor: float


class SubLevelInputConfig(_CamelModel):
    """A per-dimension override of the success-rate configuration."""

    payment_method_type: str | None = None
    payment_method: str | None = None
    card_network: str | None = None
    card_is_in: str | None = None
    currency: str | None = None
    country: str | None = None
    auth_type: str | None = None
    latency_threshold: float | None = Field(default=None, ge=0)
    bucket_size: int | None = Field(default=None, ge=1)
    hedging_percent: float | None = Field(default=None, ge=0, le=100)
    lower_reset_factor: float | None = None
    upper_reset_factor: float | None = None
    gateway_extra_score: list[GatewayExtraScore] | None = None


class SuccessRateData(_CamelModel):
    """``config.data`` of a ``successRate`` rule (the engine's SR v3 input config)."""

    default_latency_threshold: float | None = Field(default=None, ge=0)
    default_success_rate: float | None = Field(default=None, ge=0, le=1)
    default_bucket_size: int | None = Field(default=None, ge=1)
    default_hedging_percent: float | None = Field(default=None, ge=0, le=100)
    default_lower_reset_factor: float | None = None
    default_upper_reset_factor: float | None = None
    default_gateway_extra_score: list[GatewayExtraScore] | None = None
    sub_level_input_config: list[SubLevelInputConfig] | None = None
    margin: float | None = Field(default=None, ge=0)
    default_prior_strength: float | None = Field(default=None, gt=0)


class EliminationData(_CamelModel):
    """``config.data`` of an ``elimination`` rule."""

    threshold: float = Field(ge=0, le=1)
    txn_latency: Any = None


class DebitRoutingData(BaseModel):
    """``config.data`` of a ``debitRouting`` rule (snake_case in the engine)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    merchant_category_code: str = Field(max_length=64)
    acquirer_country: str = Field(max_length=64)


RULE_DATA: Final[dict[str, type[BaseModel]]] = {
    "successRate": SuccessRateData,
    "elimination": EliminationData,
    "debitRouting": DebitRoutingData,
}


class _SnakeModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class MerchantAccountCreate(_SnakeModel):
    """Body of ``POST /merchant-account/create``."""

    merchant_id: str = Field(min_length=1, max_length=128)
    gateway_success_rate_based_decider_input: str | None = Field(default=None, max_length=16_384)

    check_merchant_id = field_validator("merchant_id")(_identifier)
    check_decider_input = field_validator("gateway_success_rate_based_decider_input")(
        refuse_card_number
    )


# ``config.data`` of a rule: the largest the engine's own configurations need (a successRate
# rule with per-dimension overrides and gateway scores is 5 levels deep) with room to spare.
RULE_DATA_MAX_DEPTH: Final = 6
RULE_DATA_MAX_BYTES: Final = 16 * 1024


def nesting_depth(document: Any) -> int:
    """Levels of objects and arrays in a JSON-like document (a scalar is 0, ``{}`` is 1).

    >>> nesting_depth({"a": [{"b": 1}]}), nesting_depth(3)
    (3, 0)
    """
    depth = 0
    level = [document]
    while True:  # breadth first: no recursion limit to hit on a hostile document
        containers = [n for n in level if isinstance(n, dict | list | tuple)]
        if not containers:
            return depth
        depth += 1
        level = [c for n in containers for c in (n.values() if isinstance(n, dict) else n)]


class RuleConfigEnvelope(_SnakeModel):
    """``config`` of the rule calls: ``{"type": ..., "data": {...}}``."""

    type: str
    data: dict[str, Any]

    @field_validator("data")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Stored, audited and echoed as given: refused beyond the limits rather than cut.
        if nesting_depth(value) > RULE_DATA_MAX_DEPTH:
            raise ValueError(f"nested deeper than {RULE_DATA_MAX_DEPTH} levels")
        if len(orjson.dumps(value)) > RULE_DATA_MAX_BYTES:
            raise ValueError(f"larger than {RULE_DATA_MAX_BYTES} bytes as JSON")
        return value

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if value not in RULE_TYPES:
            raise ValueError("unknown variant, expected successRate, elimination or debitRouting")
        return RULE_TYPES[value]


class RuleConfigRequest(_SnakeModel):
    """Body of ``POST /rule/create`` and ``POST /rule/update``."""

    merchant_id: str = Field(min_length=1, max_length=128)
    config: RuleConfigEnvelope

    check_merchant_id = field_validator("merchant_id")(_identifier)


class RuleFetchRequest(_SnakeModel):
    """Body of ``POST /rule/get`` and ``POST /rule/delete``."""

    merchant_id: str = Field(min_length=1, max_length=128)
    algorithm: Literal["successRate", "elimination", "debitRouting"]

    check_merchant_id = field_validator("merchant_id")(_identifier)


# --------------------------------------------------------------------------- parsing


class BadInput(ValueError):
    """A body that could not be parsed or validated; ``errors`` is field -> message."""

    def __init__(self, message: str, errors: list[dict[str, str]], syntax: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors
        self.syntax = syntax


_M = TypeVar("_M", bound=BaseModel)


def parse_model(model: type[_M], data: Any) -> _M:
    """Validate ``data`` (never echoing input values: they may hold card data).

    Any key or string anywhere in ``data`` that no database can store (NUL and other control
    characters, lone surrogates; see :func:`~apos.core.events.refuse_unstorable`) is refused
    first, ignored fields included, as ``/v1/events`` refuses it.
    """
    path = unstorable_path(data)
    if path is not None:
        field = redact_card_numbers(path)
        raise BadInput(
            f"{field or 'body'}: {UNSTORABLE_REFUSED}",
            [{"field": field, "message": UNSTORABLE_REFUSED}],
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Masked: an unknown field's name is input too, and may be a card number.
        errors = [
            {
                "field": redact_card_numbers(".".join(str(p) for p in err["loc"])),
                "message": redact_card_numbers(err["msg"]),
            }
            for err in exc.errors(include_input=False, include_url=False)
        ]
        message = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
        raise BadInput(message, errors) from None


def parse_body(model: type[_M], raw: bytes) -> _M:
    """Decode a JSON body and validate it (:class:`BadInput` names what is wrong)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"body is not valid JSON: {exc}", [], syntax=True) from None
    return parse_model(model, data)


# --------------------------------------------------------------------------- mappings


def payment_methods(method_type: str, method: str) -> tuple[str, str | None]:
    """(APOS ``payment_method``, ``payment_method_type``) from the engine's pair.

    The engine: ``paymentMethodType`` is the category (``CARD``), ``paymentMethod`` the
    sub-type (``CREDIT``). Hyperswitch sends its category in ``paymentMethod`` and a fixed
    ``"UPI"`` in ``paymentMethodType``; that combination is read the Hyperswitch way.
    """
    category = token(method_type) or "unknown"
    sub = token(method)
    if category == "upi" and sub in HYPERSWITCH_CATEGORIES and sub != "upi":
        return sub, None
    return category, sub


def minor_units(amount: float, currency: str) -> int:
    """The engine's amount (major units, a float) in APOS minor units."""
    return round(amount * math.pow(10, CURRENCY_EXPONENTS.get(currency, 2)))


def event_id_for(body: UpdateGatewayScoreRequest, connector: str) -> str:
    """A deterministic event id: the same update sent twice is one event."""
    enforced = "1" if body.enforce_dynamic_routing_failure else "0"
    key = "\x1f".join((body.merchant_id, body.payment_id, connector, body.status, enforced))
    digest = hashlib.sha256(key.encode()).hexdigest()[:40]
    if contains_card_number(digest):
        # About 1 digest in 100 has a Luhn-valid run of 12+ decimal digits, which the event
        # would be refused for; in groups of 8 it cannot (the others keep their old ids).
        return "de_" + "_".join(digest[i : i + 8] for i in range(0, 40, 8))
    return "de_" + digest


def outcome_of(body: UpdateGatewayScoreRequest) -> tuple[PaymentStatus, str | None]:
    """The APOS status and error code of the engine status (see ``STATUS_MAP``)."""
    if body.enforce_dynamic_routing_failure:
        return PaymentStatus.FAILED, ENFORCED_FAILURE_CODE
    status = STATUS_MAP[body.status]
    return status, body.status.lower() if status is PaymentStatus.FAILED else None


def elimination_decider_input(data: dict[str, Any]) -> str:
    """The engine's ``GatewaySuccessRateBasedRoutingInput`` for an elimination threshold:
    where the engine keeps the elimination rule (the merchant's decider input)."""
    document: dict[str, Any] = {
        "gatewayWiseInputs": None,
        "defaultEliminationThreshold": data["threshold"],
        "defaultEliminationLevel": "PAYMENT_METHOD",
        "defaultSelectionLevel": None,
        "enabledPaymentMethodTypes": [],
        "eliminationV2SuccessRateInputs": None,
        "globalGatewayWiseInputs": None,
        "defaultGlobalEliminationThreshold": None,
        "defaultGlobalEliminationMaxCountThreshold": None,
        "defaultGlobalEliminationLevel": None,
        "defaultGlobalSelectionMaxCountThreshold": None,
        "selectionTransactionCountThreshold": None,
        "defaultGlobalSoftTxnResetCount": None,
        "defaultGatewayLevelEliminationThreshold": None,
        "defaultEliminationV2SuccessRate": None,
    }
    if "txnLatency" in data:
        document["txnLatency"] = data["txnLatency"]
    return json.dumps(document, separators=(",", ":"))


def elimination_from_decider_input(value: str | None) -> dict[str, Any] | None:
    """The elimination rule held in a decider input, if there is one."""
    if not value:
        return None
    try:
        document = json.loads(value)
        threshold = float(document["defaultEliminationThreshold"])
    except (ValueError, KeyError, TypeError):
        return None
    data: dict[str, Any] = {"threshold": threshold}
    if "txnLatency" in document:
        data["txnLatency"] = document["txnLatency"]
    return data


def rule_data(envelope: RuleConfigEnvelope) -> dict[str, Any]:
    """Validate ``config.data`` for its type; the normalised form that is stored and echoed."""
    model = RULE_DATA[envelope.type]
    data = parse_model(model, envelope.data)
    normalised = data.model_dump(by_alias=True, exclude_unset=True, mode="json")
    # Stored, audited and echoed: no card number in any name or value (gateway names...).
    path = card_number_path(normalised)
    if path is not None:
        raise BadInput(
            f"{path}: {CARD_NUMBER_REFUSED}", [{"field": path, "message": CARD_NUMBER_REFUSED}]
        )
    path = unstorable_path(normalised)  # a whole float read into an integer beyond 64 bits
    if path is not None:
        message = "must be an integer of at most 64 bits"
        raise BadInput(f"{path}: {message}", [{"field": path, "message": message}])
    return normalised


# --------------------------------------------------------------------------- runtime state

_UNSYNCED: Final = object()


@dataclass(slots=True)
class _MerchantEntry:
    loaded_at: float
    config: MerchantRoutingConfig | None
    desired: PolicyConfig
    applied: object = _UNSYNCED  # the engine's override object last seen in sync


def desired_policy(base: PolicyConfig, success_rate: dict[str, Any] | None) -> PolicyConfig:
    """The merchant's APOS policy once its ``successRate`` rule is applied to ``base``.

    ``defaultHedgingPercent`` is the engine's exploration share: epsilon-greedy with that
    probability. Without it the merchant keeps its learning policy (Thompson sampling when
    it had only rules). Without a rule the merchant keeps ``base``.
    """
    if success_rate is None:
        return base
    hedging = success_rate.get("defaultHedgingPercent")
    if hedging is not None:
        return base.model_copy(update={"policy": "greedy", "epsilon": float(hedging) / 100.0})
    if base.policy == "rules":
        return base.model_copy(update={"policy": "thompson"})
    return base


class DecisionEngineCompat:
    """Per-app state of the compatibility API: its store, a short-lived cache of merchant
    configurations, and the decide-time context of recent payments."""

    def __init__(self, services: Services) -> None:
        self.store = RoutingConfigStore(services.store.engine)
        # The operator's routing configuration, before any merchant rule of ours.
        self.base = load_engine_config(services.settings)
        self._merchants: dict[str, _MerchantEntry] = {}
        self._contexts: OrderedDict[tuple[str, str], tuple[datetime, dict[str, Any]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        self._saves = 0

    # Merchant configurations ----------------------------------------------------------

    def cached(self, merchant_id: str) -> _MerchantEntry | None:
        """The cached entry if fresh (other instances' changes show within the TTL)."""
        entry = self._merchants.get(merchant_id)
        if entry is not None and time.monotonic() - entry.loaded_at < MERCHANT_CACHE_TTL_S:
            return entry
        return None

    def load(self, merchant_id: str) -> _MerchantEntry:
        """Read the merchant's configuration from the database (blocking) and cache it."""
        config = self.store.load_merchant(merchant_id)
        rules = config.rules if config is not None else {}
        entry = _MerchantEntry(
            loaded_at=time.monotonic(),
            config=config,
            desired=desired_policy(self.base.policy_for(merchant_id), rules.get("successRate")),
        )
        with self._lock:
            if len(self._merchants) > 100_000:
                self._merchants.clear()
            self._merchants[merchant_id] = entry
        return entry

    async def entry(self, merchant_id: str) -> _MerchantEntry:
        cached = self.cached(merchant_id)
        if cached is not None:
            return cached
        return await run_in_threadpool(self.load, merchant_id)

    @staticmethod
    def in_sync(routing: RoutingService, merchant_id: str, entry: _MerchantEntry) -> bool:
        """Whether the engine runs the merchant's policy (an identity check: hot path)."""
        return routing.engine.config.merchants.get(merchant_id) is entry.applied

    @staticmethod
    def sync(routing: RoutingService, merchant_id: str, entry: _MerchantEntry) -> None:
        """Give the engine the merchant's policy (blocking: may rebuild the engine's state)."""
        with routing.lock:
            engine = routing.engine
            config = engine.config
            current = config.merchants.get(merchant_id)
            desired = entry.desired
            if current == desired or (current is None and desired == config.default):
                entry.applied = current
                return
            merchants = dict(config.merchants)
            merchants[merchant_id] = desired
            # Engine.reconfigure keeps everything learnt; it is not cheap, but runs only when
            # a merchant's rule changes or a process first routes for it.
            engine.reconfigure(config.model_copy(update={"merchants": merchants}))
            entry.applied = desired
        log.info("merchant policy applied", merchant_id=merchant_id, policy=desired.policy)

    async def ensure_policy(
        self, routing: RoutingService, merchant_id: str, entry: _MerchantEntry
    ) -> None:
        if not self.in_sync(routing, merchant_id, entry):
            await run_in_threadpool(self.sync, routing, merchant_id, entry)

    async def refresh(self, routing: RoutingService, merchant_id: str) -> None:
        """After a configuration change here: reload it and apply it to the engine now."""
        entry = await run_in_threadpool(self.load, merchant_id)
        await self.ensure_policy(routing, merchant_id, entry)

    # Decide-time payment contexts -----------------------------------------------------

    def remember(self, merchant_id: str, payment_id: str, context: dict[str, Any]) -> datetime:
        now = datetime.now(UTC)
        with self._lock:
            key = (merchant_id, payment_id)
            self._contexts[key] = (now, context)
            self._contexts.move_to_end(key)
            while len(self._contexts) > CONTEXT_CACHE_SIZE:
                self._contexts.popitem(last=False)
        return now

    def recall(self, merchant_id: str, payment_id: str) -> dict[str, Any] | None:
        with self._lock:
            hit = self._contexts.get((merchant_id, payment_id))
        if hit is None or datetime.now(UTC) - hit[0] > CONTEXT_TTL:
            return None
        return hit[1]

    def persist(
        self, merchant_id: str, payment_id: str, context: dict[str, Any], at: datetime
    ) -> None:
        """Write a context (runs after the response is sent); purge old ones now and then."""
        try:
            self.store.save_payment_context(merchant_id, payment_id, context, at)
            self._saves += 1
            if self._saves % CONTEXT_PURGE_EVERY == 1:
                self.store.purge_payment_contexts(datetime.now(UTC) - CONTEXT_TTL)
        except Exception:
            # The same instance still has it in memory; another one would answer
            # GATEWAY_SCORING_DATA_NOT_FOUND for this payment, as the engine does.
            log.exception("could not save a decide-gateway context", payment_id=payment_id)

    def load_context(self, merchant_id: str, payment_id: str) -> dict[str, Any] | None:
        return self.store.load_payment_context(
            merchant_id, payment_id, datetime.now(UTC) - CONTEXT_TTL
        )
