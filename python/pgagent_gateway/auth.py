"""API keys and rate limits of the gateway.

A key is checked by the database (``pgagent.authenticate_api_key``: a bcrypt hash, about 50 ms
on purpose), so the gateway keeps what it learned for :data:`CACHE_S` seconds, keyed by the
key's SHA-256 (the key itself is never kept): a revoked key is refused at most that long after
``pgagent.revoke_api_key``. Unknown keys are remembered for :data:`NEGATIVE_CACHE_S` seconds so
that guessing costs the database nothing extra. Each key has a token bucket of ``rate_per_min``
requests per minute (refilled continuously, bursts up to one minute's worth).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Callable

#: seconds a successful authentication is reused (s)
CACHE_S = 60.0
#: seconds an unknown key is remembered as unknown (s)
NEGATIVE_CACHE_S = 5.0


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the key, its tenant and the database role it runs as."""

    key_id: int
    tenant_id: str
    tenant: str
    role: str
    rate_per_min: int


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The API key of a request: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


_MISS = object()


class KeyCache:
    """Authentication results by SHA-256 of the key: (Principal or None, expiry in monotonic s).
    :meth:`peek` returns ``MISS`` when the database must be asked; :meth:`put` remembers its
    answer."""

    MISS = _MISS

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[str, tuple[Principal | None, float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def digest(key: str) -> str:
        """The SHA-256 (hex) a key is remembered by."""
        return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()

    def peek(self, key: str) -> Principal | None | object:
        """The cached principal of ``key`` (None: known to be unknown), or ``MISS``."""
        with self._lock:
            hit = self._seen.get(self.digest(key))
        return hit[0] if hit is not None and hit[1] > self._clock() else _MISS

    def put(self, key: str, found: Principal | None) -> None:
        """Remember the database's answer for ``key`` (:data:`CACHE_S` or :data:`NEGATIVE_CACHE_S`)."""
        now = self._clock()
        with self._lock:
            if len(self._seen) > 100_000:   # bounded: keep only what has not expired
                self._seen = {k: v for k, v in self._seen.items() if v[1] > now}
            self._seen[self.digest(key)] = (found, now + (CACHE_S if found is not None else NEGATIVE_CACHE_S))


class RateLimiter:
    """Token buckets per key id: ``rate_per_min`` tokens a minute, at most that many stored."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: Principal) -> float | None:
        """Take one token for ``who``; None when allowed, else the seconds until one is free."""
        rate = who.rate_per_min / 60.0
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(who.key_id, (float(who.rate_per_min), now))
            tokens = min(float(who.rate_per_min), tokens + (now - at) * rate)
            if tokens >= 1.0:
                self._buckets[who.key_id] = (tokens - 1.0, now)
                return None
            self._buckets[who.key_id] = (tokens, now)
            return (1.0 - tokens) / rate
