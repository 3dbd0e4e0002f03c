"""The error type every stage raises; its message is the exact body Next.js would send."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

Category = Literal["validation", "upstream", "timeout", "overload", "pipeline", "store", "internal"]
"""What went wrong, for the log line and the error metrics (the status alone lumps a bad ``w``
and a blocked private address together as a 400):

- ``validation``: the request itself (``url``, ``w``, ``q``, ``Accept``, the configured patterns);
- ``upstream``: the source failed or answered something unusable (its 4xx, a 5xx or bad
  connection as 502, too large, empty, too many redirects, a hop to a private or unlisted host);
- ``timeout``: a 504, upstream or the request's own time budget;
- ``overload``: a 503 from admission control, before any transform started;
- ``pipeline``: the transform refused the bytes it got (not an image, a type not allowed), or
  its child process crashed or went over its memory (503, ``handler/pipeline/isolation.py``);
- ``store``: an oversize variant could not be confirmed in the store, so no redirect (503);
- ``internal``: a bug of ours (500); never an ``ImageError``, only the app's catch-all.
"""
CATEGORIES: tuple[Category, ...] = get_args(Category)

URL_REQUIRED = '"url" parameter is required'
URL_ARRAY = '"url" parameter cannot be an array'
URL_TOO_LONG = '"url" parameter is too long'
URL_PROTOCOL_RELATIVE = '"url" parameter cannot be a protocol-relative URL (//)'
URL_RECURSIVE = '"url" parameter cannot be recursive'
URL_NOT_ALLOWED = '"url" parameter is not allowed'
URL_INVALID = '"url" parameter is invalid'
W_REQUIRED = '"w" parameter (width) is required'
W_ARRAY = '"w" parameter (width) cannot be an array'
W_INVALID = '"w" parameter (width) must be an integer greater than 0'
Q_REQUIRED = '"q" parameter (quality) is required'
Q_ARRAY = '"q" parameter (quality) cannot be an array'
Q_INVALID = '"q" parameter (quality) must be an integer between 1 and 100'
UPSTREAM_INVALID = '"url" parameter is valid but upstream response is invalid'
UPSTREAM_TIMEOUT = '"url" parameter is valid but upstream response timed out'
INTERNAL_INVALID = '"url" parameter is valid but internal response is invalid'
NOT_AN_IMAGE = "The requested resource isn't a valid image."
TYPE_NOT_ALLOWED = '"url" parameter is valid but image type is not allowed'
# Our own messages, for inputs where Next.js answers a bare 500 (docs/compatibility.md).
ACCEPT_INVALID = "Invalid Accept header"
URL_MALFORMED_ESCAPE = '"url" parameter has a malformed percent-encoding'
TIME_BUDGET_EXCEEDED = '"url" parameter is valid but the request exceeded its time budget'
OVERLOADED = "The image optimizer is busy; retry shortly"
TRANSFORM_FAILED = "The image transform failed; retry shortly"


def width_not_allowed(width: str) -> str:
    return f'"w" parameter (width) of {width} is not allowed'


def quality_not_allowed(raw_q: str) -> str:
    return f'"q" parameter (quality) of {raw_q} is not allowed'


class ImageError(Exception):
    """A failure with Next's status and message; ``transient`` marks upstream hiccups worth a retry.

    Next turns a status below 400 (an upstream 3xx, say) into 500; we answer 502 for that and for
    anything past 599 (LinkedIn's 999), so a 500 only ever means a bug of ours and no status
    outside 400-599 can leave the app. ``headers`` go on the error response (``Retry-After``).
    ``category`` is required so every raise site says which kind of failure it is.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        category: Category,
        transient: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status if 400 <= status <= 599 else 502
        self.message = message
        self.category: Category = category
        self.transient = transient
        self.headers = dict(headers or {})
