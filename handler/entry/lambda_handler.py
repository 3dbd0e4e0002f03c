"""The AWS Lambda entry point (``handler.entry.lambda_handler.handler``): the serve app behind
Mangum.

Mangum adapts Function URL, API Gateway (HTTP API and REST) and ALB events to the same ASGI app
``next-image serve`` runs. This import is the Lambda init phase, so it builds the app but leaves
boto3 for the first S3 call. Under SnapStart, the hooks load boto3 before the snapshot, and drop
the S3 clients and reseed ``random`` after a restore, so no sockets or shared state carry across.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from mangum import Mangum

from handler.entry.self_invoke import SelfInvoker, params_to_produce
from handler.entry.settings import ENV_PREFIX, Settings
from handler.entry.wiring import build_app
from handler.http.observability import RequestObserver, make_logger, make_metrics
from handler.model import ImageParams
from handler.request import first_view
from handler.request.coordinator import Coordinator
from handler.stores.s3_client import reset_s3_client, s3_client, s3_source_client

# Lambda's buffered response is 6 MB including base64 (x4/3) and headers: ~4.4 MB of image.
LAMBDA_MAX_INLINE_BYTES = 4_400_000

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]

log = logging.getLogger(__name__)


def lambda_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """``Settings.from_env`` with Lambda defaults: an S3 store when a bucket is named, and the
    inline-body limit that keeps responses under the payload cap."""
    env = os.environ if environ is None else environ
    settings = Settings.from_env(env)
    if settings.bucket and not env.get(f"{ENV_PREFIX}STORE"):
        settings = dataclasses.replace(settings, store="s3")
    if settings.max_inline_bytes is None and settings.store == "s3":
        settings = dataclasses.replace(settings, max_inline_bytes=LAMBDA_MAX_INLINE_BYTES)
    return settings


def build_handler(settings: Settings) -> LambdaHandler:
    """Revalidation is inline: background work does not survive a Lambda response. For the same
    reason a fast first view's AVIF is produced by an asynchronous invocation of this function,
    which arrives as a produce event rather than an HTTP one. Free memory is not given back to
    the system: the instance's memory is its own, and the next transform would fault it in
    again."""
    logger = make_logger()
    metrics = make_metrics()
    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")

    def report(failure: first_view.FirstViewFailure) -> None:
        """A failure of fast first view's deferred work: a JSON line with its category."""
        logger.warning(failure.message, extra=failure.fields)

    app = build_app(
        settings,
        revalidation="inline",
        defer_first_view=SelfInvoker(function_name, version) if function_name else None,
        give_back_memory=False,
        observer=RequestObserver(logger, metrics),
        report_first_view=report,
    )
    adapter = Mangum(app, lifespan="off")
    coordinator: Coordinator = app.state.coordinator

    @logger.inject_lambda_context(clear_state=True)
    @metrics.log_metrics
    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        started = time.monotonic()
        try:
            params = params_to_produce(event)
            if params is None:
                return adapter(event, context)
            return produce(coordinator, params, report)
        finally:
            finish_invocation(coordinator, started)

    return handle


def produce(
    coordinator: Coordinator, params: ImageParams, report: first_view.Report = first_view.report
) -> dict[str, Any]:
    """A produce event: serve the request in full (no fast first view), so its variant is stored.
    A failure, or an answer that left no AVIF stored, is reported with its category."""
    loop = asyncio.get_event_loop()
    try:
        served = loop.run_until_complete(coordinator.serve(params))
    except Exception as exc:
        report(first_view.failed("produce", params, exc))
        return {"produced": False}
    failure = first_view.unproduced(
        params, transient=served.transient, kind=served.variant.kind, stored=served.stored
    )
    if failure is not None:
        report(failure)
    return {"produced": served.stored, "variant": served.variant_key}


def finish_invocation(coordinator: Coordinator, started: float) -> None:
    """End the invocation's own work without delaying its response.

    Lambda freezes the process after the response: a task still running would wake up in a
    later invocation and spend its time. Mangum keeps one event loop across invocations, so
    leftover tasks are cancelled on it.

    A store call abandoned after its timeout is not waited for. It is a thread blocked on an S3
    that did not answer, whose result is dropped: waiting would only add its S3 timeouts (1 s
    connect, 2 s read, two attempts) to the response, and a write already sent is stored by S3
    whether or not its answer is read. The handler's return is the response (a Python buffered
    handler cannot answer first and finish later: response streaming is not available to it, and
    an internal extension finishing the work would hold the instance from the next request just
    as long), so the call is logged and left to end by its own timeouts, in a later invocation if
    this one is frozen first, while the breaker keeps requests off the store.
    """
    loop = asyncio.get_event_loop()
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    abandoned = coordinator.store.running(since=started)
    if abandoned:
        log.warning(
            "answered with %d abandoned store call(s) still running, left to their S3 timeouts: %s",
            len(abandoned),
            ", ".join(f"{name} ({seconds:.1f} s)" for name, seconds in abandoned),
        )


def _before_snapshot() -> None:
    s3_client()  # imports boto3 and loads the S3 model into the snapshot
    s3_source_client()


def _after_restore() -> None:
    """Every restored instance would otherwise share clients and one random state."""
    reset_s3_client()
    random.seed()  # retry jitter must differ between instances


try:
    from snapshot_restore_py import register_after_restore, register_before_snapshot
except ImportError:  # only present in the Lambda runtime
    pass
else:
    register_before_snapshot(_before_snapshot)
    register_after_restore(_after_restore)

handler = build_handler(lambda_settings())
