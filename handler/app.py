"""The HTTP layer: Next's ``/_next/image`` route, its headers, 304s and bare error responses."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse

from handler.config import ImagesConfig
from handler.errors import ImageError
from handler.headers import cache_control, content_disposition, is_fresh
from handler.optimizer import Optimizer, Served, Stats
from handler.params import ImageParams
from handler.validate import validate_params

log = logging.getLogger(__name__)

ROUTE_METHODS = ["GET", "HEAD", "POST", "OPTIONS"]  # Next does not check the method

RequestRecord = dict[str, Any]
Observer = Callable[[Request, RequestRecord], None]


def create_app(optimizer: Optimizer, *, observer: Observer | None = None) -> FastAPI:
    """``observer`` gets one record per request (the Lambda handler logs it, emits metrics)."""
    config = optimizer.config
    path = f"{config.base_path}/_next/image"
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.api_route(path, methods=ROUTE_METHODS)
    async def next_image(request: Request) -> Response:
        started = time.perf_counter()
        stats = Stats()
        record: RequestRecord = {"query": request.url.query}
        response = await _answer(request, stats, record)
        if observer is not None:
            record |= {
                "status": response.status_code,
                "source_bytes": stats.source_bytes,
                "stages_ms": stats.stages_ms,
                "total_ms": round((time.perf_counter() - started) * 1000, 2),
            }
            observer(request, record)
        return response

    async def _answer(request: Request, stats: Stats, record: RequestRecord) -> Response:
        if config.loader != "default" or config.unoptimized:
            return Response("This page could not be found.", status_code=404)
        try:
            params = validate_params(request.url.query, request.headers.get("accept"), config)
            record |= {"url": params.href, "w": params.width, "q": params.quality}
            served = await optimizer.serve(params, stats)
        except ImageError as exc:
            record["error"] = exc.message
            return Response(exc.message, status_code=exc.status)
        except Exception as exc:
            log.exception("unexpected failure for %s", request.url.query)
            record["error"] = type(exc).__name__
            return Response("Internal Server Error", status_code=500)
        record |= {
            "format": served.variant.content_type,
            "cache": served.cache,
            "output_bytes": len(served.variant.body),
        }
        return image_response(request, params, served, config)

    @app.api_route(path + "/", methods=ROUTE_METHODS, include_in_schema=False)
    async def trailing_slash(request: Request) -> Response:
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(path + query, status_code=308)

    return app


def image_response(
    request: Request, params: ImageParams, served: Served, config: ImagesConfig
) -> Response:
    """Next's headers in Next's order; 304 when ``If-None-Match`` matches; no body for HEAD."""
    headers = {
        "Vary": "Accept",
        "Cache-Control": cache_control(params.is_static, served.max_age),
        "ETag": served.etag,
    }
    if is_fresh(request.headers, served.etag):
        return Response(status_code=304, headers=headers)
    variant = served.variant
    headers |= {
        "Content-Type": variant.content_type,
        "Content-Disposition": content_disposition(
            params.href, variant.content_type, config.content_disposition_type
        ),
        "Content-Security-Policy": config.content_security_policy,
        "X-Content-Type-Options": "nosniff",
        "X-Nextjs-Cache": served.cache,
        "Content-Length": str(len(variant.body)),
    }
    body = b"" if request.method == "HEAD" else variant.body
    return Response(body, status_code=200, headers=headers)
