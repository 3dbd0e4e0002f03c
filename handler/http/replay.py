"""Recent HITs, replayed before the route runs (``next-image serve`` only: on Lambda, CloudFront
answers repeats).

The route keeps each 200 HIT it sends, headers and body as sent; a repeat of the same request
(path, query, ``Accept``; no ``If-None-Match``) within ``REPLAY_SECONDS``, and while the variant
stays fresh, is sent again by ``ImageFront`` without validation, lookups or headers work, and its
record still goes to the observer (``/metrics``). What is kept, and what never is:
docs/service.md, "Hits"."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import Scope

from handler.model import RequestRecord
from handler.stores.byte_lru import ByteLRU

# How long a kept answer is sent without asking the store again: a pointer refreshed by another
# worker or host is seen that soon (``next-image purge`` waits this long too).
REPLAY_SECONDS = 1.0
REPLAY_MAX_BYTES = 32_000_000  # of bodies, per process (mostly the hot tier's objects, not copies)
ENTRY_OVERHEAD = 2_000  # the headers, the record and the index entry, charged per answer

# The answer depends on the path, the query and Accept alone (the config is fixed per process).
Key = tuple[str, bytes, bytes | None]


@dataclass(frozen=True)
class ReplayedAnswer:
    """A 200 HIT as sent: Starlette's raw headers (``Content-Length`` included) and the body."""

    headers: list[tuple[bytes, bytes]]
    body: bytes
    record: RequestRecord  # the route's record of it, less its timings


def _charged(key: Key, answer: ReplayedAnswer) -> int:
    return ENTRY_OVERHEAD + len(key[1]) + len(key[2] or b"") + len(answer.body)


class RecentHits:
    """The kept answers, least recently used out first: the route fills it, ``ImageFront`` sends
    from it."""

    def __init__(
        self,
        max_bytes: int = REPLAY_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._answers: ByteLRU[Key, ReplayedAnswer] = ByteLRU(max_bytes, _charged, clock)

    def keep(self, scope: Scope, answer: ReplayedAnswer, fresh_for: float) -> None:
        """Keep the answer the route just sent for this request, while it stays fresh."""
        key = request_key(scope)
        if key is not None and fresh_for > 0:
            self._answers.put(key, answer, min(REPLAY_SECONDS, fresh_for))

    def find(self, scope: Scope) -> ReplayedAnswer | None:
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
