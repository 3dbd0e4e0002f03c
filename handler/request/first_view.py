"""Fast first view: a slow AVIF miss is answered with WebP now, and the AVIF is deferred.

The *first view* is the WebP answered now (``FirstView.stand_in``), cached for seconds only; its
AVIF is *deferred* (``FirstView.defer``): made after the response by a background task under
``serve``, or on Lambda by an asynchronous invocation of the function (the ``Deferral``).
Deciding from the plan, before any encode, keeps the first visitor from paying for two encodes
at once. How a deferred AVIF's failure is logged: docs/architecture.md, "Fast first view".
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Literal, TypeGuard, get_args

import anyio

from handler.contract.errors import ImageError
from handler.formats import AVIF, WEBP
from handler.model import ImageParams, Served, VariantKind
from handler.pipeline.transform import Plan, Transformed
from handler.request.background import Background
from handler.request.single_flight import flight_key
from handler.request.transforms import Transforms, variant_of
from handler.stores.guarded import GuardedStore

# A first view's WebP stands in for the AVIF this long: a CDN asks again soon after, by when the
# AVIF is stored.
FIRST_VIEW_MAX_AGE = 10
# Makes a deferred AVIF outside this request (an asynchronous call: Lambda's self-invocation).
Deferral = Callable[[ImageParams], Awaitable[None]]
Stage = Literal["defer", "produce"]  # the deferred work's steps, as logged: queue it, make it
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


@dataclass(eq=False)
class FirstView:
    """The policy, off unless ``seconds`` is set: which miss gets a first view, and its AVIF's
    deferral. ``background_survives``: work started here outlives the response (``serve``);
    where it does not (Lambda), the AVIF is deferred by ``deferral``, or never put off."""

    seconds: float
    transforms: Transforms
    store: GuardedStore
    background: Background
    _: KW_ONLY
    timeout: float
    background_survives: bool
    deferral: Deferral | None = None
    report: Report = report
    # Flight keys of the AVIFs a background task is making.
    _deferred: set[str] = field(default_factory=set, init=False)

    @property
    def on(self) -> bool:
        return self.seconds > 0

    def too_slow(self, plan: Plan | Transformed) -> TypeGuard[Plan]:
        """An AVIF whose plan, at this machine's pace, takes longer than a first view may wait."""
        if not self.on or not isinstance(plan, Plan) or plan.content_type != AVIF:
            return False
        if not self.background_survives and self.deferral is None:
            return False  # nothing here could make the AVIF after the response
        return plan.seconds * self.transforms.admission.pace > self.seconds

    @staticmethod
    def stand_in(params: ImageParams) -> ImageParams:
        """The request whose answer stands in for the AVIF: the same, as WebP."""
        return replace(params, mime_type=WEBP)

    @staticmethod
    def answer(stand_in: Served) -> Served:
        """The first view: the WebP's answer, cached for seconds only."""
        return replace(stand_in, max_age=min(stand_in.max_age, FIRST_VIEW_MAX_AGE))

    def pending(self, params: ImageParams, vkey: str) -> bool:
        """This AVIF is being made by a background task already."""
        return flight_key("deferred", params, vkey) in self._deferred

    async def defer(self, params: ImageParams, plan: Plan, vkey: str) -> None:
        """The AVIF, after the response: a background transform here, or the deferral (an
        asynchronous invocation on Lambda). Failures are reported with their category: the
        next request for it tries again."""
        if self.pending(params, vkey):
            return  # asked again before its AVIF is stored: that one is on its way
        key = flight_key("deferred", params, vkey)
        if not self.background_survives:
            assert self.deferral is not None
            try:
                await self.deferral(params)
            except Exception as exc:
                self.report(failed("defer", params, exc))
            return

        async def make_deferred() -> None:
            deadline = anyio.current_time() + self.timeout
            try:
                with anyio.fail_after(self.timeout):
                    result = await self.transforms.run(plan, deadline, background=True)
                    stored = not result.transient and await self.store.put_variant(
                        vkey, variant_of(result)
                    )
                failure = unproduced(
                    params, transient=result.transient, kind=result.kind, stored=stored
                )
            except Exception as exc:  # nobody awaits this task: every failure is reported
                failure = failed("produce", params, exc)
            finally:
                self._deferred.discard(key)
            if failure is not None:
                self.report(failure)

        self._deferred.add(key)
        self.background.start(make_deferred())
