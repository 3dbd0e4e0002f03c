"""The process's one S3 client, shared by the S3 store and the S3 assets source.

boto3 is imported on first use, not at import: the Lambda init phase stays short. The Lambda
handler creates the client before a SnapStart snapshot and drops it after a restore.
"""

from __future__ import annotations

import os
import threading
from typing import Any

S3_CONNECT_TIMEOUT = 1.0  # seconds; in-region S3 connects in milliseconds
S3_READ_TIMEOUT = 2.0  # seconds between bytes; S3's first byte is ~0.1 s at p99

_client: Any = None
_client_lock = threading.Lock()


def s3_client() -> Any:
    """The process's one S3 client, created on first use.

    boto3 reads ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` itself; with such an endpoint we
    use path-style addressing, which every S3-compatible server (MinIO, moto) understands.
    Timeouts are short and retries few: an unreachable or hung bucket must cost a transform, not
    the budget (botocore's defaults, 60 s reads and retries, outlive a Lambda invocation). The
    optimizer bounds each call by the request's deadline as well (``GuardedStore``).
    """
    global _client
    with _client_lock:
        if _client is None:
            import boto3
            from botocore.config import Config

            custom = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            config = Config(
                connect_timeout=S3_CONNECT_TIMEOUT,
                read_timeout=S3_READ_TIMEOUT,
                retries={"mode": "standard", "total_max_attempts": 2},
                s3={"addressing_style": "path" if custom else "auto"},
            )
            _client = boto3.session.Session().client("s3", config=config)
        return _client


def reset_s3_client() -> None:
    """Drop the client, e.g. after a SnapStart restore: new credentials, no stale connections."""
    global _client
    with _client_lock:
        _client = None


def error_code(exc: Exception) -> str:
    """The S3 error code of a botocore ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
