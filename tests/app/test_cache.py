"""Cache semantics through the real app: HIT/MISS/STALE, revalidation, single-flight."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from kit import imagegen
from kit.configs import remote_config
from kit.support import MakeApp, Route, Upstream, request_headers


def test_miss_hit_stale_hit(make_app: MakeApp, upstream: Upstream) -> None:
    upstream.routes["/img.png"] = Route(body=imagegen.png(800, 600), headers={"ETag": '"v1"'})
    app = make_app(remote_config(upstream))
    query = f"url={upstream.url('/img.png')}&w=640&q=75"
    assert app.get(query).headers["x-nextjs-cache"] == "MISS"
    assert app.get(query).headers["x-nextjs-cache"] == "HIT"
    assert upstream.hits["/img.png"] == 1  # a HIT never touches the source
    app.clock.now += 6
    stale = app.get(query)
    assert stale.headers["x-nextjs-cache"] == "STALE"
    assert imagegen.decode(stale.content)[:3] == ("webp", 640, 480)
    app.drain()
    # The background revalidation asked conditionally and the upstream said 304.
    assert request_headers(upstream)[-1]["if-none-match"] == '"v1"'
    assert app.get(query).headers["x-nextjs-cache"] == "HIT"
    assert upstream.hits["/img.png"] == 2


def test_changed_source_gets_a_new_variant(make_app: MakeApp, upstream: Upstream) -> None:
    upstream.routes["/img.png"] = Route(body=imagegen.png(800, 600))
    app = make_app(remote_config(upstream))
    query = f"url={upstream.url('/img.png')}&w=640&q=75"
    first = app.get(query)
    upstream.routes["/img.png"] = Route(body=imagegen.png(800, 400, colour=(0, 200, 0)))
    app.clock.now += 6
    assert app.get(query).content == first.content  # STALE: the old bytes, at once
    app.drain()
    fresh = app.get(query)
    assert fresh.headers["x-nextjs-cache"] == "HIT"
    assert imagegen.decode(fresh.content)[:3] == ("webp", 640, 320)
    assert fresh.headers["etag"] != first.headers["etag"]


def test_inline_revalidation_for_lambda(make_app: MakeApp, upstream: Upstream) -> None:
    upstream.routes["/img.png"] = Route(body=imagegen.png(800, 600), headers={"ETag": '"v1"'})
    app = make_app(remote_config(upstream), revalidation="inline")
    query = f"url={upstream.url('/img.png')}&w=640&q=75"
    app.get(query)
    upstream.routes["/img.png"] = Route(body=imagegen.png(800, 400), headers={"ETag": '"v2"'})
    app.clock.now += 6
    revalidated = app.get(query)
    assert imagegen.decode(revalidated.content)[:3] == ("webp", 640, 320)
    assert app.get(query).headers["x-nextjs-cache"] == "HIT"


def test_failed_refresh_keeps_serving_with_short_max_age(
    make_app: MakeApp, upstream: Upstream
) -> None:
    upstream.routes["/img.png"] = Route(
        body=imagegen.png(800, 600), headers={"Cache-Control": "max-age=8"}
    )
    app = make_app(remote_config(upstream), max_attempts=1)
    query = f"url={upstream.url('/img.png')}&w=640&q=75"
    assert app.get(query).headers["cache-control"] == "public, max-age=8, must-revalidate"
    upstream.routes["/img.png"] = Route(500, b"down")
    app.clock.now += 9
    assert app.get(query).headers["x-nextjs-cache"] == "STALE"
    app.drain()
    retained = app.get(query)
    assert retained.status_code == 200
    assert retained.headers["x-nextjs-cache"] == "HIT"
    assert retained.headers["cache-control"] == "public, max-age=8, must-revalidate"


def test_errors_are_never_cached(make_app: MakeApp, upstream: Upstream) -> None:
    upstream.routes["/img.png"] = Route(404, b"nope")
    app = make_app(remote_config(upstream))
    query = f"url={upstream.url('/img.png')}&w=640&q=75"
    assert app.get(query).status_code == 404
    upstream.routes["/img.png"] = Route(body=imagegen.png(64, 64))
    assert app.get(query).status_code == 200


def test_concurrent_identical_misses_transform_once(make_app: MakeApp, upstream: Upstream) -> None:
    upstream.routes["/img.png"] = Route(body=imagegen.png(800, 600), delay=0.3)
    app = make_app(remote_config(upstream))
    query = f"url={upstream.url('/img.png')}&w=640&q=75"
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(app.get(query))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.headers["x-nextjs-cache"] for r in results] == ["MISS"] * 3
    assert len({r.content for r in results}) == 1
    assert upstream.hits["/img.png"] == 1


def test_same_bytes_under_two_urls_share_a_variant(make_app: MakeApp, public_dir: Path) -> None:
    (public_dir / "copy.png").write_bytes((public_dir / "test.png").read_bytes())
    app = make_app()
    first = app.get("url=/test.png&w=640&q=75")
    second = app.get("url=/copy.png&w=640&q=75")
    assert second.content == first.content
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers["content-disposition"] == 'attachment; filename="copy.webp"'


def test_accept_variants_are_cached_separately(make_app: MakeApp) -> None:
    app = make_app()
    webp = app.get("url=/test.png&w=640&q=75")
    png = app.get("url=/test.png&w=640&q=75", accept=None)
    assert (webp.headers["content-type"], png.headers["content-type"]) == (
        "image/webp",
        "image/png",
    )
    assert png.headers["x-nextjs-cache"] == "MISS"


def test_two_urls_with_the_same_bytes_revalidate_their_own_pointers(
    make_app: MakeApp, public_dir: Path
) -> None:
    (public_dir / "copy.png").write_bytes((public_dir / "test.png").read_bytes())
    app = make_app(revalidation="inline")
    queries = ["url=/test.png&w=640&q=75", "url=/copy.png&w=640&q=75"]
    for query in queries:
        app.get(query)
    app.clock.now += 14401
    results: dict[str, Any] = {}
    threads = [
        threading.Thread(target=lambda q=q: results.update({q: app.get(q)})) for q in queries
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[q].headers["x-nextjs-cache"] for q in queries] == ["STALE", "STALE"]
    assert [app.get(q).headers["x-nextjs-cache"] for q in queries] == ["HIT", "HIT"]
