"""Failures of fast first view's asynchronous work, each logged with a category.

The AVIF a fast first view put off is made after the response (a background task under
``serve``; on Lambda an asynchronous invocation of the function itself, queued during the
request): nobody waits for it, so a failure would pass unseen. Each one is a warning record with
structured fields (``extra``; on Lambda the handler's JSON logger, so they are keys of the log
line):

- ``first_view``: ``defer`` (queuing the work: the asynchronous invocation could not be sent) or
  ``produce`` (making and storing the AVIF);
- ``category``: ``timeout`` (the transform or the call ran out of time, including a transform
  stopped by its own timeout, whose result is never stored), ``overload`` (admission control
  refused it, or Lambda throttled the invocation), ``store`` (the AVIF was made but the store did
  not confirm its write), ``transform`` (libvips could not make it: Next's fallback, the
  original, is stored instead), ``upstream`` (the source could not be read again), ``invoke``
  (the asynchronous invocation failed otherwise) or ``internal`` (a bug);
- ``url``, ``w``, ``q``, ``format`` (the request it was for) and ``detail``.

Nothing is retried here: the next request for the image finds no AVIF and defers it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from handler.contract.errors import ImageError
from handler.model import ImageParams, VariantKind

Stage = Literal["defer", "produce"]
FailureCategory = Literal[
    "timeout", "overload", "store", "transform", "upstream", "invoke", "internal"
]
FAILURE_CATEGORIES: tuple[FailureCategory, ...] = get_args(FailureCategory)
# Lambda's answers to an invocation it will not take now (throttled), by error code.
_THROTTLED = frozenset({"TooManyRequestsException", "ThrottlingException", "EC2ThrottledException"})
# botocore's exceptions for a call that ran out of time, by class name (botocore is not
# imported here: it is loaded on first use only).
_TIMED_OUT = frozenset({"ReadTimeoutError", "ConnectTimeoutError"})
_BY_ERROR_CATEGORY: dict[str, FailureCategory] = {
    "timeout": "timeout",
    "overload": "overload",
    "pipeline": "transform",
    "upstream": "upstream",
    "store": "store",
}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FirstViewFailure:
    stage: Stage
    category: FailureCategory
    params: ImageParams
    detail: str

    @property
    def fields(self) -> dict[str, str | int]:
        """The structured record: the keys a log line carries."""
        return {
            "first_view": self.stage,
            "category": self.category,
            "url": self.params.href,
            "w": self.params.width,
            "q": self.params.quality,
            "format": self.params.mime_type,
            "detail": self.detail,
        }

    @property
    def message(self) -> str:
        what = "could not queue" if self.stage == "defer" else "did not produce"
        return (
            f"fast first view {what} the AVIF of {self.params.href} (w={self.params.width} "
            f"q={self.params.quality}): {self.category}: {self.detail}"
        )


Report = Callable[[FirstViewFailure], None]


def report(failure: FirstViewFailure) -> None:
    """The default: a warning of this module's logger, the fields as the record's attributes."""
    log.warning(failure.message, extra=failure.fields)


def failed(stage: Stage, params: ImageParams, exc: BaseException) -> FirstViewFailure:
    """What an exception raised by the deferred work (or by queuing it) says went wrong."""
    return FirstViewFailure(stage, category_of(stage, exc), params, _detail(exc))


def category_of(stage: Stage, exc: BaseException) -> FailureCategory:
    if isinstance(exc, ImageError):
        return _BY_ERROR_CATEGORY.get(exc.category, "internal")
    if isinstance(exc, TimeoutError) or type(exc).__name__ in _TIMED_OUT:
        return "timeout"
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("Error", {}).get("Code") in _THROTTLED:
        return "overload"
    return "invoke" if stage == "defer" else "internal"


def unproduced(
    params: ImageParams, *, transient: bool, kind: VariantKind, stored: bool
) -> FirstViewFailure | None:
    """Why the deferred work, which returned, left no AVIF in the store (None: it did)."""
    if transient:
        detail = "the transform timed out; nothing was stored"
        return FirstViewFailure("produce", "timeout", params, detail)
    if kind == "fallback":
        detail = "libvips could not transform it; the original is stored, as Next serves it"
        return FirstViewFailure("produce", "transform", params, detail)
    if not stored:
        return FirstViewFailure("produce", "store", params, "the store did not confirm the write")
    return None


def _detail(exc: BaseException) -> str:
    if isinstance(exc, ImageError):
        return f"{exc.status} {exc.message}"
    return repr(exc) if not isinstance(exc, TimeoutError) else "no result within the budget"
