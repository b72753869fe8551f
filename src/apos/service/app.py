"""The FastAPI application: ``build_app(settings)`` wires services, middleware and routers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apos import __version__
from apos.core.iso import contains_card_number
from apos.service.api import (
    anomalies,
    decision_engine,
    events,
    keys,
    route_endpoint,
    routing,
    system,
    webhooks,
)
from apos.service.api.deps import storable_query
from apos.service.api.encoding import EncodedBodyGuard
from apos.service.api.route_endpoint import RouteEndpoint
from apos.service.bootstrap import Services, build_services
from apos.service.errors import install_error_handlers
from apos.service.openapi import complete as complete_openapi
from apos.settings import Settings, load_settings


class RequestIdMiddleware:
    """Gives every request an id (or keeps the caller's ``X-Request-ID``), binds it to logs
    and returns it. Plain ASGI rather than BaseHTTPMiddleware: that one costs ~100 µs a
    request, which the routing hot path cannot afford."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:64]
                break
        if request_id and contains_card_number(request_id):
            request_id = None  # replaced, never sent back or logged: it may be a card number
        request_id = request_id or os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], header]
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)


class AposApi(FastAPI):
    """FastAPI, with a few hot paths answered by plain ASGI endpoints before its routing.

    ``fast_paths`` maps a path (below any ``root_path``; a trailing slash is ignored) to such
    an endpoint (see :mod:`apos.service.api.route_endpoint`); every other request goes
    through FastAPI. Middleware added with ``add_middleware`` (CORS, compression, ...) does
    NOT apply to the fast paths: wrap their endpoints in it too, as ``build_app`` does with
    the request-id middleware.
    """

    fast_paths: dict[str, ASGIApp]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            endpoint = self.fast_paths.get(path[:-1] if path.endswith("/") else path)
            if endpoint is not None:
                scope["app"] = self
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def build_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app. With no ``services``, they are built from ``settings`` (or the env)."""
    settings = settings or (services.settings if services else load_settings())
    own_services = services is None
    services = services or build_services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services.start()
        try:
            yield
        finally:
            if own_services:
                services.close()
            else:
                services.stop_workers()

    app = AposApi(
        title="APOS",
        version=__version__,
        summary="Autonomous payment orchestration: learns, routes, detects, heals, explains.",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        dependencies=[Depends(storable_query)],
    )
    app.state.services = services
    # A compressed body is refused (415) before any endpoint, the fast path included.
    route = RequestIdMiddleware(EncodedBodyGuard(RouteEndpoint(services)))
    app.fast_paths = {route_endpoint.PATH: route}
    app.add_middleware(EncodedBodyGuard)
    app.add_middleware(RequestIdMiddleware)  # added last: outermost, so the 415 has an id
    install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    app.include_router(keys.router)
    app.include_router(routing.router)
    app.include_router(decision_engine.router)
    app.include_router(anomalies.router)
    _document_event_schema(app)
    return app


def create_app() -> FastAPI:
    """Factory for ``uvicorn --factory`` (several worker processes): settings from the env."""
    return build_app(load_settings())


def _document_event_schema(app: FastAPI) -> None:
    """Publish ``PaymentEvent`` in the OpenAPI components: the ingest endpoints read raw
    bodies (to accept partial batches), so FastAPI cannot infer the schema itself."""
    from apos.core.events import PaymentEvent
    from apos.service.api.routing import RouteRequest

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            event = PaymentEvent.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(event.pop("$defs", {}))
            components["PaymentEvent"] = event
            route = RouteRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components["RouteRequest"] = route
            route_endpoint.document(schema)
            complete_openapi(schema, app.routes)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
