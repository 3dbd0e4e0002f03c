"""Ready-made answers to repeated cache hits, sent before FastAPI routes the request.

A hot hit through FastAPI costs about 0.4 ms of Python on one core: its middleware stack and
routing, Next's validation, the store lookups and the response headers. While a variant is
fresh, a repeat of the same request (same path, query and ``Accept``) gets the same answer, so
the route keeps each HIT it sends, headers and body ready, and ``ReadyHits`` sends it again
without any of that work (``next-image serve`` only: on Lambda, CloudFront answers repeats).

What is kept, and for how long:

- only a 200 HIT of a GET or HEAD: never a MISS, a STALE answer, a timeout's fallback, a first
  view's WebP, a 304 or an error. A request with ``If-None-Match`` goes the whole way, where the
  304 is decided;
- ``READY_SECONDS`` at most, and never past the variant's freshness: a pointer refreshed by
  another worker or host is seen that soon, as the filesystem store's hot tier sees it, and a
  stale one is revalidated by the route as before;
- ``max_bytes`` of bodies at most, least recently used first out (the bodies are mostly the
  hot tier's own objects, not copies).

The observer gets a record for every ready answer too, so ``/metrics`` counts these hits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from handler.lru import ByteLRU
from handler.types import RequestRecord

if TYPE_CHECKING:
    from handler.app import Observer

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


class ReadyHits:
    """ASGI middleware: sends a kept answer, or passes the request on to the app."""

    def __init__(self, app: ASGIApp, answers: ReadyAnswers, observer: Observer | None) -> None:
        self.app = app
        self._answers = answers
        self._observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        answer = self._answers.find(scope)
        if answer is None:
            await self.app(scope, receive, send)
            return
        body = b"" if scope["method"] == "HEAD" else answer.body
        await send({"type": "http.response.start", "status": 200, "headers": answer.headers})
        await send({"type": "http.response.body", "body": body})
        if self._observer is not None:
            elapsed = round((time.perf_counter() - started) * 1000, 2)
            record = answer.record | {"stages_ms": {}, "total_ms": elapsed}
            self._observer(Request(scope, receive), record)
