"""Replayed hits on ``next-image serve``: a repeated HIT is sent again as the route sent it,
without the route, and only while the variant is fresh (``handler.http.replay``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips
from starlette.testclient import TestClient

from handler.contract.config import load_images_config
from handler.entry.settings import Settings
from handler.entry.wiring import build_app
from handler.http.replay import REPLAY_SECONDS, RecentHits, ReplayedAnswer
from kit.prometheus import requests_by_label, scrape
from kit.service_app import AVIF, IMAGE, WEBP, Service
from kit.support import Clock


@pytest.fixture
def service(public_dir: Path) -> Iterator[Service]:
    made = Service(public_dir)
    with made.client:
        yield made


def width_of(body: bytes) -> tuple[str, int]:
    image = pyvips.Image.new_from_buffer(body, "")
    return image.get("vips-loader"), image.width


def test_a_repeated_hit_is_replayed_as_the_route_sent_it(service: Service) -> None:
    miss = service.client.get(IMAGE, headers=WEBP)
    hit = service.client.get(IMAGE, headers=WEBP)
    replayed = service.client.get(IMAGE, headers=WEBP)

    assert [r.headers["x-nextjs-cache"] for r in (miss, hit, replayed)] == ["MISS", "HIT", "HIT"]
    assert service.serves == 2  # the third never reached the route
    assert replayed.status_code == 200
    assert replayed.headers.items() == hit.headers.items()  # same names, values and order
    assert replayed.content == hit.content == miss.content
    assert width_of(replayed.content) == ("webpload_buffer", 640)


def test_a_head_repeat_is_replayed_without_a_body(service: Service) -> None:
    service.client.get(IMAGE, headers=WEBP)
    hit = service.client.get(IMAGE, headers=WEBP)
    head = service.client.head(IMAGE, headers=WEBP)
    assert service.serves == 2
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(hit.content))
    assert head.headers.items() == hit.headers.items()


def test_another_accept_a_revalidation_or_a_post_goes_the_whole_way(service: Service) -> None:
    service.client.get(IMAGE, headers=WEBP)
    hit = service.client.get(IMAGE, headers=WEBP)

    avif = service.client.get(IMAGE, headers=AVIF)
    assert service.serves == 3
    assert avif.headers["content-type"] == "image/avif"
    assert width_of(avif.content) == ("heifload_buffer", 640)

    revalidated = service.client.get(IMAGE, headers=WEBP | {"if-none-match": hit.headers["etag"]})
    assert service.serves == 4
    assert revalidated.status_code == 304
    assert revalidated.content == b""

    posted = service.client.post(IMAGE, headers=WEBP)  # Next does not check the method
    assert service.serves == 5
    assert posted.content == hit.content


def test_an_answer_is_kept_no_longer_than_its_variant_is_fresh(service: Service) -> None:
    service.client.get(IMAGE, headers=WEBP)  # MISS at the clock's now: fresh for the TTL
    ttl = load_images_config(None).minimum_cache_ttl
    service.clock.now += ttl - 0.2  # a HIT with 0.2 s of freshness left
    assert service.client.get(IMAGE, headers=WEBP).headers["x-nextjs-cache"] == "HIT"
    assert service.client.get(IMAGE, headers=WEBP).headers["x-nextjs-cache"] == "HIT"
    assert service.serves == 2

    # Now stale, and past the kept answer's 0.2 s too: the route answers, and revalidates.
    service.clock.now += 0.3
    stale = service.client.get(IMAGE, headers=WEBP)
    assert stale.headers["x-nextjs-cache"] == "STALE"
    assert service.serves == 3
    service.client.get(IMAGE, headers=WEBP)  # a STALE answer was not kept
    assert service.serves == 4


def test_a_miss_is_not_kept(service: Service) -> None:
    service.client.get(IMAGE, headers=WEBP)
    second = service.client.get(IMAGE, headers=WEBP)
    assert second.headers["x-nextjs-cache"] == "HIT"
    assert service.serves == 2


def test_replayed_answers_are_observed_like_the_routes(service: Service) -> None:
    for _ in range(3):
        service.client.get(IMAGE, headers=WEBP)
    route, replayed = service.records[1], service.records[2]
    assert replayed["cache"] == route["cache"] == "HIT"
    assert replayed["status"] == route["status"] == 200
    assert replayed["output_bytes"] == route["output_bytes"] > 0
    assert (replayed["url"], replayed["w"], replayed["q"]) == ("/test.jpg", 640, 75)
    assert replayed["stages_ms"] == {}
    assert replayed["total_ms"] >= 0


def test_the_services_metrics_count_replayed_hits(public_dir: Path) -> None:
    client = TestClient(build_app(Settings(public_dir=str(public_dir)), service=True))
    for _ in range(4):
        assert client.get(IMAGE, headers=WEBP).status_code == 200
    assert requests_by_label(scrape(client)) == {("200", "miss"): 1, ("200", "hit"): 3}


def test_lambda_replays_no_hits(public_dir: Path) -> None:
    made = Service(public_dir, service=False)
    assert made.app.state.recent_hits is None
    with made.client as client:
        for _ in range(3):
            client.get(IMAGE, headers=WEBP)
    assert made.serves == 3


SCOPE = {
    "type": "http",
    "method": "GET",
    "path": "/_next/image",
    "query_string": b"url=%2Fa.jpg&w=640&q=75",
    "headers": [(b"accept", b"image/webp")],
}


def answer(size: int) -> ReplayedAnswer:
    return ReplayedAnswer([(b"content-length", str(size).encode())], b"x" * size, {"query": ""})


def scope(query: bytes) -> dict[str, Any]:
    return SCOPE | {"query_string": query}


def test_kept_answers_expire_after_replay_seconds() -> None:
    clock = Clock(0.0)
    answers = RecentHits(clock=clock)
    answers.keep(SCOPE, answer(10), fresh_for=3600)
    clock.now = REPLAY_SECONDS - 0.01
    assert answers.find(SCOPE) is not None
    clock.now = REPLAY_SECONDS
    assert answers.find(SCOPE) is None


def test_kept_answers_stay_within_their_byte_bound() -> None:
    answers = RecentHits(max_bytes=25_000)
    for query in (b"a", b"b", b"c"):
        answers.keep(scope(query), answer(10_000), fresh_for=60)
    assert answers.find(scope(b"a")) is None  # the least recently used went first
    assert answers.find(scope(b"b")) is not None
    assert answers.find(scope(b"c")) is not None
    answers.keep(scope(b"huge"), answer(30_000), fresh_for=60)
    assert answers.find(scope(b"huge")) is None  # larger than the bound: not kept


def test_the_key_is_path_query_and_accept() -> None:
    answers = RecentHits()
    answers.keep(SCOPE, answer(10), fresh_for=60)
    assert answers.find(SCOPE | {"method": "HEAD"}) is not None
    assert answers.find(SCOPE | {"path": "/other/_next/image"}) is None
    assert answers.find(scope(b"url=%2Fa.jpg&w=640&q=76")) is None
    assert answers.find(SCOPE | {"headers": [(b"accept", b"image/avif")]}) is None
    assert answers.find(SCOPE | {"headers": []}) is None
    assert answers.find(SCOPE | {"headers": [(b"accept", b"")]}) is None
    both = [(b"accept", b"image/webp"), (b"accept", b"image/avif")]
    assert answers.find(SCOPE | {"headers": both}) is not None  # the first, as the route reads
    inm = [(b"accept", b"image/webp"), (b"if-none-match", b'"x"')]
    assert answers.find(SCOPE | {"headers": inm}) is None
    assert answers.find(SCOPE | {"method": "POST"}) is None
