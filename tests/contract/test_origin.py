"""OriginSource and SourceChain against a real loopback app: Next's internal fetch.

Next's code: ``fetchInternalImage`` in ``packages/next/src/server/image-optimizer.ts``.
What every relative source does (misses, escapes, 304s, sizes) is in ``test_sources_contract.py``.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import anyio
import pytest

from handler.contract import errors
from handler.contract.config import ImagesConfig
from handler.contract.errors import ImageError
from handler.model import Upstream
from handler.sources.base import SourceNotFound
from handler.sources.chain import SourceChain
from handler.sources.origin import OriginSource
from handler.sources.public_folder import PublicFolderSource
from kit.support import HANG_SECONDS
from kit.upstream_server import BIG_TOTAL, IMAGE, IMAGE_CACHE_CONTROL, IMAGE_ETAG, Server

pytestmark = pytest.mark.anyio

CONFIG = ImagesConfig()


def origin(server: Server, config: ImagesConfig = CONFIG, **kwargs: float) -> OriginSource:
    return OriginSource(server.url(""), config, **kwargs)


async def expect_error(source: OriginSource, href: str, status: int) -> ImageError:
    with pytest.raises(ImageError) as caught:
        await source.fetch(href)
    assert (caught.value.status, caught.value.message) == (status, errors.INTERNAL_INVALID)
    return caught.value


async def test_image_with_headers(server: Server) -> None:
    upstream = await origin(server).fetch("/img")
    assert upstream == Upstream(IMAGE, IMAGE_CACHE_CONTROL, IMAGE_ETAG)


async def test_href_is_appended_raw_with_its_query_and_no_client_header(server: Server) -> None:
    await origin(server).fetch("/img?v=1&w=%2F")
    request = server.requests[-1]
    assert request.path == "/img?v=1&w=%2F"
    assert sorted(name for name, _ in request.headers) == [
        "accept",
        "accept-encoding",
        "host",
        "user-agent",
    ]
    assert ("accept-encoding", "identity") in request.headers


@pytest.mark.parametrize(
    ("href", "path"),
    [
        ("/日本.png", "/%E6%97%A5%E6%9C%AC.png"),
        ("/a b.png", "/a%20b.png"),
        ("/x/../img", "/img"),
        ("/\\evil.example/img", "/img"),  # WHATWG reads a host there; we stay on the origin
    ],
)
async def test_href_is_fetched_as_validated(server: Server, href: str, path: str) -> None:
    with contextlib.suppress(SourceNotFound):
        await origin(server).fetch(href)
    assert server.requests[-1].path == path
    assert dict(server.requests[-1].headers)["host"] == f"127.0.0.1:{server.port}"


async def test_base_url_path_prefix_is_kept(server: Server) -> None:
    source = OriginSource(server.url("/app/"), CONFIG)
    assert (await source.fetch("/img")).body == IMAGE
    assert server.requests[-1].path == "/app/img"


async def test_conditional_fetch(server: Server) -> None:
    upstream = await origin(server).fetch("/img", if_none_match=IMAGE_ETAG)
    assert upstream == Upstream(b"", IMAGE_CACHE_CONTROL, IMAGE_ETAG, not_modified=True)


async def test_chain_misses_everywhere_with_nexts_404(server: Server, tmp_path: Path) -> None:
    chain = SourceChain([PublicFolderSource(tmp_path, CONFIG), origin(server)])
    with pytest.raises(ImageError) as caught:
        await chain.fetch("/does_not_exist.jpg")
    assert (caught.value.status, caught.value.message) == (404, errors.INTERNAL_INVALID)


async def test_chain_falls_back_in_order(server: Server, tmp_path: Path) -> None:
    (tmp_path / "local.png").write_bytes(b"local bytes")
    chain = SourceChain([PublicFolderSource(tmp_path, CONFIG), origin(server)])
    assert (await chain.fetch("/local.png")).body == b"local bytes"
    assert (await chain.fetch("/img")).body == IMAGE
    with pytest.raises(ImageError):
        await SourceChain([]).fetch("/img")  # no relative source configured: a plain miss


async def test_chain_does_not_swallow_errors(server: Server) -> None:
    chain = SourceChain([origin(server), origin(server)])
    before = server.hits.get("/status/500", 0)
    with pytest.raises(ImageError) as caught:
        await chain.fetch("/status/500")
    assert caught.value.status == 502
    assert server.hits["/status/500"] - before == 1


async def test_redirects_are_not_followed(server: Server) -> None:
    before = server.hits.get("/img", 0)
    error = await expect_error(origin(server), "/307", 502)
    assert not error.transient
    assert server.hits.get("/img", 0) == before


@pytest.mark.parametrize(
    ("code", "status", "transient"),
    [
        (403, 403, False),
        (500, 502, True),
        (503, 502, True),
        (399, 502, False),
        (304, 502, False),
        (999, 502, False),
    ],
)
async def test_statuses(server: Server, code: int, status: int, transient: bool) -> None:
    error = await expect_error(origin(server), f"/status/{code}", status)
    assert error.transient is transient


@pytest.mark.parametrize("href", ["/empty", "/204"])
async def test_empty_body_is_400(server: Server, href: str) -> None:
    await expect_error(origin(server), href, 400)


async def test_oversize_body_is_413(server: Server) -> None:
    config = ImagesConfig(maximum_response_body=100_000)
    server.big_aborted.clear()
    server.big_sent = 0
    await expect_error(origin(server, config), "/big", 413)
    assert await anyio.to_thread.run_sync(server.big_aborted.wait, HANG_SECONDS)
    assert server.big_sent < BIG_TOTAL // 2  # it hung up, long before the end


async def test_a_compressed_answer_is_decoded_anyway(server: Server) -> None:
    assert (await origin(server).fetch("/gzip")).body == IMAGE


async def test_timeout_is_504_transient(server: Server) -> None:
    with pytest.raises(ImageError) as caught:
        await origin(server, timeout=0.3).fetch("/slow-headers")
    assert (caught.value.status, caught.value.message) == (504, errors.UPSTREAM_TIMEOUT)
    assert caught.value.transient


async def test_connection_refused_is_502_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ImageError) as caught:
        await OriginSource(f"http://127.0.0.1:{port}", CONFIG).fetch("/img")
    assert (caught.value.status, caught.value.transient) == (502, True)
