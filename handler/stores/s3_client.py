"""The process's two S3 clients: one for the store (a cache), one for sources.

The store's client has tight timeouts: a record not read within seconds is a miss that costs a
transform. A source has no fallback, so the source client waits for each attempt as long as the
request has left (``reads_until``): a slow but working S3 is only slow. boto3 is imported on first
use (a short Lambda init); the Lambda handler creates the clients before a SnapStart snapshot and
drops them after a restore."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

S3_CONNECT_TIMEOUT = 1.0  # seconds; in-region S3 connects in milliseconds
S3_READ_TIMEOUT = 2.0  # seconds between bytes; S3's first byte is ~0.1 s at p99
# A source read outside any request's deadline (a tool, a test) waits this long between bytes.
SOURCE_READ_TIMEOUT = 30.0
MIN_READ_TIMEOUT = 0.01  # what an attempt gets once the deadline has passed: a prompt timeout

_session: Any = None  # one per process: a second client from it costs ~10 ms, not ~150 ms
_client: Any = None
_source_client: Any = None
_client_lock = threading.Lock()
_deadline: ContextVar[float | None] = ContextVar("s3_deadline", default=None)


def s3_client() -> Any:
    """The store's S3 client (and the tools'), created on first use.

    boto3 reads ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` itself; with such an endpoint we
    use path-style addressing, which every S3-compatible server (MinIO, moto) understands.
    Timeouts are short and retries few: an unreachable or hung bucket must cost a transform, not
    the budget (botocore's defaults, 60 s reads and retries, outlive a Lambda invocation). The
    optimizer bounds each call by the request's deadline as well (``GuardedStore``).
    """
    global _client
    with _client_lock:
        if _client is None:
            _client = _new_client(S3_READ_TIMEOUT)
        return _client


def s3_source_client() -> Any:
    """The client for source reads (the S3 assets bucket), created on first use.

    The same connect timeout and retries as the store's, but each attempt may wait for an
    answer until the deadline of the calls around it (``reads_until``): a source has no
    fallback, so S3 answering three seconds late must cost three seconds, not the request.
    """
    global _source_client
    with _client_lock:
        if _source_client is None:
            _source_client = _new_client(SOURCE_READ_TIMEOUT)
            _source_client.meta.events.register("before-send.s3", _read_until_deadline)
        return _source_client


@contextmanager
def reads_until(deadline: float | None) -> Iterator[None]:
    """Within the block, each attempt of the source client's calls waits for an answer until
    ``deadline`` (``time.monotonic()``, the event loop's clock); None: its own read timeout."""
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def read_deadline() -> float | None:
    """The deadline ``reads_until`` set around this call, if any."""
    return _deadline.get()


def _read_until_deadline(request: Any, **_: Any) -> None:
    """botocore's ``before-send`` hook, per attempt: a retry gets only what is left.

    botocore reads a per-request ``read_timeout`` from the request's context (``URLLib3Session``
    since 1.43); an older botocore ignores it, and the client's own read timeout applies.
    """
    deadline = _deadline.get()
    context = getattr(request, "context", None)
    if deadline is not None and isinstance(context, dict):
        context["read_timeout"] = max(deadline - time.monotonic(), MIN_READ_TIMEOUT)


def _new_client(read_timeout: float) -> Any:
    """Under ``_client_lock``: the session's loaded S3 model is shared by both clients."""
    global _session
    import boto3
    from botocore.config import Config

    if _session is None:
        _session = boto3.session.Session()
    custom = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(
        connect_timeout=S3_CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": 2},
        s3={"addressing_style": "path" if custom else "auto"},
    )
    return _session.client("s3", config=config)


def reset_s3_client() -> None:
    """Drop both clients and their session, e.g. after a SnapStart restore: new credentials, no
    stale connections."""
    global _session, _client, _source_client
    with _client_lock:
        _session = _client = _source_client = None


def error_code(exc: Exception) -> str:
    """The S3 error code of a botocore ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
