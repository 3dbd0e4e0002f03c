"""The HTTP layer: Next's ``/_next/image`` route, its headers, 304s and bare error responses.

FastAPI hosts the route for its OpenAPI description and interactive docs (``serve --docs``), and
Mangum wraps the same app on Lambda. The route reads the raw query and headers itself, so Next's
validation order and messages hold, and no FastAPI 422 or JSON error ever reaches a client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import Receive, Scope, Send

from handler import __version__
from handler.contract.config import ImagesConfig
from handler.contract.errors import ImageError
from handler.contract.headers import cache_control, content_disposition, is_fresh
from handler.contract.validate import validate_params
from handler.http.health import add_health_routes
from handler.http.openapi import image_route_docs
from handler.http.replay import RecentHits, ReplayedAnswer
from handler.model import ImageParams, Observer, RequestRecord, Served, Stats
from handler.request.coordinator import Coordinator
from handler.stores.byte_lru import ByteLRU

log = logging.getLogger(__name__)

ROUTE_METHODS = ["GET", "HEAD", "POST", "OPTIONS"]  # Next does not check the method

OVERSIZE_UNSTORED = "The optimized image is too large to send and could not be stored"

NO_STORE = "private, no-store"  # a timeout's fallback: right for this request only
# Errors that say "try again": a bug of ours (500), a failing or slow upstream (502, 504), too
# busy or an unconfirmed redirect target (503). Next sends them without a Cache-Control, so a
# CDN keeps them for its own default after the fault has passed (CloudFront: 10 s). ``no-store``
# keeps browsers and shared caches from storing them at all. CloudFront ignores it on a 5xx and
# keeps the error for the distribution's error caching minimum TTL (the construct's: 1 s); a
# max-age could only make that longer. Next's 4xx answers (and its 508, a redirect loop) keep
# Next's bare headers: they do not change when retried.
TRANSIENT_ERRORS = frozenset({500, 502, 503, 504})
TRANSIENT_ERROR_CACHE_CONTROL = "no-store"


# The raw query and Accept: all that the validated parameters, and the query Starlette reads
# (``request.url.query``: since Starlette 1.x an invalid Host no longer changes it), depend on.
KnownKey = tuple[bytes, bytes | None]
KNOWN_MAX_BYTES = 16_000_000  # of remembered requests, per process: about 22,000 of them
KNOWN_OVERHEAD = 600  # the key, the params and the index entry, charged per request


def known_key(scope: Scope) -> KnownKey:
    for name, value in scope["headers"]:
        if name == b"accept":
            return scope.get("query_string", b""), value  # the first, as Starlette reads it
    return scope.get("query_string", b""), None


def _known_charge(key: KnownKey, known: tuple[str, ImageParams]) -> int:
    raw = len(key[0]) + len(key[1] or b"")
    return KNOWN_OVERHEAD + raw + len(known[0]) + len(known[1].href)


class KnownParams:
    """Requests validated before, remembered: ``validate_params`` depends only on the query,
    Accept and the config (fixed for the app), so a request seen before (the same raw query
    and Accept) skips Next's checks and the URL parsing. Only valid ones are kept (an
    invalid request is checked again, to be answered its error), at most ``max_bytes`` of them,
    least recently used first out."""

    def __init__(self, max_bytes: int = KNOWN_MAX_BYTES) -> None:
        self._known: ByteLRU[KnownKey, tuple[str, ImageParams]] = ByteLRU(max_bytes, _known_charge)

    def get(self, key: KnownKey) -> tuple[str, ImageParams] | None:
        """The query as Starlette reads it, and its validated parameters."""
        return self._known.get(key)

    def keep(self, key: KnownKey, query: str, params: ImageParams) -> None:
        self._known.put(key, (query, params))


@dataclass(frozen=True)
class Oversize:
    """Bodies over ``limit`` bytes would break Lambda's 6 MB response cap: redirect to the stored
    variant instead, at ``location_prefix + variant_key`` (served by CloudFront from the store)."""

    limit: int
    location_prefix: str


def create_app(
    coordinator: Coordinator,
    *,
    observer: Observer | None = None,
    oversize: Oversize | None = None,
    docs: bool = False,
    service: bool = False,
) -> FastAPI:
    """The ``/_next/image`` route on FastAPI, with OpenAPI docs served only when ``docs`` is set,
    and the health routes and replayed repeat hits (``handler.http.replay``) only when running as a
    ``service`` (``next-image serve``).

    ``observer`` gets one record per request (the Lambda handler logs it, emits metrics). Every
    error, FastAPI's own included, is a bare text body, never JSON.
    """
    path = f"{coordinator.config.base_path}/_next/image"
    app = NextImageApp(
        title="next-image",
        summary="A drop-in /_next/image optimizer",
        version=__version__,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        exception_handlers={
            StarletteHTTPException: plain_http_error,
            RequestValidationError: plain_validation_error,
            Exception: internal_error,
        },
    )
    app.state.coordinator = coordinator
    app.state.observer = observer
    app.state.oversize = oversize
    app.state.known = KnownParams()
    app.state.recent_hits = RecentHits() if service else None
    if app.state.recent_hits is not None:
        app.front = ImageFront(path, app.state.recent_hits, observer)
    app.add_api_route(path, next_image, methods=ROUTE_METHODS, include_in_schema=False)
    app.add_api_route(path + "/", trailing_slash, methods=ROUTE_METHODS, include_in_schema=False)
    if service:
        add_health_routes(app)
    documented = [
        APIRoute(
            path,
            next_image,
            methods=[method],
            operation_id=f"optimize_image_{method.lower()}",
            **image_route_docs(coordinator.config),
        )
        for method in ("GET", "HEAD")
    ]

    def openapi() -> dict[str, Any]:
        """One operation per method: FastAPI gives a multi-method route one duplicated id."""
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=documented
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


class NextImageApp(FastAPI):
    """FastAPI, with ``next-image serve``'s image route answered in front of it (``front``):
    a GET or HEAD of ``/_next/image`` skips FastAPI's middleware, routing and dependency
    solving, about half the CPU of a hit once the hit itself is a lookup. FastAPI still
    documents the route and answers every other request (other methods and paths, the trailing
    slash's redirect, the probes, the docs).

    Where OpenTelemetry is configured (FastAPI's native telemetry is on when the first request
    comes: providers are set once, at start-up), every request goes through FastAPI, so each
    image request keeps its span and metrics."""

    front: ImageFront | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.front
        if (
            front is not None
            and scope["type"] == "http"
            and scope["path"] == front.path
            and scope["method"] in ("GET", "HEAD")
        ):
            if front.telemetry is None:
                telemetry = getattr(self, "_native_telemetry", None)
                front.telemetry = telemetry is not None and bool(telemetry.enabled())
            if not front.telemetry:
                scope["app"] = self
                await front(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class ImageFront:
    """The image route as plain ASGI: a replayed repeat (``handler.http.replay``) when one is kept,
    else ``next_image`` itself. An exception it raises is answered as FastAPI's outermost
    middleware answers one (``internal_error``'s plain 500), then raised for the server to log.
    """

    def __init__(self, path: str, answers: RecentHits, observer: Observer | None) -> None:
        self.path = path
        self.telemetry: bool | None = None  # FastAPI's native telemetry on: not known yet
        self._answers = answers
        self._observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        replayed = self._answers.find(scope)
        if replayed is None:
            request = Request(scope, receive)
            try:
                response = await next_image(request)
            except Exception as exc:
                await (await internal_error(request, exc))(scope, receive, send)
                raise
            await response(scope, receive, send)
            return
        body = b"" if scope["method"] == "HEAD" else replayed.body
        await send({"type": "http.response.start", "status": 200, "headers": replayed.headers})
        await send({"type": "http.response.body", "body": body})
        if self._observer is not None:
            elapsed = round((time.perf_counter() - started) * 1000, 2)
            record = replayed.record | {"stages_ms": {}, "total_ms": elapsed}
            self._observer(Request(scope, receive), record)


async def next_image(request: Request) -> Response:
    """``/_next/image``: answer, then hand the request's record to the observer."""
    started = time.perf_counter()
    stats = Stats()
    record: RequestRecord = {}
    response = await answer(request, stats, record)
    observer: Observer | None = request.app.state.observer
    if observer is not None:
        record |= {
            "status": response.status_code,
            "source_bytes": stats.source_bytes,
            "stages_ms": stats.stages_ms,
            "total_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        observer(request, record)
    return response


async def answer(request: Request, stats: Stats, record: RequestRecord) -> Response:
    """Validate in Next's order, serve, then send the image, a 304, a redirect or the error."""
    coordinator: Coordinator = request.app.state.coordinator
    config = coordinator.config
    known_params: KnownParams = request.app.state.known
    key = known_key(request.scope)
    known = known_params.get(key)
    query = known[0] if known is not None else request.url.query
    record["query"] = query
    if not config.serves_images:  # Next's 404 for another loader; ours, or an export's, served
        return text_response("This page could not be found.", 404)
    try:
        if known is not None:
            params = known[1]
        else:
            params = validate_params(query, request.headers.get("accept"), config)
            known_params.keep(key, query, params)
        record |= {"url": params.href, "w": params.width, "q": params.quality}
        served = await coordinator.serve(params, stats, first_view=True)
    except ImageError as exc:
        record |= {"error": exc.message, "error_category": exc.category}
        return text_response(exc.message, exc.status, exc.headers)
    except Exception as exc:
        log.exception("unexpected failure for %s", query)
        record |= {"error": type(exc).__name__, "error_category": "internal"}
        return text_response("Internal Server Error", 500)
    record |= {
        "format": served.variant.content_type,
        "cache": served.cache,
        "output_bytes": len(served.variant.body),
    }
    response = image_response(request, params, served, config)
    if response.status_code != 200:
        return response
    oversize: Oversize | None = request.app.state.oversize
    if oversize is not None and len(served.variant.body) > oversize.limit:
        return await variant_redirect(coordinator, params, served, oversize, record)
    recent: RecentHits | None = request.app.state.recent_hits
    if recent is not None and served.cache == "HIT" and not served.transient:
        kept = ReplayedAnswer(response.raw_headers, served.variant.body, record | {"status": 200})
        recent.keep(request.scope, kept, served.fresh_for)
    return response


async def trailing_slash(request: Request) -> Response:
    """Next's ``trailingSlash: false``: ``/_next/image/`` is a 308 to ``/_next/image``."""
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(request.url.path.rstrip("/") + query, status_code=308)


async def plain_http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods: Starlette's plain-text 404/405, not FastAPI's JSON."""
    assert isinstance(exc, StarletteHTTPException)
    return text_response(str(exc.detail), exc.status_code, exc.headers)


async def plain_validation_error(request: Request, exc: Exception) -> Response:
    """The route declares no typed parameters, so this cannot happen; if it did, no 422 JSON."""
    return text_response("Bad Request", 400)


async def internal_error(request: Request, exc: Exception) -> Response:
    """An exception no route caught (Starlette's last handler, which then re-raises it): the
    plain 500 it would send, uncacheable like every transient error."""
    return text_response("Internal Server Error", 500)


async def variant_redirect(
    coordinator: Coordinator,
    params: ImageParams,
    served: Served,
    oversize: Oversize,
    record: RequestRecord,
) -> Response:
    """302 to the stored variant, cacheable like the 200 it replaces; 503 if it is not stored.

    The redirect is only sent for an object the store confirmed just now, never for one this
    process merely believes is there: a broken redirect becomes a clear, uncached error instead.
    """
    if not await coordinator.ensure_stored(served):
        log.warning("oversize variant %s is not in the store", served.variant_key)
        record |= {"error": "OversizeNotStored", "error_category": "store"}
        return text_response(OVERSIZE_UNSTORED, 503, {"Cache-Control": "no-store"})
    headers = {
        "Vary": "Accept",
        "Cache-Control": cache_control(params.is_static, served.max_age),
        "Location": oversize.location_prefix + quote(served.variant_key),
        "X-Nextjs-Cache": served.cache,
    }
    return Response(status_code=302, headers=headers)


def text_response(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
    """Next's bare error, labelled as text: without a type, Lambda Function URLs say JSON.

    A transient error (``TRANSIENT_ERRORS``) also says ``Cache-Control: no-store``, unless it
    brings its own."""
    headers = dict(headers or {})
    if status in TRANSIENT_ERRORS and not any(k.lower() == "cache-control" for k in headers):
        headers["Cache-Control"] = TRANSIENT_ERROR_CACHE_CONTROL
    return Response(message, status_code=status, headers=headers, media_type="text/plain")


def image_response(
    request: Request, params: ImageParams, served: Served, config: ImagesConfig
) -> Response:
    """Next's headers in Next's order; 304 when ``If-None-Match`` matches; no body for HEAD."""
    cache = NO_STORE if served.transient else cache_control(params.is_static, served.max_age)
    headers = {"Vary": "Accept", "Cache-Control": cache, "ETag": served.etag}
    variant = served.variant
    if is_fresh(request.headers, served.etag):
        # Next sends no Content-Type on a 304; Function URLs would then label it JSON, and a
        # cache that refreshes stored headers from the 304 would relabel the image.
        return Response(status_code=304, headers=headers | {"Content-Type": variant.content_type})
    disposition = content_disposition(
        params.href, variant.content_type, config.content_disposition_type
    )
    response = Response(b"" if request.method == "HEAD" else variant.body, status_code=200)
    # What Starlette makes of these headers (names lower-cased, values in Latin-1), in this
    # order, built at once: this is every hit's answer.
    response.raw_headers = [
        (b"vary", b"Accept"),
        (b"cache-control", cache.encode("latin-1")),
        (b"etag", served.etag.encode("latin-1")),
        (b"content-type", variant.content_type.encode("latin-1")),
        (b"content-disposition", disposition.encode("latin-1")),
        (b"content-security-policy", config.content_security_policy.encode("latin-1")),
        (b"x-content-type-options", b"nosniff"),
        (b"x-nextjs-cache", served.cache.encode("latin-1")),
        (b"content-length", str(len(variant.body)).encode("latin-1")),
    ]
    return response
