"""Relative URLs read from an S3 bucket holding the app's ``public/`` and ``_next/static/media``.

``/img/a.png`` is the object ``{prefix}img/a.png``, decoded and checked as for the public folder.
The object's own ``Cache-Control`` wins, else Next's static server's; the size is checked on the
headers before the body is read; a revalidation is a conditional GET. A source has no fallback,
so it is read with the source client (``s3_source_client``), which waits as long as the request
has left. A failed read is 502 (S3 failed, not us); one past the request's deadline, 504."""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import anyio

from handler.contract import errors
from handler.contract.config import ImagesConfig
from handler.contract.errors import ImageError
from handler.model import Upstream
from handler.sources.base import SourceNotFound
from handler.sources.static_files import asset_segments, default_cache_control
from handler.stores.s3_client import error_code, reads_until, s3_source_client

log = logging.getLogger(__name__)

_MISSING = {"NoSuchKey", "404", "NotFound"}
_NOT_MODIFIED = {"304", "NotModified"}


class S3AssetsSource:
    def __init__(
        self, bucket: str, prefix: str, config: ImagesConfig, *, client: Any = None
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._limit = config.maximum_response_body
        self._client = client

    async def fetch(self, href: str, *, if_none_match: str | None = None) -> Upstream:
        segments = asset_segments(href)
        if segments is None:
            raise SourceNotFound(href)
        key = self.prefix + "/".join(segments)
        deadline = anyio.current_effective_deadline()  # the request's (inf outside one)
        load = functools.partial(
            self._load,
            href,
            key,
            default_cache_control(segments),
            if_none_match,
            deadline if math.isfinite(deadline) else None,
        )
        return await anyio.to_thread.run_sync(load, abandon_on_cancel=True)

    def _load(
        self,
        href: str,
        key: str,
        default_cache_control: str,
        if_none_match: str | None,
        deadline: float | None,
    ) -> Upstream:
        """Blocking part, in a worker thread: one GetObject, its headers checked before the body.

        ``deadline`` (``time.monotonic()``) bounds each attempt's wait for S3."""
        with reads_until(deadline):
            return self._get(href, key, default_cache_control, if_none_match)

    def _get(
        self, href: str, key: str, default_cache_control: str, if_none_match: str | None
    ) -> Upstream:
        client = self._client if self._client is not None else s3_source_client()
        conditional = {"IfNoneMatch": if_none_match} if if_none_match else {}
        try:
            response = client.get_object(Bucket=self.bucket, Key=key, **conditional)
        except Exception as exc:
            if _timed_out(exc):
                log.warning("S3 assets read of s3://%s/%s timed out: %r", self.bucket, key, exc)
                raise _timeout() from exc
            code = error_code(exc)
            if code in _MISSING:
                raise SourceNotFound(href) from exc
            if code in _NOT_MODIFIED and if_none_match:
                headers = exc.response["ResponseMetadata"].get("HTTPHeaders", {})  # type: ignore[attr-defined]
                etag = headers.get("etag") or if_none_match
                cache_control = headers.get("cache-control")
                return Upstream(b"", cache_control, etag, True, worth_keeping=False)
            log.warning("S3 assets read of s3://%s/%s failed: %r", self.bucket, key, exc)
            raise ImageError(502, errors.UPSTREAM_INVALID, category="upstream") from exc
        if response.get("ContentLength", 0) > self._limit:
            response["Body"].close()
            raise ImageError(413, errors.INTERNAL_INVALID, category="upstream")
        try:
            body: bytes = response["Body"].read(self._limit + 1)
        except Exception as exc:  # the connection dropped mid-body, or went quiet
            if _timed_out(exc):
                raise _timeout() from exc
            raise ImageError(502, errors.UPSTREAM_INVALID, category="upstream") from exc
        finally:
            response["Body"].close()
        if len(body) > self._limit:
            raise ImageError(413, errors.INTERNAL_INVALID, category="upstream")
        if not body:
            raise ImageError(400, errors.INTERNAL_INVALID, category="upstream")
        cache_control = response.get("CacheControl") or default_cache_control
        return Upstream(body, cache_control, response.get("ETag"), worth_keeping=False)


def _timed_out(exc: Exception) -> bool:
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    return isinstance(exc, (ConnectTimeoutError, ReadTimeoutError))


def _timeout() -> ImageError:
    return ImageError(504, errors.UPSTREAM_TIMEOUT, category="timeout", transient=True)
