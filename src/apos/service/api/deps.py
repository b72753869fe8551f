"""Shared request helpers for the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

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
