"""API keys, roles and merchant scope.

A key looks like ``apos_key_<12 hex>_<secret>``. The ``key_<12 hex>`` part is its public id
(shown in listings and audit lines); only the SHA-256 of the whole key is stored, so a leaked
database does not leak usable keys. SHA-256 rather than a slow password hash is deliberate:
keys carry 256 bits of randomness, so brute force is not the threat, and verification sits
on the routing hot path.

Roles are ordered: ``viewer`` (read) < ``operator`` (send events, route, approve actions)
< ``admin`` (keys, configuration). A key may be scoped to one merchant: then every read is
filtered to that merchant and every write for another merchant is refused.

Configuration is whatever decides how live traffic is routed or who may act: experiments,
the decision-engine merchant accounts and rules, keys. Changing it is an admin's, never an
operator's: operator keys sit in the payment path (the switch's servers), the most widely
deployed keys, and a leaked one must not be able to redirect traffic (``docs/api.md``).

Verified keys are cached for ``cache_ttl`` seconds so a request does not hit the database;
a revoked key therefore stops working within that time (default 5 s, documented in the API).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from apos.adapters.ports import ApiKeyRecord, Store
from apos.core.iso import redact_card_numbers
from apos.service.errors import ApiError


class Role(IntEnum):
    """What a key may do; a higher role may do everything a lower one may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown role {name!r}; use viewer, operator or admin") from None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id, role and merchant scope (``None``: every merchant)."""

    key_id: str
    role: Role
    merchant_id: str | None

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"

    def merchant_filter(self, requested: str | None) -> str | None:
        """The merchant a read may see: the scope wins; asking for another one is refused."""
        if self.merchant_id is None:
            return requested
        if requested is not None and requested != self.merchant_id:
            raise forbidden_merchant(requested)
        return self.merchant_id

    def may_write(self, merchant_id: str) -> bool:
        return self.merchant_id is None or self.merchant_id == merchant_id


def forbidden_merchant(merchant_id: str) -> ApiError:
    # Often a query parameter, not validated: masked, never echoed as sent.
    shown = redact_card_numbers(merchant_id)
    return ApiError(403, "forbidden_merchant", f"this key may not access merchant {shown!r}")


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A newly created key: ``token`` is shown once and never stored."""

    record: ApiKeyRecord
    token: str


def issue_key(name: str, role: Role, merchant_id: str | None, now: datetime) -> IssuedKey:
    """Create a key (the caller stores ``record`` and shows ``token`` once)."""
    key_id = f"key_{secrets.token_hex(6)}"
    token = f"apos_{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKeyRecord(
        id=key_id,
        name=name,
        role=role.name.lower(),
        merchant_id=merchant_id,
        key_hash=hash_key(token),
        created_at=now,
    )
    return IssuedKey(record=record, token=token)


def _key_id_of(token: str) -> str | None:
    # apos_key_<hex>_<secret>: the id is the 2nd and 3rd underscore-separated parts.
    parts = token.split("_", 3)
    if len(parts) != 4 or parts[0] != "apos" or parts[1] != "key":
        return None
    return f"key_{parts[2]}"


class KeyVerifier:
    """Checks presented tokens against the store, with a short positive/negative cache."""

    def __init__(self, store: Store, cache_ttl: float = 5.0) -> None:
        self._store = store
        self._ttl = cache_ttl
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()
        self._touched: dict[str, float] = {}

    def cached(self, token: str) -> tuple[bool, Principal | None]:
        """``(True, principal-or-None)`` when the cache answers, ``(False, None)`` if not."""
        hit = self._cache.get(hash_key(token))
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def verify(self, token: str) -> Principal | None:
        digest = hash_key(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = self._lookup(token, digest)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, principal)
        return principal

    def forget(self) -> None:
        """Drop the cache (after a revoke in this process)."""
        with self._lock:
            self._cache.clear()

    def _lookup(self, token: str, digest: str) -> Principal | None:
        key_id = _key_id_of(token)
        if key_id is None:
            return None
        record = self._store.get_api_key(key_id)
        if record is None or record.revoked_at is not None:
            return None
        if not hmac.compare_digest(record.key_hash, digest):
            return None
        # last_used_at is informative; write it at most once a minute per key.
        wall = time.monotonic()
        if wall - self._touched.get(key_id, -1e9) > 60:
            self._touched[key_id] = wall
            self._store.touch_api_key(key_id, datetime.now(UTC))
        return Principal(
            key_id=record.id, role=Role.parse(record.role), merchant_id=record.merchant_id
        )


def token_in_headers(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key from ``Authorization: Bearer …``, ``X-API-Key`` or ``api-key`` (raw ASGI
    headers, lower-case names): the first ``Authorization`` header if it is a bearer token,
    else the first ``X-API-Key``, else the first ``api-key``."""
    x_api_key = api_key = authorization = None
    for name, value in headers:
        if name == b"authorization":
            if authorization is None:  # only the first one counts
                authorization = value.decode("latin-1")
        elif name == b"x-api-key" and x_api_key is None:
            x_api_key = value.decode("latin-1")
        elif name == b"api-key" and api_key is None:
            api_key = value.decode("latin-1")
    if authorization is not None and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return x_api_key or api_key or None


def presented_token(request: Request) -> str | None:
    """:func:`token_in_headers` of a request."""
    return token_in_headers(request.scope["headers"])


async def authenticate(verifier: KeyVerifier, token: str | None, role: Role) -> Principal:
    """The principal of ``token`` if it holds at least ``role``; raises :class:`ApiError`.

    A cached key is checked on the event loop (microseconds); only a cache miss reads the
    store, in the thread pool.
    """
    if not token:
        raise ApiError(
            401,
            "unauthorized",
            "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    hit, principal = verifier.cached(token)
    if not hit:
        principal = await run_in_threadpool(verifier.verify, token)
    if principal is None:
        raise ApiError(
            401,
            "invalid_api_key",
            "API key is unknown or revoked",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if principal.role < role:
        raise ApiError(
            403,
            "insufficient_role",
            f"this key has role {principal.role.name.lower()}; {role.name.lower()} is required",
        )
    return principal


def require(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """FastAPI dependency: the caller must present a valid key of at least ``role``.

    ``async`` so that FastAPI does not hop to its thread pool per request.
    """

    async def dependency(request: Request) -> Principal:
        verifier: KeyVerifier = request.app.state.services.keys
        principal = await authenticate(verifier, presented_token(request), role)
        request.state.principal = principal
        return principal

    return dependency
