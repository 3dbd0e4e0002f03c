"""Every relative-URL source's contract: the public folder, S3 assets on moto, the app's origin.

Each source is handed the same files under its root (a ``public/`` folder, a key prefix, a base
path on a loopback app) and must answer alike: a file's bytes with a validator and the upstream
``Cache-Control`` Next's static server sends (``Upstream`` has no content type: Next sniffs the
bytes), ``SourceNotFound`` for what is not there, a 304 for its own validator, Next's internal
errors for empty and oversize files, and nothing ever looked up outside the root.

The origin source forwards the href, as validated, to the app, which owns its own lookup and
headers. Its stand-in here answers like Next's static server and routes on the raw path, so an
encoded separator is never decoded into a boundary; what a real app does with one is its own
business (docs/compatibility.md's deviations table). For the origin, then, the contract shows
what it asks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from handler.commands.invoke import mocked_s3
from handler.contract import errors
from handler.contract.config import ImagesConfig
from handler.contract.errors import ImageError
from handler.entry.settings import Settings
from handler.sources import public_folder
from handler.sources.base import Source, SourceNotFound
from handler.sources.origin import OriginSource
from handler.sources.public_folder import PublicFolderSource
from handler.sources.s3_assets import S3AssetsSource
from handler.stores.s3_client import s3_source_client
from kit.support import Route
from kit.upstream_server import Server

pytestmark = pytest.mark.anyio

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256))  # sniffing is not a source's job
SECRET = b"outside the root: never to be served"
PUBLIC_FILE = "public, max-age=0"
NEXT_STATIC_FILE = "public, max-age=31536000, immutable"
BUCKET = "assets"
PREFIX = "_assets/"
BASE_PATH = "/site/"


@dataclass
class SourceUnderTest:
    make: Callable[[ImagesConfig], Source]
    put: Callable[[str, bytes], None]  # a file at this path under the root
    location: Callable[[str], str]  # where the source looks for a path under the root
    root: str  # every location under the root starts with this
    looked: Callable[[], list[str]]  # every location the source has looked at so far

    @property
    def source(self) -> Source:
        return self.make(ImagesConfig())


@pytest.fixture(params=["public_dir", "s3_assets", "origin"])
def sut(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SourceUnderTest]:
    """An empty source of each kind, a secret planted just outside its root, and a spy."""
    if request.param == "public_dir":
        yield _public_dir(tmp_path, request.getfixturevalue("monkeypatch"))
    elif request.param == "s3_assets":
        with mocked_s3(Settings(assets_bucket=BUCKET)) as client:
            yield _s3_assets(client)
    else:
        yield _origin(request.getfixturevalue("upstream"))


def _public_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SourceUnderTest:
    root = tmp_path / "public"
    root.mkdir()
    (tmp_path / "secret.png").write_bytes(SECRET)

    def put(path: str, body: bytes) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(body)

    opened: list[str] = []
    opener = public_folder._open_nonblocking

    def spy(path: str, flags: int) -> int:
        opened.append(os.fspath(path))
        return opener(path, flags)

    monkeypatch.setattr(public_folder, "_open_nonblocking", spy)
    return SourceUnderTest(
        lambda config: PublicFolderSource(root, config),
        put,
        lambda path: str(root.resolve() / path),
        str(root.resolve()) + os.sep,
        opened.copy,
    )


def _s3_assets(client: Any) -> SourceUnderTest:
    client.put_object(Bucket=BUCKET, Key="secret.png", Body=SECRET)
    keys: list[str] = []

    def spy(params: dict[str, Any], **kwargs: Any) -> None:
        keys.append(params["Key"])

    s3_source_client().meta.events.register("before-parameter-build.s3.GetObject", spy)
    return SourceUnderTest(
        lambda config: S3AssetsSource(BUCKET, PREFIX, config),
        lambda path, body: client.put_object(Bucket=BUCKET, Key=PREFIX + path, Body=body),
        lambda path: PREFIX + path,
        PREFIX,
        keys.copy,
    )


def _origin(server: Server) -> SourceUnderTest:
    server.routes["/secret.png"] = Route(body=SECRET)

    def put(path: str, body: bytes) -> None:
        cache_control = NEXT_STATIC_FILE if path.startswith("_next/static/") else PUBLIC_FILE
        etag = f'W/"{hashlib.sha256(body).hexdigest()[:16]}"'
        headers = {"Cache-Control": cache_control, "ETag": etag}
        server.routes[BASE_PATH + quote(path)] = Route(body=body, headers=headers)

    return SourceUnderTest(
        lambda config: OriginSource(server.url(BASE_PATH), config),
        put,
        lambda path: BASE_PATH + quote(path),
        BASE_PATH,
        lambda: [request.path.split("?", 1)[0] for request in server.requests],
    )


async def test_a_file_answers_its_bytes_and_a_stable_validator(sut: SourceUnderTest) -> None:
    sut.put("img/a b.png", IMAGE)
    first = await sut.source.fetch("/img/a%20b.png")
    again = await sut.source.fetch("/img/a%20b.png")
    assert (first.body, first.not_modified) == (IMAGE, False)
    assert first.etag and again.etag == first.etag
    assert sut.location("img/a b.png") in sut.looked()


async def test_only_the_origins_bytes_are_worth_keeping_in_the_store(
    sut: SourceUnderTest, request: pytest.FixtureRequest
) -> None:
    """The public folder and the S3 assets bucket are as near as the variant store."""
    sut.put("img/a b.png", IMAGE)
    first = await sut.source.fetch("/img/a%20b.png")
    refreshed = await sut.source.fetch("/img/a%20b.png", if_none_match=first.etag)
    far = request.node.callspec.params["sut"] == "origin"
    assert (first.worth_keeping, refreshed.worth_keeping) == (far, far)


@pytest.mark.parametrize(
    ("path", "cache_control"),
    [("img/a b.png", PUBLIC_FILE), ("_next/static/media/logo.0a1b2c.png", NEXT_STATIC_FILE)],
)
async def test_cache_control_is_what_nexts_static_server_sends(
    sut: SourceUnderTest, path: str, cache_control: str
) -> None:
    sut.put(path, IMAGE)
    assert (await sut.source.fetch("/" + quote(path))).cache_control == cache_control


async def test_a_conditional_fetch_with_the_validator_is_not_modified(
    sut: SourceUnderTest,
) -> None:
    sut.put("img/a b.png", IMAGE)
    etag = (await sut.source.fetch("/img/a%20b.png")).etag
    fresh = await sut.source.fetch("/img/a%20b.png", if_none_match=etag)
    assert (fresh.not_modified, fresh.body, fresh.etag) == (True, b"", etag)
    changed = await sut.source.fetch("/img/a%20b.png", if_none_match='W/"an-older-one"')
    assert (changed.not_modified, changed.body) == (False, IMAGE)


@pytest.mark.parametrize(
    "href",
    [
        "/../secret.png",
        "/%2e%2e/secret.png",
        "/img/%2E%2E/%2e%2e/secret.png",
        "/img%2F..%2F..%2Fsecret.png",
        "/..%2Fsecret.png",
        "/img/nested/..%2f..%2f..%2fsecret.png",
        "/..%5Csecret.png",
        "/img\\..\\..\\secret.png",
        "/test.png%00.txt",
        "/%2Fetc%2Fpasswd",
        "/etc/passwd",
        "/%FF.png",
        "/",
        "/img",
        "/img/",
        "/does_not_exist.jpg",
    ],
)
async def test_misses_and_escapes_are_not_found_inside_the_root(
    sut: SourceUnderTest, href: str
) -> None:
    sut.put("test.png", IMAGE)
    sut.put("img/nested/a b.png", IMAGE)
    with pytest.raises(SourceNotFound):
        await sut.source.fetch(href)
    assert [where for where in sut.looked() if not where.startswith(sut.root)] == []


@pytest.mark.parametrize(
    "href",
    [
        "/img/nested%2Fa%20b.png",
        "/img/nested%2fa%20b.png",
        "/img/nested%5Ca%20b.png",
        "/img/nested%5ca%20b.png",
        "/img%2fnested/a%20b.png",
        "/img%5c",
    ],
)
async def test_an_encoded_separator_never_adds_a_segment(sut: SourceUnderTest, href: str) -> None:
    # img/nested/a b.png exists, but an allow-list saw "nested%2Fa b.png" as one name.
    sut.put("img/nested/a b.png", IMAGE)
    assert (await sut.source.fetch("/img/nested/a%20b.png")).body == IMAGE
    before = len(sut.looked())
    with pytest.raises(SourceNotFound):
        await sut.source.fetch(href)
    assert sut.location("img/nested/a b.png") not in sut.looked()[before:]


async def test_an_empty_file_is_400(sut: SourceUnderTest) -> None:
    sut.put("empty.png", b"")
    with pytest.raises(ImageError) as caught:
        await sut.source.fetch("/empty.png")
    assert (caught.value.status, caught.value.message) == (400, errors.INTERNAL_INVALID)


async def test_past_maximum_response_body_is_413_and_equal_is_fine(sut: SourceUnderTest) -> None:
    sut.put("test.png", IMAGE)
    exact = sut.make(ImagesConfig(maximum_response_body=len(IMAGE)))
    assert (await exact.fetch("/test.png")).body == IMAGE
    with pytest.raises(ImageError) as caught:
        await sut.make(ImagesConfig(maximum_response_body=len(IMAGE) - 1)).fetch("/test.png")
    assert (caught.value.status, caught.value.message) == (413, errors.INTERNAL_INVALID)
