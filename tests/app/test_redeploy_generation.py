"""A redeploy's generation: pointers written before it are revalidated before they are trusted.

Two optimizers share one store, as the instances of two deploys share the variants bucket: the
first writes under generation ``g1``, the second runs as ``g2``. Its first request for an image
the first one stored asks the source with a conditional request: unchanged, the stored variant
is served and no transform runs; changed, a new variant is made. Variants are reused across
deploys (content-addressed).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from handler.pipeline.transform import run_transform
from handler.stores.memory import MemoryStore
from handler.stores.records import decode_pointer, encode_pointer
from kit import imagegen
from kit.configs import remote_config
from kit.support import MakeApp, Route, request_headers
from kit.upstream_server import Server as Upstream


@pytest.fixture
def transforms(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The widths of every transform that ran (``run_transform`` as the optimizer calls it)."""
    ran: list[int] = []

    def counting(plan: Any, *args: Any, **kwargs: Any) -> Any:
        ran.append(plan.width)
        return run_transform(plan, *args, **kwargs)

    monkeypatch.setattr("handler.request.transforms.run_transform", counting)
    return ran


def deploys(make_app: MakeApp, upstream: Upstream) -> tuple[Any, Any, str]:
    """The same store and clock behind a first deploy (``g1``) and a second (``g2``)."""
    store = MemoryStore()
    config = remote_config(upstream, minimumCacheTTL=3600)
    first = make_app(config, store=store, revalidation="inline", deploy_generation="g1")
    second = make_app(config, store=store, revalidation="inline", deploy_generation="g2")
    second.clock.now = first.clock.now
    return first, second, f"url={upstream.url('/img.png')}&w=640&q=75"


def test_an_unchanged_source_costs_one_conditional_request_and_no_transform(
    make_app: MakeApp, upstream: Upstream, transforms: list[int]
) -> None:
    upstream.routes["/img.png"] = Route(body=imagegen.png(800, 600), headers={"ETag": '"v1"'})
    first, second, query = deploys(make_app, upstream)
    made = first.get(query)
    assert made.headers["x-nextjs-cache"] == "MISS"
    assert first.get(query).headers["x-nextjs-cache"] == "HIT"  # fresh, this generation
    assert (upstream.hits["/img.png"], transforms) == (1, [640])

    after = second.get(query)  # the pointer is fresh for an hour, but of generation g1
    assert after.headers["x-nextjs-cache"] == "STALE"
    assert after.content == made.content and after.headers["etag"] == made.headers["etag"]
    assert upstream.hits["/img.png"] == 2
    assert request_headers(upstream)[-1]["if-none-match"] == '"v1"'  # answered 304
    assert transforms == [640]  # the stored variant, not made again

    # The refreshed pointer is this generation's: trusted from now on, the source not asked.
    assert second.get(query).headers["x-nextjs-cache"] == "HIT"
    assert upstream.hits["/img.png"] == 2
    assert first.get(query).headers["x-nextjs-cache"] == "STALE"  # and g1 would ask again


def test_a_changed_source_gets_a_new_variant_on_the_first_request_after_the_deploy(
    make_app: MakeApp, upstream: Upstream, transforms: list[int]
) -> None:
    upstream.routes["/img.png"] = Route(body=imagegen.png(800, 600), headers={"ETag": '"v1"'})
    first, second, query = deploys(make_app, upstream)
    old = first.get(query)
    upstream.routes["/img.png"] = Route(
        body=imagegen.png(800, 400, colour=(0, 200, 0)), headers={"ETag": '"v2"'}
    )
    assert first.get(query).content == old.content  # without a redeploy: fresh, a HIT

    new = second.get(query)
    assert imagegen.decode(new.content)[:3] == ("webp", 640, 320)
    assert new.headers["etag"] != old.headers["etag"]
    assert request_headers(upstream)[-1]["if-none-match"] == '"v1"'  # asked conditionally
    assert transforms == [640, 640]
    assert second.get(query).headers["x-nextjs-cache"] == "HIT"


def test_a_new_width_after_a_deploy_reads_the_source_not_the_kept_copy(
    make_app: MakeApp, upstream: Upstream, transforms: list[int]
) -> None:
    """A fresh pointer's kept source stands for the URL's bytes only within its generation."""
    upstream.routes["/img.png"] = Route(body=imagegen.png(800, 600), headers={"ETag": '"v1"'})
    first, second, query = deploys(make_app, upstream)
    first.get(query)
    upstream.routes["/img.png"] = Route(
        body=imagegen.png(800, 400, colour=(0, 200, 0)), headers={"ETag": '"v2"'}
    )
    wider = query.replace("w=640", "w=750")
    assert imagegen.decode(first.get(wider).content)[:3] == ("webp", 750, 563)  # the kept bytes
    assert imagegen.decode(second.get(wider).content)[:3] == ("webp", 750, 375)  # the new ones


def test_pointers_record_their_generation_and_older_records_read_as_none() -> None:
    older = b'{"source_hash":"ab","etag":"e","upstream_etag":null,"max_age":60,"expire_at":1.0}'
    pointer = decode_pointer(older)
    assert pointer is not None and pointer.generation == ""  # written before generations
    tagged = replace(pointer, generation="g7")
    assert decode_pointer(encode_pointer(tagged)) == tagged
