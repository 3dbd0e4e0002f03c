"""One JSON log line and one set of CloudWatch EMF metrics per request, via Powertools.

The app hands every ``/_next/image`` request's record to ``RequestObserver``; Powertools formats
the log line (the handler's ``inject_lambda_context`` adds the request id) and the EMF blob
flushed at the end of the invocation.
Service and namespace come from ``POWERTOOLS_SERVICE_NAME`` / ``POWERTOOLS_METRICS_NAMESPACE``.
"""

from __future__ import annotations

import os

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.metrics import Metrics, MetricUnit
from starlette.requests import Request

from handler.app import RequestRecord

SERVICE = "next-image"
NAMESPACE = "NextImage"

_CACHE_METRICS = {"HIT": "Hits", "MISS": "Misses", "STALE": "Stale"}


class RequestObserver:
    """The app's ``observer``: logs the record and adds its metrics to the invocation's EMF."""

    def __init__(self, logger: Logger, metrics: Metrics) -> None:
        self._logger = logger
        self._metrics = metrics

    def __call__(self, request: Request, record: RequestRecord) -> None:
        status = int(record.get("status", 0))
        self._logger.info("image request", extra=record)
        add = self._metrics.add_metric
        add(name="Requests", unit=MetricUnit.Count, value=1)
        cache = _CACHE_METRICS.get(record.get("cache", ""))
        if cache:
            add(name=cache, unit=MetricUnit.Count, value=1)
        if status >= 500:
            add(name="Errors", unit=MetricUnit.Count, value=1)
        elif status >= 400:
            add(name="Rejected", unit=MetricUnit.Count, value=1)
        elif status == 302:
            add(name="Redirects", unit=MetricUnit.Count, value=1)
        transform_ms = record.get("stages_ms", {}).get("transform")
        if transform_ms is not None:
            add(name="TransformMs", unit=MetricUnit.Milliseconds, value=transform_ms)
        add(name="TotalMs", unit=MetricUnit.Milliseconds, value=record.get("total_ms", 0.0))
        if record.get("output_bytes"):
            add(name="OutputBytes", unit=MetricUnit.Bytes, value=record["output_bytes"])


def make_logger() -> Logger:
    return Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE))


def make_metrics() -> Metrics:
    service = os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE)
    return Metrics(
        service=service, namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)
    )
