"""Shared request helpers for the routers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from apos.adapters.ports import AuditEntry
from apos.core.events import FieldError, refuse_unstorable
from apos.core.iso import redact_card_numbers
from apos.service.auth import Principal, Role, require
from apos.service.bootstrap import Services
from apos.service.errors import ApiError

Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]


async def services_of(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per
    # request that cost the routing hot path a third of its throughput.
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(services_of)]


async def storable_query(request: Request) -> None:
    """Refuse a query parameter no backend can compare against (NUL, other control
    characters, lone surrogates: PostgreSQL fails the whole query on U+0000) with a 422
    naming it, on every endpoint and before any handler reads it. Installed app-wide."""
    for name, value in request.query_params.multi_items():
        for text in (name, value):
            try:
                refuse_unstorable(text)
            except ValueError as exc:
                field = "query." + redact_card_numbers(name).encode("unicode_escape").decode()
                raise ApiError(
                    422,
                    "validation_error",
                    f"invalid query parameter: {field}",
                    [FieldError(field=field, message=str(exc))],
                ) from None


async def audit(
    services: Services,
    principal: Principal,
    action: str,
    target: str,
    merchant_id: str | None,
    details: dict[str, Any],
) -> None:
    """Append one entry to the audit log (in the thread pool: it writes to the store)."""
    entry = AuditEntry(
        actor=principal.actor,
        action=action,
        target=target,
        merchant_id=merchant_id,
        details=details,
    )
    await run_in_threadpool(services.store.append_audit, [entry])
