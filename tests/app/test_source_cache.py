"""The source cache through the real app: a new width of an image already seen is transformed
from the source bytes the store kept, without asking the upstream again."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from handler.request import freshness
from handler.request.keys import pointer_key
from handler.stores.filesystem import FilesystemStore
from handler.stores.memory import MemoryStore
from handler.stores.records import decode_pointer
from kit import imagegen
from kit.configs import remote_config
from kit.support import MakeApp, Route, Upstream, request_headers


def test_a_new_width_of_a_seen_image_makes_no_upstream_request(
    make_app: MakeApp, upstream: Upstream
) -> None:
    body = imagegen.png(800, 600)
    upstream.routes["/img.png"] = Route(body=body, headers={"ETag": '"v1"'})
    store = MemoryStore()
    app = make_app(remote_config(upstream), store=store)
    url = upstream.url("/img.png")
    assert app.get(f"url={url}&w=640&q=75").headers["x-nextjs-cache"] == "MISS"
    assert store.get_source(hashlib.sha256(body).hexdigest()) == body

    second = app.get(f"url={url}&w=384&q=75")
    assert second.headers["x-nextjs-cache"] == "MISS"
    assert imagegen.decode(second.content)[:3] == ("webp", 384, 288)
    assert app.get(f"url={url}&w=384&q=75", accept="image/avif").status_code == 200
    assert upstream.hits["/img.png"] == 1  # the second width and type came from the kept bytes
    assert second.headers["etag"] == app.get(f"url={url}&w=384&q=75").headers["etag"]


def test_the_source_cache_survives_a_restart_on_the_filesystem_store(
    make_app: MakeApp, upstream: Upstream, tmp_path: Path
) -> None:
    upstream.routes["/img.png"] = Route(body=imagegen.png(800, 600))
    url = upstream.url("/img.png")
    first = make_app(remote_config(upstream), store=FilesystemStore(tmp_path / "cache"))
    assert first.get(f"url={url}&w=640&q=75").status_code == 200
    restarted = make_app(remote_config(upstream), store=FilesystemStore(tmp_path / "cache"))
    restarted.clock.now = first.clock.now
    second = restarted.get(f"url={url}&w=1080&q=75")
    assert second.headers["x-nextjs-cache"] == "MISS"
    assert imagegen.decode(second.content)[:3] == ("webp", 800, 600)  # never enlarged
    assert upstream.hits["/img.png"] == 1


def test_an_expired_pointer_still_asks_the_upstream(make_app: MakeApp, upstream: Upstream) -> None:
    upstream.routes["/img.png"] = Route(body=imagegen.png(800, 600), headers={"ETag": '"v1"'})
    app = make_app(remote_config(upstream), revalidation="inline")
    url = upstream.url("/img.png")
    app.get(f"url={url}&w=640&q=75")
    app.clock.now += 6  # past minimumCacheTTL (5 s): the kept bytes may be out of date
    upstream.routes["/img.png"] = Route(body=imagegen.png(800, 400), headers={"ETag": '"v2"'})
    changed = app.get(f"url={url}&w=384&q=75")
    assert upstream.hits["/img.png"] == 2
    assert imagegen.decode(changed.content)[:3] == ("webp", 384, 192)  # the new bytes
    # The pointer now names the new bytes, and they are kept: the next width is served from them.
    assert app.get(f"url={url}&w=256&q=75").headers["x-nextjs-cache"] == "MISS"
    assert upstream.hits["/img.png"] == 2


def test_kept_bytes_that_do_not_match_their_hash_are_fetched_again(
    make_app: MakeApp, upstream: Upstream
) -> None:
    body = imagegen.png(800, 600)
    upstream.routes["/img.png"] = Route(body=body)
    store = MemoryStore()
    app = make_app(remote_config(upstream), store=store)
    url = upstream.url("/img.png")
    app.get(f"url={url}&w=640&q=75")
    store.put_source(hashlib.sha256(body).hexdigest(), imagegen.png(100, 100))  # damaged
    response = app.get(f"url={url}&w=384&q=75")
    assert imagegen.decode(response.content)[:3] == ("webp", 384, 288)
    assert upstream.hits["/img.png"] == 2


def test_sources_over_the_cap_are_not_kept(
    make_app: MakeApp, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = imagegen.png(800, 600)
    monkeypatch.setattr(freshness, "SOURCE_KEEP_MAX_BYTES", len(body) - 1)
    upstream.routes["/img.png"] = Route(body=body, headers={"ETag": '"v1"'})
    store = MemoryStore()
    app = make_app(remote_config(upstream), store=store)
    url = upstream.url("/img.png")
    app.get(f"url={url}&w=640&q=75")
    assert store.get_source(hashlib.sha256(body).hexdigest()) is None
    assert app.get(f"url={url}&w=384&q=75").status_code == 200
    assert upstream.hits["/img.png"] == 2
    assert "if-none-match" not in request_headers(upstream)[-1]  # a plain fetch, not a refresh


def test_the_public_folders_bytes_are_not_copied_into_the_store(
    make_app: MakeApp, public_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new width reads the file again (as cheap as a kept copy), and never asks the store."""
    store = MemoryStore()
    app = make_app(store=store)
    body = (public_dir / "test.jpg").read_bytes()
    assert app.get("url=%2Ftest.jpg&w=640&q=75").headers["x-nextjs-cache"] == "MISS"
    assert store.get_source(hashlib.sha256(body).hexdigest()) is None
    pointer = store.get_pointer(pointer_key("/test.jpg"))
    assert pointer is not None and pointer.source_kept is False

    asked: list[str] = []
    get_source = store.get_source

    def spy(key: str) -> bytes | None:
        asked.append(key)
        return get_source(key)

    monkeypatch.setattr(store, "get_source", spy)
    second = app.get("url=%2Ftest.jpg&w=384&q=75")
    assert second.headers["x-nextjs-cache"] == "MISS"
    assert imagegen.decode(second.content)[:3] == ("webp", 384, 288)
    assert asked == []


def test_a_refreshed_pointer_keeps_saying_whether_the_source_was_kept(
    make_app: MakeApp, upstream: Upstream
) -> None:
    upstream.routes["/img.png"] = Route(body=imagegen.png(800, 600), headers={"ETag": '"v1"'})
    store = MemoryStore()
    app = make_app(remote_config(upstream), store=store, revalidation="inline")
    url = upstream.url("/img.png")
    app.get(f"url={url}&w=640&q=75")
    app.clock.now += 6  # past minimumCacheTTL: refreshed by a 304
    assert app.get(f"url={url}&w=640&q=75").headers["x-nextjs-cache"] == "STALE"
    refreshed = store.get_pointer(pointer_key(url))
    assert refreshed is not None and refreshed.source_kept is True
    assert refreshed.expire_at > app.clock.now
    assert app.get(f"url={url}&w=384&q=75").status_code == 200
    assert upstream.hits["/img.png"] == 2  # the first fetch and the 304; the new width: kept


def test_a_pointer_written_before_the_flag_reads_as_kept() -> None:
    """Pointers stored by an earlier release still find their kept sources."""
    old = b'{"source_hash":"ab","etag":"e","upstream_etag":null,"max_age":60,"expire_at":1.0}'
    pointer = decode_pointer(old)
    assert pointer is not None and pointer.source_kept is True
