"""The S3 assets source against moto in-process: keys, headers, size check, 304, misses."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.invoke import mocked_s3
from handler import errors
from handler.config import ImagesConfig
from handler.errors import ImageError
from handler.settings import Settings
from handler.sources.base import SourceNotFound, Upstream
from handler.sources.s3_assets import S3AssetsSource

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
        client.put_object(Bucket=BUCKET, Key=PREFIX + "empty.png", Body=b"")
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


def test_static_media_without_metadata_is_immutable(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key=PREFIX + "_next/static/media/x.png", Body=IMAGE)
    assert fetch("/_next/static/media/x.png").cache_control == "public, max-age=31536000, immutable"


def test_conditional_fetch_with_the_object_etag(s3: Any) -> None:
    etag = fetch("/img/a%20b.png").etag
    upstream = fetch("/img/a%20b.png", if_none_match=etag)
    assert upstream.not_modified and upstream.body == b"" and upstream.etag == etag
    changed = fetch("/img/a%20b.png", if_none_match='"an-older-etag"')
    assert changed.body == IMAGE and not changed.not_modified


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


def test_empty_object_is_invalid(s3: Any) -> None:
    with pytest.raises(ImageError) as caught:
        fetch("/empty.png")
    assert (caught.value.status, caught.value.message) == (400, errors.INTERNAL_INVALID)


@pytest.mark.parametrize("href", ["/missing.png", "/img/", "/img/%2e%2e/%2e%2e/secret.png"])
def test_missing_or_escaping_paths_are_not_found(s3: Any, href: str) -> None:
    with pytest.raises(SourceNotFound):
        fetch(href)


@pytest.mark.parametrize("separator", ["%2F", "%2f", "%5C", "%5c"])
def test_an_encoded_separator_never_adds_a_segment(s3: Any, separator: str) -> None:
    s3.put_object(Bucket=BUCKET, Key=PREFIX + "only/private/secret.png", Body=IMAGE)
    assert fetch("/only/private/secret.png").body == IMAGE
    with pytest.raises(SourceNotFound):  # an allow-list saw "private%2Fsecret.png" as one name
        fetch(f"/only/private{separator}secret.png")


def test_unreachable_bucket_is_an_upstream_error(s3: Any) -> None:
    source = S3AssetsSource("no-such-bucket", "", ImagesConfig())
    with pytest.raises(ImageError) as caught:
        asyncio.run(source.fetch("/a.png"))
    assert (caught.value.status, caught.value.message) == (502, errors.UPSTREAM_INVALID)
