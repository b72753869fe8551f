"""Shared request helpers for the routers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from apos.adapters.ports import AuditEntry
from apos.service.auth import Principal, Role, require
from apos.service.bootstrap import Services

Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]


async def services_of(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per
    # request that cost the routing hot path a third of its throughput.
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(services_of)]


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
