"""Variants, pointers and sources in Redis (or Valkey): one cache shared by every process and host.

The S3 store's keys and meaning (docs/architecture.md, "Store records"), plus ``image-locks/`` for
cross-process single flight (``Locking``). Variants and sources are written ``SET NX EX
variant_ttl``; a pointer lives ``POINTER_GRACE`` past its own expiry, never longer than
``variant_ttl`` plus that grace. Calls fail fast and are never retried here: ``GuardedStore``
bounds each one, so a Redis that is down or hung costs a transform, never the request."""

from __future__ import annotations

import asyncio
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from handler.model import Pointer, Variant
from handler.stores.records import decode_pointer, decode_variant, encode_pointer, encode_variant
from handler.stores.s3 import KeyLayout

LOCKS = "_next/image-locks/"
DEFAULT_VARIANT_TTL = 30 * 24 * 3600  # seconds: the S3 lifecycle's 30 days
POINTER_GRACE = 24 * 3600  # seconds a pointer outlives its expiry, for STALE and revalidation
DELETE_BATCH = 1000  # keys per DEL when purging

CONNECT_TIMEOUT = 1.0  # seconds; a Redis next to the optimizer connects in milliseconds
READ_TIMEOUT = 1.0  # seconds waiting on the socket; a few-MB value streams well within it
HEALTH_CHECK_INTERVAL = 30  # seconds idle before a pooled connection is PINGed before use
# Both clients' (the blocking one, and the event loop's): failures are not retried (the
# GuardedStore counts them and the request goes on without the store).
CLIENT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": CONNECT_TIMEOUT,
    "socket_timeout": READ_TIMEOUT,
    "health_check_interval": HEALTH_CHECK_INTERVAL,
    "retry_on_timeout": False,
}

# Deletes the lock only if it still holds our token: one that expired and was taken by another
# process is never released by its old holder (the pattern redis-py's Lock uses).
_UNLOCK = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    return redis.call("del", KEYS[1])
end
return 0
"""

# Guards creating a client. Replaced in a forked child, where a copy held by a thread of the
# parent would never be released.
_connect_lock = threading.Lock()


def _new_connect_lock() -> None:
    global _connect_lock
    _connect_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_connect_lock)


def _check_url(url: str) -> None:
    """A malformed URL fails at start-up, rather than as a cache miss on every request."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("the Redis URL must start with redis://, rediss:// or unix://")
    _ = parts.port  # raises ValueError if the port is not a number in range


