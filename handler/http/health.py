"""The routes a service needs beside ``/_next/image``: liveness and readiness probes, metrics.

They exist only in ``next-image serve``: on Lambda, CloudFront sends nothing but ``/_next/image``
to the function, and the platform checks health itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from handler.request.coordinator import Coordinator

if TYPE_CHECKING:
    from handler.http.metrics import PrometheusMetrics

NEVER_CACHE = {"Cache-Control": "no-store"}


def add_health_routes(app: FastAPI) -> None:
    app.add_api_route("/healthz", healthz, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route("/readyz", readyz, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)


async def healthz(request: Request) -> Response:
    """Liveness: the process and its event loop answer."""
    return PlainTextResponse("ok", headers=NEVER_CACHE)


async def readyz(request: Request) -> Response:
    """Readiness: the configured store answers a ping within the store timeout.

    A load balancer stops sending traffic to a host whose shared cache is gone rather than
    letting every request pay a transform.
    """
    coordinator: Coordinator = request.app.state.coordinator
    if await coordinator.store.ready():
        return PlainTextResponse("ready", headers=NEVER_CACHE)
    return PlainTextResponse("store unavailable", status_code=503, headers=NEVER_CACHE)


async def metrics(request: Request) -> Response:
    """Prometheus text format, from ``app.state.prometheus`` (``build_app`` sets it): this
    process's samples, or every worker's when ``serve`` runs several."""
    from prometheus_client import CONTENT_TYPE_LATEST

    prometheus: PrometheusMetrics = request.app.state.prometheus
    headers = NEVER_CACHE | {"Content-Type": CONTENT_TYPE_LATEST}
    return Response(prometheus.render(), headers=headers)
