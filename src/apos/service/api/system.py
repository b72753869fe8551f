"""Liveness, readiness, status and Prometheus metrics."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from apos.service.api.deps import ServicesDep, Viewer

router = APIRouter()


@router.get("/health", tags=["system"], summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", tags=["system"], summary="Readiness: database and bus reachable")
async def ready(services: ServicesDep, response: Response) -> dict[str, Any]:
    database = await run_in_threadpool(services.store.ping)
    bus = await run_in_threadpool(services.bus.ping)
    ok = database and bus
    if not ok:
        response.status_code = 503
    return {
        "status": "ready" if ok else "unavailable",
        "checks": {"database": "ok" if database else "down", "bus": "ok" if bus else "down"},
    }


@router.get("/metrics", tags=["system"], summary="Prometheus metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    services.metrics.bus_pending.set(await run_in_threadpool(_pending, services))
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _pending(services: Any) -> int:
    try:
        return int(services.bus.pending_count())
    except Exception:
        return -1


@router.get("/v1/status", tags=["system"], summary="Components, version, counts, autonomy mode")
async def status(services: ServicesDep, principal: Viewer) -> dict[str, Any]:
    merchant = principal.merchant_id

    def gather() -> dict[str, Any]:
        store, bus = services.store, services.bus
        return {
            "database": store.ping(),
            "bus": bus.ping(),
            "events": store.count_events(merchant),
            "dead_letters": store.count_dead_letters(merchant),
            "pending": _pending(services),
        }

    facts = await run_in_threadpool(gather)
    settings = services.settings
    return {
        "version": services.version,
        "uptime_s": round(time.time() - services.started_at, 1),
        "autonomy_mode": settings.autonomy_mode,
        "components": {
            "database": {
                "status": "ok" if facts["database"] else "down",
                "backend": "postgresql" if settings.uses_postgres else "sqlite",
            },
            "event_bus": {
                "status": "ok" if facts["bus"] else "down",
                "backend": "redis_streams" if settings.redis_url else "in_process",
                "stream": settings.event_stream if settings.redis_url else None,
                "pending": facts["pending"],
            },
            "workers": {w.name: w.status for w in services.workers},
        },
        "counts": {"events": facts["events"], "dead_letters": facts["dead_letters"]},
        "merchant_scope": merchant,
    }