class RedisStore(KeyLayout):
    """``url``: ``redis://[[user]:password@]host:port/db``, ``rediss://`` for TLS, or ``unix://``.

    The connection pool is created on first use in each process: uvicorn forks its workers, and
    connections shared across a fork would interleave the processes' replies.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "",
        *,
        variant_ttl: int = DEFAULT_VARIANT_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if variant_ttl < 1:
            raise ValueError(f"the variant TTL must be at least 1 second, got {variant_ttl}")
        _check_url(url)
        self.url = url
        self.prefix = prefix
        self.variant_ttl = variant_ttl
        self._clock = clock
        self._owned: tuple[int, redis.Redis] | None = None  # (pid, client)
        # The asyncio client of hits, with the event loop it belongs to (and the pid).
        self._awaited: tuple[int, asyncio.AbstractEventLoop, redis.asyncio.Redis] | None = None

    @property
    def client(self) -> redis.Redis:
        """This process's client (and pool); a new one after a fork."""
        pid = os.getpid()
        owned = self._owned
        if owned is None or owned[0] != pid:
            with _connect_lock:
                owned = self._owned
                if owned is None or owned[0] != pid:
                    owned = (pid, self._connect())
                    self._owned = owned
        return owned[1]

    def awaited_client(self) -> redis.asyncio.Redis:
        """This process's and this event loop's asyncio client; a new one after a fork or on
        another loop (each test client runs its own)."""
        pid, loop = os.getpid(), asyncio.get_running_loop()
        owned = self._awaited
        if owned is None or owned[0] != pid or owned[1] is not loop:
            client = redis.asyncio.Redis.from_url(
                self.url, retry=AsyncRetry(NoBackoff(), 0), **CLIENT_OPTIONS
            )
            owned = self._awaited = (pid, loop, client)
        return owned[2]

    async def await_pointer(self, key: str) -> Pointer | None:
        """``get_pointer`` on the event loop: a hit's one round trip, with no thread hop."""
        data = await self.awaited_client().get(self.pointer_redis_key(key))
        return decode_pointer(data) if isinstance(data, bytes) else None

    async def await_variant(self, key: str) -> Variant | None:
        data = await self.awaited_client().get(self.variant_redis_key(key))
        return decode_variant(data) if isinstance(data, bytes) else None

    def _connect(self) -> redis.Redis:
        """No connection yet (the pool connects on first command); failures are not retried."""
        return redis.Redis.from_url(self.url, retry=Retry(NoBackoff(), 0), **CLIENT_OPTIONS)

    variant_redis_key = KeyLayout.variant_at
    pointer_redis_key = KeyLayout.pointer_at
    source_redis_key = KeyLayout.source_at

    def lock_redis_key(self, key: str) -> str:
        return f"{self.prefix}{LOCKS}{key}"

    def ping(self) -> None:
        self.client.ping()

    def get_pointer(self, key: str) -> Pointer | None:
        data = self.client.get(self.pointer_redis_key(key))
        return decode_pointer(data) if isinstance(data, bytes) else None

    def put_pointer(self, key: str, pointer: Pointer) -> None:
        remaining = min(pointer.expire_at - self._clock(), self.variant_ttl)
        ttl = max(math.ceil(remaining), 0) + POINTER_GRACE
        self.client.set(self.pointer_redis_key(key), encode_pointer(pointer), ex=ttl)

    def get_variant(self, key: str) -> Variant | None:
        data = self.client.get(self.variant_redis_key(key))
        return decode_variant(data) if isinstance(data, bytes) else None

    def put_variant(self, key: str, variant: Variant) -> None:
        """Returns once Redis holds the key: written now, or already there (same bytes)."""
        data = encode_variant(variant)
        self.client.set(self.variant_redis_key(key), data, nx=True, ex=self.variant_ttl)

    def get_source(self, key: str) -> bytes | None:
        data = self.client.get(self.source_redis_key(key))
        return data if isinstance(data, bytes) and data else None

    def put_source(self, key: str, body: bytes) -> None:
        """Returns once Redis holds the key: written now, or already there (same bytes)."""
        self.client.set(self.source_redis_key(key), body, nx=True, ex=self.variant_ttl)

    def try_lock(self, key: str, ttl_ms: int) -> str | None:
        token = secrets.token_hex(16)
        taken = self.client.set(self.lock_redis_key(key), token, nx=True, px=ttl_ms)
        return token if taken else None

    def unlock(self, key: str, token: str) -> None:
        self.client.eval(_UNLOCK, 1, self.lock_redis_key(key), token)

    def delete_pointers(self, keys: Sequence[str]) -> int:
        """``DEL`` in batches; returns how many were there."""
        names = [self.pointer_redis_key(key) for key in keys]
        removed = 0
        for start in range(0, len(names), DELETE_BATCH):
            removed += int(self.client.delete(*names[start : start + DELETE_BATCH]))
        return removed

    def delete_all_pointers(self) -> int:
        """Every key under the pointers prefix (``SCAN``, so the server is never blocked)."""
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self.pointer_redis_key("")) + "*"
        removed = 0
        batch: list[bytes] = []
        for name in self.client.scan_iter(match=pattern, count=DELETE_BATCH):
            batch.append(name)
            if len(batch) == DELETE_BATCH:
                removed += int(self.client.delete(*batch))
                batch.clear()
        if batch:
            removed += int(self.client.delete(*batch))
        return removed
