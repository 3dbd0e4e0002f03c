"""Fast first view: a slow AVIF miss is answered with WebP for seconds, the AVIF follows.

On ``serve`` the AVIF is produced by a background task; on Lambda by an asynchronous invocation
of the function itself, which boto3 sends here to a loopback server standing in for the Lambda
API (``AWS_ENDPOINT_URL_LAMBDA``), and which is then fed back to the handler as Lambda would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips

from devtools.lambda_api import Invocation, recording_lambda_api
from handler.commands.invoke import FakeContext, function_url_event, response_body, response_headers
from handler.entry.lambda_handler import build_handler
from handler.entry.self_invoke import PRODUCE
from handler.entry.settings import Settings
from kit import imagegen
from kit.avif_first import AVIF_ACCEPT, AVIF_FIRST, FORMATS, QUERY
from kit.support import MakeApp


def decoded(body: bytes) -> tuple[str, int]:
    image = pyvips.Image.new_from_buffer(body, "")
    return image.get("vips-loader"), image.width


def test_a_slow_avif_miss_is_answered_with_webp_briefly_then_the_avif_is_a_hit(
    make_app: MakeApp,
) -> None:
    app = make_app(AVIF_FIRST, fast_first_view=0.01)
    first = app.get(QUERY, accept=AVIF_ACCEPT)
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/webp"
    assert first.headers["cache-control"] == "public, max-age=10, must-revalidate"
    assert first.headers["x-nextjs-cache"] == "MISS"
    assert first.headers["vary"] == "Accept"
    assert decoded(first.content) == ("webpload_buffer", 640)

    app.drain()  # the background AVIF
    then = app.get(QUERY, accept=AVIF_ACCEPT)
    assert then.headers["content-type"] == "image/avif"
    assert then.headers["x-nextjs-cache"] == "HIT"
    assert then.headers["cache-control"] == "public, max-age=14400, must-revalidate"
    assert decoded(then.content) == ("heifload_buffer", 640)
    webp = app.get(QUERY, accept="image/webp,*/*")  # the first view stored a real WebP variant
    assert webp.headers["x-nextjs-cache"] == "HIT"
    assert webp.content == first.content


def test_off_by_default_and_for_avifs_planned_within_the_limit(make_app: MakeApp) -> None:
    for app in (make_app(AVIF_FIRST), make_app(AVIF_FIRST, fast_first_view=30)):
        answer = app.get(QUERY, accept=AVIF_ACCEPT)
        assert answer.headers["content-type"] == "image/avif"
        assert answer.headers["cache-control"] == "public, max-age=14400, must-revalidate"
        assert decoded(answer.content) == ("heifload_buffer", 640)


def test_webp_requests_are_never_changed(make_app: MakeApp) -> None:
    answer = make_app(AVIF_FIRST, fast_first_view=0.01).get(QUERY, accept="image/webp,*/*")
    assert answer.headers["content-type"] == "image/webp"
    assert answer.headers["cache-control"] == "public, max-age=14400, must-revalidate"


@pytest.fixture
def lambda_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Invocation]]:
    with recording_lambda_api() as (url, calls):
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", url)
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "next-image")
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "7")  # a published version, SnapStart
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(name, "testing")
        yield calls


def test_on_lambda_the_avif_comes_from_an_asynchronous_invocation_of_the_function(
    public_dir: Path, tmp_path: Path, lambda_api: list[Invocation]
) -> None:
    settings = Settings(
        public_dir=str(public_dir),
        store="filesystem",
        cache_dir=str(tmp_path / "cache"),
        fast_first_view=0.01,
        images_config=FORMATS,
    )
    handle = build_handler(settings)
    first = handle(function_url_event(QUERY, AVIF_ACCEPT), FakeContext())
    assert first["statusCode"] == 200
    headers = response_headers(first)
    assert headers["content-type"] == "image/webp"
    assert headers["cache-control"] == "public, max-age=10, must-revalidate"
    assert decoded(response_body(first)) == ("webpload_buffer", 640)

    [call] = lambda_api  # made before the response was returned: nothing runs after it
    assert call.path == "/2015-03-31/functions/next-image/invocations?Qualifier=7"
    assert call.kind == "Event"
    payload = call.payload
    assert payload[PRODUCE]["mime_type"] == "image/avif"
    assert payload[PRODUCE]["width"] == 640

    produced = build_handler(settings)(payload, FakeContext())  # Lambda runs the event
    assert produced["produced"] is True
    then = handle(function_url_event(QUERY, AVIF_ACCEPT), FakeContext())
    assert response_headers(then)["content-type"] == "image/avif"
    assert response_headers(then)["x-nextjs-cache"] == "HIT"
    assert decoded(response_body(then)) == ("heifload_buffer", 640)
    assert len(lambda_api) == 1


def test_a_malformed_produce_event_is_refused(public_dir: Path) -> None:
    handle = build_handler(Settings(public_dir=str(public_dir)))
    with pytest.raises(ValueError, match=PRODUCE):
        handle({PRODUCE: {"href": "/test.jpg"}}, FakeContext())


def test_asked_again_before_the_avif_is_stored_the_webp_is_reused_and_one_avif_made(
    make_app: MakeApp, public_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (public_dir / "big.jpg").write_bytes(imagegen.jpeg(2400, 1600))
    app = make_app(AVIF_FIRST, fast_first_view=0.01)
    written: list[str] = []
    put_variant = app.store.put_variant

    def spy(key: str, variant: Any) -> None:
        written.append(variant.content_type)
        put_variant(key, variant)

    monkeypatch.setattr(app.store, "put_variant", spy)
    query = "url=%2Fbig.jpg&w=2048&q=75"  # its AVIF takes about a second: still running below
    first = app.get(query, accept=AVIF_ACCEPT)
    again = app.get(query, accept=AVIF_ACCEPT)
    assert first.headers["content-type"] == again.headers["content-type"] == "image/webp"
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["cache-control"] == "public, max-age=10, must-revalidate"
    app.drain()
    assert written == ["image/webp", "image/avif"]  # the WebP not encoded again, one AVIF
    assert app.get(query, accept=AVIF_ACCEPT).headers["content-type"] == "image/avif"
