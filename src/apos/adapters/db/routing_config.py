"""Storage of the decision-engine compatibility API: merchant accounts, rule configs and the
decide-time context of recent payments (tables ``de_merchant_accounts``, ``de_rule_configs``,
``de_payment_contexts``; see ``docs/decision-engine-compat.md``).

Every method takes a pooled connection for one short transaction, so the store is safe to
share between threads. Nothing here sits on the routing hot path: merchant configurations
are cached by the service, and payment contexts are written after the response is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from apos.adapters.db.models import de_merchant_accounts, de_payment_contexts, de_rule_configs

__all__ = ["MerchantAccountRecord", "MerchantRoutingConfig", "RoutingConfigStore"]

_accounts = de_merchant_accounts
_rules = de_rule_configs
_contexts = de_payment_contexts


@dataclass(frozen=True, slots=True)
class MerchantAccountRecord:
    """A merchant account of the compatibility API."""

    merchant_id: str
    decider_input: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class MerchantRoutingConfig:
    """A merchant account and every rule configuration it has, keyed by algorithm."""

    account: MerchantAccountRecord
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)


def _account(row: sa.Row[Any]) -> MerchantAccountRecord:
    m = row._mapping
    return MerchantAccountRecord(
        merchant_id=m["merchant_id"],
        decider_input=m["decider_input"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


class RoutingConfigStore:
    """The compatibility API's tables on the store's SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    # Merchant accounts ----------------------------------------------------------------

    def create_merchant(self, merchant_id: str, decider_input: str | None, now: datetime) -> bool:
        """Create the account; False if it exists already."""
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    sa.insert(_accounts).values(
                        merchant_id=merchant_id,
                        decider_input=decider_input,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True

    def get_merchant(self, merchant_id: str) -> MerchantAccountRecord | None:
        with self._engine.connect() as connection:
            row = connection.execute(
                sa.select(_accounts).where(_accounts.c.merchant_id == merchant_id)
            ).first()
        return None if row is None else _account(row)

    def load_merchant(self, merchant_id: str) -> MerchantRoutingConfig | None:
        """The account with all its rule configurations (one read transaction)."""
        with self._engine.connect() as connection:
            row = connection.execute(
                sa.select(_accounts).where(_accounts.c.merchant_id == merchant_id)
            ).first()
            if row is None:
                return None
            rules = connection.execute(
                sa.select(_rules.c.algorithm, _rules.c.config).where(
                    _rules.c.merchant_id == merchant_id
                )
            ).all()
        return MerchantRoutingConfig(
            account=_account(row), rules={r.algorithm: dict(r.config) for r in rules}
        )

    def set_decider_input(self, merchant_id: str, value: str | None, now: datetime) -> bool:
        """Replace the account's decider input; False if there is no such account."""
        with self._engine.begin() as connection:
            updated = connection.execute(
                sa.update(_accounts)
                .where(_accounts.c.merchant_id == merchant_id)
                .values(decider_input=value, updated_at=now)
            ).rowcount
        return bool(updated)

    def delete_merchant(self, merchant_id: str) -> bool:
        """Delete the account and its rule configurations; False if there was none."""
        with self._engine.begin() as connection:
            connection.execute(sa.delete(_rules).where(_rules.c.merchant_id == merchant_id))
            deleted = connection.execute(
                sa.delete(_accounts).where(_accounts.c.merchant_id == merchant_id)
            ).rowcount
        return bool(deleted)

    # Rule configurations --------------------------------------------------------------

    def get_rule(self, merchant_id: str, algorithm: str) -> dict[str, Any] | None:
        with self._engine.connect() as connection:
            config = connection.execute(
                sa.select(_rules.c.config).where(
                    _rules.c.merchant_id == merchant_id, _rules.c.algorithm == algorithm
                )
            ).scalar()
        return None if config is None else dict(config)

    def create_rule(
        self, merchant_id: str, algorithm: str, config: dict[str, Any], now: datetime
    ) -> bool:
        """Store a new configuration; False if the merchant already has one of this kind."""
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    sa.insert(_rules).values(
                        merchant_id=merchant_id,
                        algorithm=algorithm,
                        config=config,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True

    def update_rule(
        self, merchant_id: str, algorithm: str, config: dict[str, Any], now: datetime
    ) -> bool:
        """Replace a configuration; False if there is none to replace."""
        with self._engine.begin() as connection:
            updated = connection.execute(
                sa.update(_rules)
                .where(_rules.c.merchant_id == merchant_id, _rules.c.algorithm == algorithm)
                .values(config=config, updated_at=now)
            ).rowcount
        return bool(updated)

    def delete_rule(self, merchant_id: str, algorithm: str) -> bool:
        """Delete a configuration; False if there was none."""
        with self._engine.begin() as connection:
            deleted = connection.execute(
                sa.delete(_rules).where(
                    _rules.c.merchant_id == merchant_id, _rules.c.algorithm == algorithm
                )
            ).rowcount
        return bool(deleted)

    # Decide-time payment contexts -----------------------------------------------------

    def save_payment_context(
        self, merchant_id: str, payment_id: str, context: dict[str, Any], decided_at: datetime
    ) -> None:
        """Insert or replace the context of a payment (the latest decision wins)."""
        values = {"context": context, "decided_at": decided_at}
        try:  # most payments are decided once: try the insert first
            with self._engine.begin() as connection:
                connection.execute(
                    sa.insert(_contexts).values(
                        merchant_id=merchant_id, payment_id=payment_id, **values
                    )
                )
            return
        except sa.exc.IntegrityError:
            pass
        key = (_contexts.c.merchant_id == merchant_id, _contexts.c.payment_id == payment_id)
        for _ in range(2):  # a concurrent delete or insert of the same key makes a try lose
            try:
                with self._engine.begin() as connection:
                    if connection.execute(
                        sa.update(_contexts).where(*key).values(**values)
                    ).rowcount:
                        return
                    connection.execute(
                        sa.insert(_contexts).values(
                            merchant_id=merchant_id, payment_id=payment_id, **values
                        )
                    )
                    return
            except sa.exc.IntegrityError:
                continue

    def load_payment_context(
        self, merchant_id: str, payment_id: str, since: datetime
    ) -> dict[str, Any] | None:
        """The context saved for the payment at or after ``since``, if any."""
        with self._engine.connect() as connection:
            context = connection.execute(
                sa.select(_contexts.c.context).where(
                    _contexts.c.merchant_id == merchant_id,
                    _contexts.c.payment_id == payment_id,
                    _contexts.c.decided_at >= since,
                )
            ).scalar()
        return None if context is None else dict(context)

    def purge_payment_contexts(self, before: datetime) -> int:
        """Delete contexts saved before ``before``; how many were deleted."""
        with self._engine.begin() as connection:
            return int(
                connection.execute(
                    sa.delete(_contexts).where(_contexts.c.decided_at < before)
                ).rowcount
            )
