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


@router.get(
    "/ready",
    tags=["system"],
    summary="Readiness: database and bus reachable",
    responses={
        503: {
            "description": "the database or the bus is down (the same body names which)",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
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


@router.get(
    "/metrics",
    tags=["system"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
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
            "outbox": _outbox_backlog(services) if merchant is None else None,
            "anomalies": _open_anomalies(services, merchant),
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
        "anomalies": facts["anomalies"],
        "merchant_scope": merchant,
        **({"learning": _learning(services, facts["outbox"])} if merchant is None else {}),
    }


def _open_anomalies(services: Any, merchant: str | None) -> dict[str, Any] | None:
    """Open (unresolved) anomalies: counts by type and severity, and the newest five; with
    ``detection`` saying whether this instance runs the detectors."""
    if services.anomalies is None:
        return None
    try:
        summary: dict[str, Any] = services.anomalies.open_summary(merchant)
    except Exception:  # the database is down: the status says so in components
        return None
    summary["detection"] = "on" if services.detection is not None else "off"
    return summary


def _outbox_backlog(services: Any) -> int:
    try:
        return int(services.outbox.count())
    except Exception:
        return -1


def _learning(services: Any, outbox: int) -> dict[str, Any]:
    """Evidence that this instance learnt every stored event exactly once (unscoped keys:
    it counts every merchant's events). See docs/api.md, "Learning evidence"."""
    routing = services.routing
    with routing.lock:
        facts = {
            "events_learned": routing.events_learned,
            "outcomes_applied": routing.outcomes_applied,
            "outcomes_digest": f"{routing.outcomes_digest:016x}",
            "stream_position": routing.stream_position,
        }
    publisher = services.publisher
    facts["outbox_backlog"] = outbox
    facts["outbox_relayed"] = publisher.relayed if publisher is not None else 0
    return facts
