"""``next-image serve``'s image route answered in front of FastAPI
(``handler.http.app.NextImageApp``):
the answers of FastAPI's route, byte for byte and header for header, without FastAPI's
middleware and routing; and requests validated once (``handler.http.app.KnownParams``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.testclient import TestClient

from handler.contract.config import load_images_config
from handler.contract.validate import validate_params
from handler.http import app as app_module
from handler.http.app import KnownParams, known_key
from handler.model import ImageParams
from kit.service_app import AVIF, IMAGE, WEBP, Service

Answer = tuple[int, list[tuple[str, str]], bytes]


@pytest.fixture
def pair(public_dir: Path) -> Iterator[tuple[Service, Service]]:
    """The service's app (the front) and Lambda's (FastAPI's route only), each on a store and
    a clock of its own."""
    front, route = Service(public_dir), Service(public_dir, service=False)
    with front.client, route.client:
        yield front, route


def ask(service: Service, method: str, url: str, headers: dict[str, str]) -> Answer:
    response = service.client.request(method, url, headers=headers)
    service.client.portal.call(service.coordinator.drain)  # type: ignore[union-attr]
    return response.status_code, list(response.headers.items()), response.content


def test_the_front_answers_as_fastapis_route(pair: tuple[Service, Service]) -> None:
    front, route = pair
    steps: list[tuple[str, str, dict[str, str]]] = [
        ("GET", IMAGE, WEBP),  # MISS
        ("GET", IMAGE, WEBP),  # HIT
        ("GET", IMAGE, WEBP),  # HIT (replayed, on the service)
        ("HEAD", IMAGE, WEBP),
        ("GET", IMAGE, AVIF),
        ("GET", IMAGE, {}),  # no Accept: the source's type
        ("GET", "/_next/image?url=%2Ftest.png&w=640&q=75", {"accept": "*/*"}),
        ("GET", "/_next/image?url=%2Ftest.jpg&w=641&q=75", WEBP),  # 400: width not allowed
        ("GET", "/_next/image?w=640&q=75", WEBP),  # 400: no url
        ("GET", "/_next/image?url=%2Fmissing.jpg&w=640&q=75", WEBP),  # the upstream's 404
        ("GET", "/_next/image?url=%2Ftest.jpg&w=640&q=75&w=640", WEBP),  # 400: w twice
        ("POST", IMAGE, WEBP),  # Next does not check the method: through FastAPI
        ("GET", "/_next/image/?url=%2Ftest.jpg", WEBP),  # the trailing slash's 308
    ]
    for method, url, headers in steps:
        assert ask(front, method, url, headers) == ask(route, method, url, headers), (method, url)

    etag = dict(ask(route, "GET", IMAGE, WEBP)[1])["etag"]
    for conditional in (WEBP | {"if-none-match": etag}, WEBP | {"if-none-match": '"other"'}):
        assert ask(front, "GET", IMAGE, conditional) == ask(route, "GET", IMAGE, conditional)

    ttl = load_images_config(None).minimum_cache_ttl
    for service in pair:
        service.clock.now += ttl + 1
    stale = ask(front, "GET", IMAGE, WEBP)
    assert stale == ask(route, "GET", IMAGE, WEBP)
    assert dict(stale[1])["x-nextjs-cache"] == "STALE"


def test_a_get_or_head_of_the_image_route_skips_fastapi(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    through = Starlette.__call__

    async def counted(self: Starlette, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            calls.append(f"{scope['method']} {scope['path']}")
        await through(self, scope, receive, send)

    monkeypatch.setattr(Starlette, "__call__", counted)
    service.client.get(IMAGE, headers=WEBP)  # MISS
    service.client.get(IMAGE, headers=AVIF)  # MISS
    service.client.get(IMAGE, headers=WEBP)  # HIT
    service.client.head(IMAGE, headers=WEBP)
    assert calls == []
    service.client.post(IMAGE, headers=WEBP)
    service.client.get("/healthz")
    service.client.get("/_next/image/?url=%2Ftest.jpg")
    assert calls == ["POST /_next/image", "GET /healthz", "GET /_next/image/"]


@pytest.fixture
def service(public_dir: Path) -> Iterator[Service]:
    made = Service(public_dir)
    with made.client:
        yield made


def test_a_failure_in_front_is_fastapis_plain_500_then_raised(
    pair: tuple[Service, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app_module, "image_response", broken)
    answers = []
    for made in pair:
        with pytest.raises(RuntimeError, match="a bug"):
            made.client.get(IMAGE, headers=WEBP)  # raised for the server to log
        quiet = TestClient(made.app, raise_server_exceptions=False)
        response = quiet.get(IMAGE, headers=WEBP)
        answers.append((response.status_code, list(response.headers.items()), response.content))
    assert answers[0] == answers[1]
    assert answers[0][0] == 500
    assert answers[0][2] == b"Internal Server Error"
    assert dict(answers[0][1])["cache-control"] == "no-store"


def counting_validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    validated: list[str] = []

    def counted(query: str, accept: str | None, config: Any) -> ImageParams:
        validated.append(query)
        return validate_params(query, accept, config)

    monkeypatch.setattr(app_module, "validate_params", counted)
    return validated


@pytest.mark.parametrize("service_app", [True, False], ids=["service", "lambda"])
def test_a_request_seen_before_is_not_validated_again(
    public_dir: Path, monkeypatch: pytest.MonkeyPatch, service_app: bool
) -> None:
    made = Service(public_dir, service=service_app)
    validated = counting_validations(monkeypatch)
    with made.client as client:
        for _ in range(3):
            assert client.get(IMAGE, headers=WEBP).status_code == 200
        assert validated == ["url=%2Ftest.jpg&w=640&q=75"]
        client.get(IMAGE, headers=AVIF)  # another Accept: another negotiation
        assert len(validated) == 2
        bad = "/_next/image?url=%2Ftest.jpg&w=641&q=75"
        assert [client.get(bad, headers=WEBP).status_code for _ in range(2)] == [400, 400]
        assert len(validated) == 4  # an invalid request is checked each time
        assert [r["query"] for r in made.records[-2:]] == [bad.partition("?")[2]] * 2


def test_known_params_stay_within_their_byte_bound() -> None:
    known = KnownParams(max_bytes=2_000)
    params = ImageParams("/a.jpg", False, False, 640, 75, "image/webp")
    keys = [(f"url=%2Fa.jpg&w=640&q=75&n={n}".encode(), b"image/webp") for n in range(5)]
    for key in keys:
        known.keep(key, key[0].decode(), params)
    held = [key for key in keys if known.get(key) is not None]
    assert held == keys[-len(held) :]
    assert 0 < len(held) < 5


def test_the_known_key_is_the_raw_query_and_the_first_accept() -> None:
    scope = {
        "query_string": b"url=%2Fa.jpg&w=640&q=75",
        "headers": [
            (b"host", b"one"),
            (b"accept", b"image/avif"),
            (b"accept", b"image/webp"),
            (b"if-none-match", b'"x"'),
        ],
    }
    assert known_key(scope) == (b"url=%2Fa.jpg&w=640&q=75", b"image/avif")
    assert known_key({"headers": []}) == (b"", None)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_an_images_headers_are_starlettes_encoding_of_nexts(service: Service, method: str) -> None:
    """``image_response`` builds the raw headers itself: they are what Starlette's ``Response``
    makes of Next's headers, in Next's order."""
    service.client.get(IMAGE, headers=WEBP)
    response = service.client.request(method, IMAGE, headers=WEBP)
    expected = Response(
        b"",
        headers={
            "Vary": "Accept",
            "Cache-Control": "public, max-age=14400, must-revalidate",
            "ETag": response.headers["etag"],
            "Content-Type": "image/webp",
            "Content-Disposition": 'attachment; filename="test.webp"',
            "Content-Security-Policy": "script-src 'none'; frame-src 'none'; sandbox;",
            "X-Content-Type-Options": "nosniff",
            "X-Nextjs-Cache": "HIT",
            "Content-Length": response.headers["content-length"],
        },
    )
    assert response.headers.raw == expected.raw_headers
    assert int(response.headers["content-length"]) > 0
    assert len(response.content) == (
        0 if method == "HEAD" else int(response.headers["content-length"])
    )


def test_with_opentelemetry_configured_every_request_goes_through_fastapi(
    public_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI's native telemetry (on once a provider is set) then gives each its span."""
    made = Service(public_dir)
    monkeypatch.setattr(made.app._native_telemetry, "enabled", lambda: True)  # type: ignore[attr-defined]
    calls: list[str] = []
    through = Starlette.__call__

    async def counted(self: Starlette, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            calls.append(scope["path"])
        await through(self, scope, receive, send)

    monkeypatch.setattr(Starlette, "__call__", counted)
    with made.client as client:
        assert client.get(IMAGE, headers=WEBP).status_code == 200
        assert client.get(IMAGE, headers=WEBP).headers["x-nextjs-cache"] == "HIT"
    assert calls == ["/_next/image", "/_next/image"]


def test_known_params_hold_a_catalogue_of_15000_requests() -> None:
    """A working set cycled in order larger than the bound would miss every time (each request
    evicting the next one asked): the default holds 15,000 typical ones with room to spare."""
    known = KnownParams()
    keys = [
        (f"url=%2Fbench%2Flarge%2Fp{n:05d}.jpg&w=1080&q=75".encode(), b"image/webp,*/*")
        for n in range(15_000)
    ]
    params = ImageParams("/bench/large/p00000.jpg", False, False, 1080, 75, "image/webp")
    for key in keys:
        known.keep(key, key[0].decode(), params)
    assert all(known.get(key) is not None for key in keys)
