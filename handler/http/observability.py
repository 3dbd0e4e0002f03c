"""One JSON log line and one set of CloudWatch EMF metrics per request, via Powertools.

The app hands every ``/_next/image`` request's record to ``RequestObserver``; Powertools formats
the log line and the EMF blob flushed at the end of the invocation (service and namespace from
``POWERTOOLS_SERVICE_NAME`` / ``POWERTOOLS_METRICS_NAMESPACE``). Both go through ``RECORDS``,
which writes each complete line in one ``write()`` under a process lock: Powertools alone writes
an EMF blob and its newline apart, and local-cdn's threads then ran two records onto one line."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import IO, Any, TextIO, cast

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.metrics import Metrics
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.constants import MAX_METRICS
from starlette.requests import Request

from handler.http.metrics import measure
from handler.model import RequestRecord

SERVICE = "next-image"
NAMESPACE = "NextImage"


class RequestObserver:
    """The app's ``observer``: logs the record and adds its metrics to the invocation's EMF.

    The metrics are the EMF views of ``handler.http.metrics``: what ``/metrics`` exposes on
    serve.
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


class WholeLines:
    """A text stream whose every complete line reaches the target stream in one ``write()``.

    Text is kept per thread until its newline, so a writer that writes a record in pieces (as
    ``print`` does: the text, then the newline) still lands whole; the line is then written and
    flushed under one lock, so no other record gets inside it, whichever thread writes.
    """

    _lock = threading.Lock()  # one for the process: every WholeLines shares it

    def __init__(self, target: Callable[[], TextIO] = lambda: sys.stdout) -> None:
        self._target = target  # looked up at each write: stdout may be replaced (pytest does)
        self._pending = threading.local()

    def write(self, text: str) -> int:
        pending: str = getattr(self._pending, "text", "") + text
        lines, newline, rest = pending.rpartition("\n")
        self._pending.text = rest
        if newline:
            with self._lock:
                stream = self._target()
                stream.write(lines + newline)
                stream.flush()
        return len(text)

    def flush(self) -> None:
        """Nothing to do: complete lines are flushed as they are written."""


RECORDS = WholeLines()  # the handler's log lines and EMF blobs


class WholeLineEMF(AmazonCloudWatchEMFProvider):
    """Powertools' EMF provider, each blob written as one line through ``RECORDS``.

    A handler's metrics are its own (Powertools shares one set among all ``Metrics`` of the
    process, so instances running as threads would flush each other's).
    """

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        if (not raise_on_empty_metrics and not self.metric_set) or is_metrics_disabled():
            super().flush_metrics(raise_on_empty_metrics)  # a warning, or nothing: no output
            return
        self._write_blob()
        self.clear_metrics()

    def add_metric(self, name: str, unit: Any, value: float, resolution: Any = 60) -> None:
        """As Powertools adds it, except that a set about to reach CloudWatch's 100 metrics (or
        values of one metric) is written first, through ``RECORDS``: Powertools would print it."""
        values = self.metric_set[name]["Value"] if name in self.metric_set else []
        if len(values) + 1 >= MAX_METRICS or (
            name not in self.metric_set and len(self.metric_set) + 1 >= MAX_METRICS
        ):
            self._write_blob()
            self.metric_set.clear()
        super().add_metric(name=name, unit=unit, value=value, resolution=resolution)

    def _write_blob(self) -> None:
        blob = self.serialize_metric_set()
        RECORDS.write(json.dumps(blob, separators=(",", ":")) + "\n")


def make_logger() -> Logger:
    service = os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE)
    logger = Logger(service=service, stream=cast(IO[str], RECORDS))
    handler = logger.logger_handler  # shared by every Logger of the service, the first one's
    if isinstance(handler, logging.StreamHandler) and handler.stream is not RECORDS:
        handler.stream = RECORDS  # made before with another stream: whole lines all the same
    return logger


def make_metrics() -> Metrics:
    service = os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE)
    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)
    provider = WholeLineEMF(namespace=namespace, service=service)
    return Metrics(service=service, namespace=namespace, provider=provider)
