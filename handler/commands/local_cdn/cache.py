"""The edge cache: what a cache key holds, how long a response stays, and the store itself.

Rules mirrored from AWS's CloudFront Developer Guide: "Control the cache key with a policy"
(only the query strings, headers and cookies the policy names; the ``Accept-Encoding``
normalisation of "Cache compressed objects"), "Manage how long content stays in the cache
(expiration)" (min/default/max TTL against ``Cache-Control`` and ``Expires``), "How CloudFront
processes HTTP 4xx and 5xx status codes from your origin" and "Control how long CloudFront
caches errors" (error caching minimum TTL, 10 s by default).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from handler.commands.local_cdn.http import Pairs, Response, ViewerRequest, get
from handler.commands.local_cdn.policies import CachePolicy

ERROR_CACHING_MIN_TTL = 10
ALWAYS_CACHED_ERRORS = frozenset({404, 405, 410, 414, 500, 501, 502, 503, 504})
ERRORS_CACHED_WITH_MAX_AGE = frozenset({400, 403, 412, 415})
ERRORS_RESPECTING_NO_STORE = frozenset({404, 410, 414, 501})
CACHEABLE = frozenset({200, 203, 204, 300, 301, 302, 303, 307, 308})
NOT_STORED = ("no-store", "no-cache", "private")
CacheKey = tuple[object, ...]


def cache_control(headers: Pairs) -> dict[str, str | None]:
    """The response's ``Cache-Control`` directives, lower-cased, values unquoted."""
    directives: dict[str, str | None] = {}
    for part in (get(headers, "cache-control") or "").split(","):
        name, sep, value = part.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip('"') if sep else None
    return directives


def _seconds(value: str | None) -> int | None:
    try:
        return max(int(value or ""), 0)
    except ValueError:
        return None


def header_seconds(headers: Pairs, now: float) -> int | None:
    """Freshness the origin asked for: ``s-maxage``, else ``max-age``, else ``Expires``."""
    directives = cache_control(headers)
    for name in ("s-maxage", "max-age"):
        seconds = _seconds(directives.get(name))
        if seconds is not None:
            return seconds
    expires = get(headers, "expires")
    if expires is None:
        return None
    try:
        at = parsedate_to_datetime(expires).timestamp()
    except (TypeError, ValueError):
        return 0  # an invalid date means already expired
    date = get(headers, "date")
    try:
        base = parsedate_to_datetime(date).timestamp() if date else now
    except (TypeError, ValueError):
        base = now
    return max(int(at - base), 0)


def object_ttl(policy: CachePolicy, headers: Pairs, now: float) -> int:
    """Seconds a 2xx/3xx response stays fresh (the table in "Expiration")."""
    if any(name in cache_control(headers) for name in NOT_STORED):
        return policy.min_ttl
    seconds = header_seconds(headers, now)
    if seconds is None:
        return max(policy.min_ttl, policy.default_ttl)
    return min(max(seconds, policy.min_ttl), policy.max_ttl)


def error_ttl(status: int, headers: Pairs, policy: CachePolicy, minimum: int, now: float) -> int:
    """Seconds an error stays cached: at least the error caching minimum TTL."""
    directives = cache_control(headers)
    max_age = any(_seconds(directives.get(n)) is not None for n in ("s-maxage", "max-age"))
    if status in ERRORS_CACHED_WITH_MAX_AGE and not max_age:
        return 0
    if status not in ALWAYS_CACHED_ERRORS | ERRORS_CACHED_WITH_MAX_AGE:
        return 0
    if status in ERRORS_RESPECTING_NO_STORE and any(n in directives for n in NOT_STORED):
        return 0
    seconds = header_seconds(headers, now)
    return max(minimum, min(seconds, policy.max_ttl) if seconds is not None else 0)


