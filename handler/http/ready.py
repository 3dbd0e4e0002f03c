"""Ready-made answers to repeated cache hits, sent before the route runs.

A hit through the route costs tens of microseconds of Python once its store lookups are in
memory (``handler.http.app.ImageFront``): the request's remembered validation, the lookups, the
response headers, the metrics. While a variant is fresh, a repeat of the same request (same
path, query and ``Accept``) gets the same answer, so the route keeps each HIT it sends, headers
and body ready, and the front sends it again without any of that work (``next-image serve``
only: on Lambda, CloudFront answers repeats).

What is kept, and for how long:

- only a 200 HIT of a GET or HEAD: never a MISS, a STALE answer, a timeout's fallback, a first
  view's WebP, a 304 or an error. A request with ``If-None-Match`` goes the whole way, where the
  304 is decided;
- ``READY_SECONDS`` at most, and never past the variant's freshness: a pointer refreshed by
  another worker or host is seen that soon (the filesystem store's hot tier sees it at the next
  request that is not a ready repeat), and a stale one is revalidated by the route as before;
- ``max_bytes`` of bodies at most, least recently used first out (the bodies are mostly the
  hot tier's own objects, not copies).

The observer gets a record for every ready answer too, so ``/metrics`` counts these hits."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import Scope

from handler.model import RequestRecord
from handler.stores.byte_lru import ByteLRU

READY_SECONDS = 1.0  # how long a kept answer is sent without asking the store again
READY_MAX_BYTES = 32_000_000  # of bodies, per process
ENTRY_OVERHEAD = 2_000  # the headers, the record and the index entry, charged per answer

# The answer depends on the path, the query and Accept alone (the config is fixed per process).
Key = tuple[str, bytes, bytes | None]


@dataclass(frozen=True)
class ReadyAnswer:
    """A 200 HIT as sent: Starlette's raw headers (``Content-Length`` included) and the body."""

    headers: list[tuple[bytes, bytes]]
    body: bytes
    record: RequestRecord  # the route's record of it, less its timings


def _charged(key: Key, answer: ReadyAnswer) -> int:
    return ENTRY_OVERHEAD + len(key[1]) + len(key[2] or b"") + len(answer.body)


class ReadyAnswers:
    """The kept answers, for the route to fill and ``ReadyHits`` to send."""

    def __init__(
        self,
        max_bytes: int = READY_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._answers: ByteLRU[Key, ReadyAnswer] = ByteLRU(max_bytes, _charged, clock)

    def keep(self, scope: Scope, answer: ReadyAnswer, fresh_for: float) -> None:
        """Keep the answer the route just sent for this request, while it stays fresh."""
        key = request_key(scope)
        if key is not None and fresh_for > 0:
            self._answers.put(key, answer, min(READY_SECONDS, fresh_for))

    def find(self, scope: Scope) -> ReadyAnswer | None:
        key = request_key(scope)
        return None if key is None else self._answers.get(key)


def request_key(scope: Scope) -> Key | None:
    """What the answer to an HTTP GET or HEAD depends on; None for a request that must go the
    whole way (another method, or an ``If-None-Match`` to compare)."""
    if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
        return None
    accept = None  # the first, as the route reads it
    for name, value in scope["headers"]:
        if name == b"accept" and accept is None:
            accept = value
        elif name == b"if-none-match":
            return None
    return scope["path"], scope["query_string"], accept
