"""Refuse compressed request bodies: 415 ``unsupported_media_type``, before any endpoint.

APOS reads JSON bodies as sent. A body with ``Content-Encoding: gzip`` (or any coding
other than ``identity``) would otherwise reach a JSON parser as binary, and be answered
400 on one endpoint or kept as a garbled dead letter on another. One plain ASGI layer in
front of every endpoint, the plain-ASGI ``/v1/route`` included, answers them all alike.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from apos.core.events import FieldError
from apos.service.errors import error_json

__all__ = ["EncodedBodyGuard"]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MESSAGE = "compressed request bodies are not supported: send the body with no Content-Encoding"
_ERRORS = [FieldError(field="Content-Encoding", message="only identity is accepted")]


def _encoded(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-encoding":
            codings = [c.strip().lower() for c in value.split(b",")]
            if any(c not in (b"", b"identity") for c in codings):
                return True
    return False


class EncodedBodyGuard:
    """ASGI middleware: a request with a body coding other than ``identity`` gets 415."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        if not _encoded(scope["headers"]):
            await self.app(scope, receive, send)
            return
        # The header's value is not echoed: like any input it could hold a card number.
        request_id = scope.get("state", {}).get("request_id")
        body = error_json("unsupported_media_type", MESSAGE, _ERRORS, request_id)
        await send(
            {
                "type": "http.response.start",
                "status": 415,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"accept-encoding", b"identity"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