def response_ttl(
    response: Response, policy: CachePolicy, error_minimums: Mapping[int, int], now: float
) -> int:
    """Seconds to keep ``response`` (0: not stored)."""
    status = response.status
    if status >= 400:
        minimum = error_minimums.get(status, ERROR_CACHING_MIN_TTL)
        return error_ttl(status, response.headers, policy, minimum, now)
    if status not in CACHEABLE:
        return 0
    if status in (307, 308) and response.header("cache-control") is None:
        return 0  # "How CloudFront processes HTTP 3xx status codes from your origin"
    if (response.header("vary") or "").strip() == "*" and policy.min_ttl == 0:
        return 0  # "Content negotiation": cached, but every request goes to the origin
    return object_ttl(policy, response.headers, now)


def _tokens(accept_encoding: str | None) -> set[str]:
    return {t.split(";")[0].strip().lower() for t in (accept_encoding or "").split(",")}


def normalized_accept_encoding(policy: CachePolicy, accept_encoding: str | None) -> str | None:
    """What "Cache compressed objects" forwards: ``br,gzip``, ``br``, ``gzip`` or ``identity``;
    ``None`` when the policy leaves ``Accept-Encoding`` an ordinary header."""
    if not (policy.gzip or policy.brotli):
        return None
    tokens = _tokens(accept_encoding)
    codings = [c for c, on in (("br", policy.brotli), ("gzip", policy.gzip)) if on and c in tokens]
    return ",".join(codings) or "identity"


def edge_coding(policy: CachePolicy, accept_encoding: str | None) -> str:
    """The coding edge compression would use for this viewer ("Serve compressed files")."""
    tokens = _tokens(accept_encoding)
    if policy.brotli and "br" in tokens:
        return "br"
    return "gzip" if "gzip" in tokens else "identity"


def cache_key(
    policy: CachePolicy,
    request: ViewerRequest,
    cloudfront_headers: Mapping[str, str],
    coding: str,
) -> CacheKey:
    """Only what the policy names; query pairs sorted, so their order does not split entries."""
    query = sorted((n, v) for n, v in request.query if policy.query.includes(n))
    names = sorted({n for n, _ in request.headers if policy.headers.includes(n)})
    headers = [(n, get(request.headers, n) or "") for n in names]
    own = sorted((n, v) for n, v in cloudfront_headers.items() if n in policy.cloudfront_headers)
    cookies = sorted((n, v) for n, v in request.cookies if policy.cookies.includes(n))
    encoding = normalized_accept_encoding(policy, request.header("accept-encoding"))
    return (
        request.method,
        request.uri,
        tuple(query),
        tuple(headers + own),
        tuple(cookies),
        encoding if encoding != "identity" else None,
        coding,
    )


@dataclass(frozen=True)
class Entry:
    response: Response
    stored_at: float
    expires_at: float

    def fresh(self, now: float) -> bool:
        return now < self.expires_at

    def age(self, now: float) -> int:
        return max(int(now - self.stored_at), 0)


class EdgeCache:
    """In-memory, least recently used entries evicted past ``max_bytes``; expired entries stay
    until then, so CloudFront can revalidate them with the origin."""

    def __init__(
        self, max_bytes: int = 512 * 1024 * 1024, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self._entries: OrderedDict[CacheKey, Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: CacheKey, response: Response, ttl: float) -> Entry:
        now = self.clock()
        entry = Entry(response, now, now + ttl)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old.response.body)
            self._entries[key] = entry
            self._bytes += len(response.body)
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted.response.body)
        return entry

    def invalidate(self, matches: Callable[[CacheKey], bool]) -> int:
        """Remove every entry whose key ``matches`` (a CloudFront invalidation): the next
        request for it goes to the origin. How many were removed."""
        with self._lock:
            gone = [key for key in self._entries if matches(key)]
            for key in gone:
                self._bytes -= len(self._entries.pop(key).response.body)
        return len(gone)

    def __len__(self) -> int:
        return len(self._entries)
