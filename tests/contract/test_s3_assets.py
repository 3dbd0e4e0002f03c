"""The S3 assets source against moto in-process: keys, object headers, size check, failures.

What every relative source does (misses, escapes, 304s, sizes) is in ``test_sources_contract.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

from handler.commands.invoke import mocked_s3
from handler.contract import errors
from handler.contract.config import ImagesConfig
from handler.contract.errors import ImageError
from handler.entry.settings import Settings
from handler.model import Upstream
from handler.sources.s3_assets import S3AssetsSource
from handler.stores.s3_client import read_deadline

BUCKET = "assets"
PREFIX = "_assets/"
IMAGE = b"\x89PNG\r\n\x1a\n" + b"\0" * 100


@pytest.fixture
def s3() -> Iterator[Any]:
    with mocked_s3(Settings(assets_bucket=BUCKET)) as client:
        client.put_object(Bucket=BUCKET, Key=PREFIX + "img/a b.png", Body=IMAGE)
        client.put_object(
            Bucket=BUCKET,
            Key=PREFIX + "_next/static/media/logo.0a1b2c.png",
            Body=IMAGE,
            CacheControl="public,max-age=31536000,immutable",
        )
        client.put_object(
            Bucket=BUCKET, Key=PREFIX + "headers.png", Body=IMAGE, CacheControl="max-age=86400"
        )
        yield client


def fetch(href: str, *, limit: int = 50_000_000, if_none_match: str | None = None) -> Upstream:
    config = ImagesConfig(maximum_response_body=limit)
    source = S3AssetsSource(BUCKET, PREFIX, config)
    return asyncio.run(source.fetch(href, if_none_match=if_none_match))


def test_public_file_with_next_static_server_defaults(s3: Any) -> None:
    upstream = fetch("/img/a%20b.png?v=3")
    assert upstream.body == IMAGE
    assert upstream.cache_control == "public, max-age=0"
    assert upstream.etag == s3.head_object(Bucket=BUCKET, Key=PREFIX + "img/a b.png")["ETag"]
    assert not upstream.not_modified


def test_object_cache_control_wins(s3: Any) -> None:
    assert fetch("/headers.png").cache_control == "max-age=86400"
    assert fetch("/_next/static/media/logo.0a1b2c.png").cache_control == (
        "public,max-age=31536000,immutable"
    )


def test_size_is_checked_before_the_body_is_read(s3: Any) -> None:
    with pytest.raises(ImageError) as caught:
        fetch("/img/a%20b.png", limit=len(IMAGE) - 1)
    assert (caught.value.status, caught.value.message) == (413, errors.INTERNAL_INVALID)
    assert fetch("/img/a%20b.png", limit=len(IMAGE)).body == IMAGE  # equal is fine

    class Body:
        closed = False

        def read(self, amount: int | None = None) -> bytes:
            raise AssertionError("the body of an oversize object must not be read")

        def close(self) -> None:
            self.closed = True

    body = Body()

    class Client:
        def get_object(self, **kwargs: Any) -> dict[str, Any]:
            return {"ContentLength": 10**12, "Body": body}

    source = S3AssetsSource(BUCKET, PREFIX, ImagesConfig(), client=Client())
    with pytest.raises(ImageError):
        asyncio.run(source.fetch("/huge.png"))
    assert body.closed


def test_unreachable_bucket_is_an_upstream_error(s3: Any) -> None:
    source = S3AssetsSource("no-such-bucket", "", ImagesConfig())
    with pytest.raises(ImageError) as caught:
        asyncio.run(source.fetch("/a.png"))
    assert (caught.value.status, caught.value.message) == (502, errors.UPSTREAM_INVALID)


def test_s3_is_waited_for_until_the_requests_deadline() -> None:
    """The read runs with the deadline of the scope around the fetch (the request's budget),
    not the store's tight timeouts; outside any deadline, with the client's own."""
    seen: list[float | None] = []

    class Client:
        def get_object(self, **kwargs: Any) -> dict[str, Any]:
            seen.append(read_deadline())
            raise ReadTimeoutError(endpoint_url="http://s3.test/a.png")

    source = S3AssetsSource(BUCKET, PREFIX, ImagesConfig(), client=Client())

    async def fetch_within(seconds: float | None) -> float:
        with pytest.raises(ImageError) as caught:
            if seconds is None:
                await source.fetch("/a.png")
            else:
                with anyio.fail_after(seconds):
                    await source.fetch("/a.png")
        # S3 that did not answer in time is the upstream timing out, worth trying again
        error = caught.value
        assert (error.status, error.message, error.category) == (
            504,
            errors.UPSTREAM_TIMEOUT,
            "timeout",
        )
        assert error.transient
        return anyio.current_time()

    now = anyio.run(fetch_within, 20.0)
    deadline = seen.pop()
    assert deadline is not None and now < deadline <= now + 20.0
    anyio.run(fetch_within, None)
    assert seen == [None]


def test_a_connect_timeout_is_a_504_too() -> None:
    class Client:
        def get_object(self, **kwargs: Any) -> dict[str, Any]:
            raise ConnectTimeoutError(endpoint_url="http://s3.test/a.png")

    source = S3AssetsSource(BUCKET, PREFIX, ImagesConfig(), client=Client())
    with pytest.raises(ImageError) as caught:
        asyncio.run(source.fetch("/a.png"))
    assert (caught.value.status, caught.value.transient) == (504, True)
