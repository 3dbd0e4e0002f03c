"""One JSON log line and one set of CloudWatch EMF metrics per request, via Powertools.

The app hands every ``/_next/image`` request's record to ``RequestObserver``; Powertools formats
the log line (the handler's ``inject_lambda_context`` adds the request id) and the EMF blob
flushed at the end of the invocation.
Service and namespace come from ``POWERTOOLS_SERVICE_NAME`` / ``POWERTOOLS_METRICS_NAMESPACE``.
"""

from __future__ import annotations

import os

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.metrics import Metrics
from starlette.requests import Request

from handler.metrics import measure
from handler.types import RequestRecord

SERVICE = "next-image"
NAMESPACE = "NextImage"


class RequestObserver:
    """The app's ``observer``: logs the record and adds its metrics to the invocation's EMF.

    The metrics are the EMF views of ``handler.metrics``, the ones ``/metrics`` exposes on serve.
    """

    def __init__(self, logger: Logger, metrics: Metrics) -> None:
        self._logger = logger
        self._metrics = metrics

    def __call__(self, request: Request, record: RequestRecord) -> None:
        self._logger.info("image request", extra=record)
        for sample in measure(record):
            for view in sample.spec.emf:
                if view.matches(sample.labels):
                    self._metrics.add_metric(
                        name=view.name, unit=view.unit, value=view.value(sample.value)
                    )


def make_logger() -> Logger:
    return Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE))


def make_metrics() -> Metrics:
    service = os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE)
    return Metrics(
        service=service, namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)
    )
