"""The template's buckets on an S3-compatible endpoint (or moto), and the S3 origin reading them.

CloudFront reads a bucket through its origin access control with the rights the bucket policy
grants it: ``s3:GetObject`` on some keys, perhaps ``s3:ListBucket``. Like S3, the origin answers
403 ``AccessDenied`` for a key outside those rights, and for a missing key unless listing is
allowed (then 404 ``NoSuchKey``); the object's own headers (type, length, ETag, Last-Modified,
Cache-Control, metadata) are passed on as S3 sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import uuid
from collections.abc import Iterable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from handler.commands.local_cdn.http import Response, get
from handler.commands.local_cdn.origins import OriginFailure, OriginRequest
from handler.commands.local_cdn.template import Bucket, Deployment, S3Origin
from handler.stores.s3_client import error_code

_MISSING = {"NoSuchKey", "404", "NotFound"}


def create_buckets(client: Any, names: Iterable[str]) -> None:
    """Create each bucket unless the endpoint already has it."""
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for name in names:
        if name not in existing:
            client.create_bucket(Bucket=name)


def seed(client: Any, bucket: str, prefix: str, folder: Path) -> int:
    """Upload every file of ``folder`` under ``prefix``, as ``next-image invoke --seed`` does,
    each with the Content-Type its name gives, as the deploy's ``aws s3 sync`` guesses it (a
    static site's pages must reach the browser as ``text/html``)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        key = prefix + path.relative_to(folder).as_posix()
        kind = mimetypes.guess_type(path.name)[0]
        extra = {"ContentType": kind} if kind else {}
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), **extra)
    return len(files)


def deploy(client: Any, deployment: Deployment) -> int:
    """Copy a BucketDeployment's staged folders into its bucket, as ``cdk deploy`` does."""
    return sum(
        seed(client, deployment.bucket, deployment.prefix, folder) for folder in deployment.folders
    )


def s3_error(status: int, code: str, message: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    ).encode()
    headers = [("content-type", "application/xml"), ("server", "AmazonS3")]
    return Response(status, [*headers, ("content-length", str(len(body)))], body)


class S3Fetcher:
    """GET and HEAD of ``<origin path>/<uri>`` in the origin's bucket."""

    def __init__(self, origin: S3Origin, client: Any) -> None:
        self.origin = origin
        self._client = client

    @property
    def host(self) -> str:
        return f"{self.origin.bucket.name}.s3.amazonaws.com"

    def key(self, path: str) -> str:
        key = unquote(path.lstrip("/"))
        return f"{self.origin.path}/{key}" if self.origin.path else key

    async def fetch(self, request: OriginRequest) -> Response:
        return await asyncio.to_thread(self._fetch, request)

    def _fetch(self, request: OriginRequest) -> Response:
        bucket: Bucket = self.origin.bucket
        key = self.key(request.path)
        if request.method not in ("GET", "HEAD") or not bucket.can_read(key):
            return s3_error(403, "AccessDenied", "Access Denied")
        conditions: dict[str, Any] = {}
        if_none_match = get(request.headers, "if-none-match")
        if if_none_match:
            conditions["IfNoneMatch"] = if_none_match
        if_modified_since = get(request.headers, "if-modified-since")
        if if_modified_since:
            with contextlib.suppress(TypeError, ValueError):
                conditions["IfModifiedSince"] = parsedate_to_datetime(if_modified_since)
        call = self._client.head_object if request.method == "HEAD" else self._client.get_object
        try:
            found = call(Bucket=bucket.name, Key=key, **conditions)
        except Exception as exc:
            return self._failure(exc)
        headers = list(found["ResponseMetadata"]["HTTPHeaders"].items())
        body = b"" if request.method == "HEAD" else found["Body"].read()
        return Response(found["ResponseMetadata"]["HTTPStatusCode"], headers, body)

    def _failure(self, exc: Exception) -> Response:
        response = getattr(exc, "response", None)
        if not isinstance(response, dict):
            raise OriginFailure(502, f"S3 is unreachable: {exc}") from exc
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500))
        if status == 304:
            headers = response["ResponseMetadata"].get("HTTPHeaders", {})
            return Response(304, list(headers.items()))
        code = error_code(exc)
        if code in _MISSING:
            if self.origin.bucket.listable:
                return s3_error(404, "NoSuchKey", "The specified key does not exist.")
            return s3_error(403, "AccessDenied", "Access Denied")
        return s3_error(status, code, str(response.get("Error", {}).get("Message", "")))

    async def aclose(self) -> None:
        """The S3 client is the process's; nothing to close here."""
