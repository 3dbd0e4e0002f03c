"""PublicFolderSource: the headers Next's static server sends, and a folder nothing can escape.

Next's code: ``packages/next/src/server/lib/router-server.ts`` serves public files with
``serveStatic`` (``packages/next/src/server/serve-static.ts``, the ``send`` package).
What every relative source does (misses, escapes, 304s, sizes) is in ``test_sources_contract.py``.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from handler.contract import errors
from handler.contract.config import ImagesConfig, load_images_config
from handler.contract.errors import ImageError
from handler.model import Upstream
from handler.sources.base import SourceNotFound
from handler.sources.public_folder import PublicFolderSource
from kit.support import MakeApp

pytestmark = pytest.mark.anyio

BODY = b"\x89PNG fake image bytes"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    public = tmp_path / "public"
    (public / "img" / "nested").mkdir(parents=True)
    (public / "test.png").write_bytes(BODY)
    (public / "img" / "nested" / "a b.png").write_bytes(BODY)
    (public / "日本.png").write_bytes(BODY)
    (tmp_path / "secret.png").write_bytes(b"outside the public folder")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.png").write_bytes(b"outside the public folder")
    return public


def source(root: Path, limit: int = 50_000_000) -> PublicFolderSource:
    return PublicFolderSource(root, ImagesConfig(maximum_response_body=limit))


def weak_etag(path: Path) -> str:
    info = path.stat()
    return f'W/"{info.st_size:x}-{info.st_mtime_ns // 1_000_000:x}"'


async def test_public_file_with_static_server_headers(root: Path) -> None:
    upstream = await source(root).fetch("/test.png")
    etag = weak_etag(root / "test.png")
    assert upstream == Upstream(BODY, "public, max-age=0", etag, worth_keeping=False)


async def test_etag_uses_size_and_mtime_in_hex(root: Path) -> None:
    os.utime(root / "test.png", ns=(0, 1_700_000_000_123_456_789))
    upstream = await source(root).fetch("/test.png")
    assert upstream.etag == f'W/"{len(BODY):x}-{1_700_000_000_123:x}"'


@pytest.mark.parametrize(
    "href",
    [
        "/img/nested/a%20b.png",
        "/img/./nested/../nested/a%20b.png",
        "/test.png?w=1&q=2",
        "/test.png#x",
        "/%E6%97%A5%E6%9C%AC.png",
        "/img//nested/a%20b.png",
        "/img/nested/%61%20b.png",
    ],
)
async def test_path_is_normalised_and_decoded(root: Path, href: str) -> None:
    assert (await source(root).fetch(href)).body == BODY


ONLY_PNG = '{"localPatterns": [{"pathname": "/only/*.png"}]}'
NOT_ALLOWED = '"url" parameter is not allowed'


@pytest.mark.parametrize("separator", ["%2F", "%2f", "%5C", "%5c"])
def test_app_never_lets_an_encoded_separator_widen_a_local_pattern(
    make_app: MakeApp, public_dir: Path, separator: str
) -> None:
    (public_dir / "only" / "private").mkdir(parents=True)
    (public_dir / "only" / "ok.png").write_bytes((public_dir / "test.png").read_bytes())
    (public_dir / "only" / "private" / "secret.png").write_bytes(b"private, but a valid PNG too")
    url = f"/only/private{separator.replace('%', '%25')}secret.png"
    app = make_app(load_images_config(ONLY_PNG))
    assert app.get("url=/only/ok.png&w=640&q=75").status_code == 200
    response = app.get(f"url={url}&w=640&q=75")
    assert (response.status_code, response.text) == (400, NOT_ALLOWED)
    # Without any localPatterns, the file lookup still refuses to split the segment.
    unrestricted = make_app(replace(load_images_config(None), local_patterns=None))
    response = unrestricted.get(f"url={url}&w=640&q=75")
    assert (response.status_code, response.text) == (404, errors.INTERNAL_INVALID)


async def test_symlinks_out_of_the_folder_are_not_followed(root: Path) -> None:
    (root / "link.png").symlink_to(root.parent / "secret.png")
    (root / "linkdir").symlink_to(root.parent / "outside", target_is_directory=True)
    (root / "loop.png").symlink_to(root / "loop.png")
    for href in ("/link.png", "/linkdir/secret.png", "/loop.png"):
        with pytest.raises(SourceNotFound):
            await source(root).fetch(href)


async def test_symlinks_inside_the_folder_work(root: Path) -> None:
    (root / "alias.png").symlink_to(root / "test.png")
    assert (await source(root).fetch("/alias.png")).body == BODY


async def test_a_symlinked_root_is_resolved(root: Path, tmp_path: Path) -> None:
    (tmp_path / "public-link").symlink_to(root, target_is_directory=True)
    assert (await source(tmp_path / "public-link").fetch("/test.png")).body == BODY


async def test_fifo_does_not_hang(root: Path) -> None:
    os.mkfifo(root / "pipe.png")
    with pytest.raises(SourceNotFound):
        await source(root).fetch("/pipe.png")


async def test_missing_root_is_a_miss(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound):
        await source(tmp_path / "nope").fetch("/test.png")


async def test_oversize_file_is_refused_before_reading(root: Path) -> None:
    with open(root / "huge.png", "wb") as sparse:
        sparse.truncate(8 * 1024**3)  # 8 GiB of holes: reading it would be obvious
    with pytest.raises(ImageError) as caught:
        await source(root, limit=1024).fetch("/huge.png")
    assert caught.value.status == 413


async def test_conditional_fetch(root: Path) -> None:
    etag = weak_etag(root / "test.png")
    fresh = await source(root).fetch("/test.png", if_none_match=etag)
    assert fresh == Upstream(b"", "public, max-age=0", etag, True, worth_keeping=False)
    changed = await source(root).fetch("/test.png", if_none_match='W/"1-1"')
    assert changed.body == BODY and not changed.not_modified
