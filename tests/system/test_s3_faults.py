"""The Lambda handler against a failing S3: hung, slow, and objects lost behind a warm instance.

moto's S3 server sits behind a loopback ``FaultProxy`` that can hang or slow every answer, or only
one bucket's; each request must still be answered within its budget. A hung store costs one
store timeout, after which the breaker skips it; a slow one only costs time, as a source too.
Counts come from the proxy's log of requests, not from clocks: only a hang reaches a deadline.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError
from moto.server import ThreadedMotoServer

import handler.stores.s3_client
from devtools.fault_proxy import FaultProxy, Logged, Mode, fault_proxy
from handler.commands.invoke import FakeContext, response_body, response_headers
from handler.stores.s3_client import reads_until, reset_s3_client, s3_client, s3_source_client
from kit import imagegen
from kit.lambda_events import event, lambda_instance
from kit.lambda_s3 import ASSETS_PREFIX, objects
from kit.support import HANG_SECONDS, free_port, s3_at, wait_for

BUDGET = HANG_SECONDS  # the request's: only a hang gets near it
STORE_TIMEOUT = 0.5  # for an instance facing a hung or slow store; otherwise only a hang's
SLOW = 3.0  # seconds late: longer than the store client's 2 s read timeout


@pytest.fixture(scope="module")
def proxy() -> Iterator[FaultProxy]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    with fault_proxy(port) as proxy, s3_at(proxy.url):
        yield proxy
    server.stop()


@pytest.fixture
def env(proxy: FaultProxy, public_dir: Path) -> Iterator[dict[str, str]]:
    proxy.mode, proxy.bucket, proxy.delay = "pass", None, 0.0
    bucket = f"v-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(Bucket=bucket)
    yield {
        "NEXT_IMAGE_BUCKET": bucket,
        "NEXT_IMAGE_PUBLIC_DIR": str(public_dir),
        "NEXT_IMAGE_TIMEOUT": str(BUDGET),
        "NEXT_IMAGE_STORE_TIMEOUT": str(HANG_SECONDS),  # a store that answers is waited for
    }
    proxy.mode, proxy.bucket, proxy.delay = "pass", None, 0.0
    proxy.release()
    reset_s3_client()  # no pooled connection to a hung proxy survives into the next test


def facing_a_bad_store(env: dict[str, str]) -> dict[str, str]:
    """The settings of an instance that meets a hung or slow store: a short store timeout."""
    return env | {"NEXT_IMAGE_STORE_TIMEOUT": str(STORE_TIMEOUT)}


def invoke(handler: Any, query: str = "url=%2Ftest.png&w=640&q=75") -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    response = handler(event(query), FakeContext())
    return response, time.monotonic() - started


def assert_webp_640(response: dict[str, Any], cache: str) -> None:
    assert response["statusCode"] == 200
    assert response_headers(response)["x-nextjs-cache"] == cache
    decoded = imagegen.decode(response_body(response))
    assert (decoded.format, decoded.width, decoded.height) == ("webp", 640, 480)


@pytest.fixture
def patient_store_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The store's S3 client without its own 2 s read timeout: a hung call stays hung (no
    retry of its own) until the proxy lets go, so the proxy's log counts store calls exactly."""
    monkeypatch.setattr(handler.stores.s3_client, "S3_READ_TIMEOUT", HANG_SECONDS)
    reset_s3_client()
    s3_client()  # made now: loading boto3's S3 model must not eat into a store call's timeout
    yield
    reset_s3_client()


def test_a_hung_s3_costs_a_transform_not_the_budget(
    proxy: FaultProxy,
    env: dict[str, str],
    patient_store_client: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    response, _ = invoke(lambda_instance(env))
    assert_webp_640(response, "MISS")  # stored while S3 answered

    proxy.mode = "hang"
    # A new instance: nothing in memory, everything asks S3.
    instance = lambda_instance(facing_a_bad_store(env))
    response, _ = invoke(instance)
    assert_webp_640(response, "MISS")
    # The first store call gives up after STORE_TIMEOUT and opens the breaker at once.
    assert caplog.text.count("store unavailable: get_pointer had no answer within 0.5 s") == 1

    wait_for(lambda: proxy.held_by_clients() == 1, "the abandoned call's request to arrive")
    connections = proxy.connections
    response, _ = invoke(instance)
    assert_webp_640(response, "MISS")
    assert proxy.connections == connections  # the breaker is open: straight to transform
    assert caplog.text.count("store unavailable") == 1  # logged once, not per request


def test_a_hung_variants_bucket_costs_one_store_timeout_and_the_answer_does_not_wait(
    proxy: FaultProxy,
    env: dict[str, str],
    patient_store_client: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only the variants bucket is black-holed; the source (the public folder) is readable."""
    bucket = env["NEXT_IMAGE_BUCKET"]
    proxy.mode, proxy.bucket = "hang", bucket
    before = len(proxy.requests)

    def store_requests() -> list[Logged]:
        return [logged for logged in proxy.requests[before:] if logged.bucket == bucket]

    instance = lambda_instance(facing_a_bad_store(env))
    response, _ = invoke(instance)
    assert_webp_640(response, "MISS")  # transformed from the source it could read
    # The answer did not wait for the abandoned call: it is still running, and logged.
    assert "answered with 1 abandoned store call(s) still running" in caplog.text
    # One store call (the pointer's GET) waited for its timeout; then the breaker skipped the
    # store: no variant lookup, no writes. (Its request may reach the proxy after the answer
    # on a loaded machine; it is the only one either way.)
    wait_for(store_requests, "the store's request")
    [paid] = store_requests()
    assert (paid.method, "/_next/image-pointers/" in paid.path) == ("GET", True)
    wait_for(lambda: proxy.held_by_clients() == 1, "the abandoned call to wait on S3")

    response, _ = invoke(instance, "url=%2Ftest.jpg&w=640&q=75")
    assert_webp_640(response, "MISS")
    assert len(store_requests()) == 1  # the breaker is open: nothing asked

    proxy.mode = "pass"
    proxy.release()  # the abandoned call's connection drops; its retry is answered
    wait_for(lambda: proxy.held_by_clients() == 0, "the abandoned store call to end")


def test_a_slow_s3_is_only_slow_for_a_source_in_the_assets_bucket(
    proxy: FaultProxy, env: dict[str, str]
) -> None:
    """S3 answers every request 3 s late (alive, just slow): the store gives up on it (a cache
    can), the source is waited for as long as the request has left (it has no fallback)."""
    assets = f"a-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(Bucket=assets)
    source = imagegen.jpeg(800, 600)
    s3_client().put_object(Bucket=assets, Key=ASSETS_PREFIX + "photo.jpg", Body=source)
    env = env | {"NEXT_IMAGE_ASSETS_BUCKET": assets, "NEXT_IMAGE_ASSETS_PREFIX": ASSETS_PREFIX}
    del env["NEXT_IMAGE_PUBLIC_DIR"]  # the assets bucket is the only source

    proxy.mode, proxy.delay = "slow", SLOW
    before = len(proxy.requests)
    response, _ = invoke(lambda_instance(facing_a_bad_store(env)), "url=%2Fphoto.jpg&w=640&q=75")
    assert_webp_640(response, "MISS")
    reads = [
        (r.method, r.path.split("?")[0]) for r in proxy.requests[before:] if r.bucket == assets
    ]
    assert reads == [("GET", f"/{assets}/{ASSETS_PREFIX}photo.jpg")]  # one attempt, waited for


def test_the_source_client_waits_until_the_deadline_and_no_longer(proxy: FaultProxy) -> None:
    """Each attempt's read timeout is what the deadline leaves (botocore's per-request
    ``read_timeout``), not the client's own 30 s: S3 answering 3 s late misses a deadline 0.3 s
    away, and the retry gets no new time."""
    bucket = f"a-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(Bucket=bucket)
    s3_client().put_object(Bucket=bucket, Key="a.png", Body=b"png")
    proxy.mode, proxy.delay = "slow", SLOW
    try:
        with reads_until(time.monotonic() + 0.3), pytest.raises(ReadTimeoutError):
            s3_source_client().get_object(Bucket=bucket, Key="a.png")
    finally:
        proxy.mode = "pass"
        reset_s3_client()


def test_a_slow_s3_still_answers_hits(proxy: FaultProxy, env: dict[str, str]) -> None:
    proxy.mode, proxy.delay = "slow", 0.2
    response, _ = invoke(lambda_instance(env))
    assert_webp_640(response, "MISS")
    response, _ = invoke(lambda_instance(env))
    assert_webp_640(response, "HIT")


def test_variants_lost_behind_a_warm_instance_are_written_back(
    proxy: FaultProxy, env: dict[str, str]
) -> None:
    bucket = env["NEXT_IMAGE_BUCKET"]
    instance = lambda_instance(env)
    assert_webp_640(invoke(instance)[0], "MISS")
    (variant,) = objects(bucket, "_next/image-variants/")
    s3_client().delete_object(Bucket=bucket, Key=variant)  # lifecycle expiry, or an operator

    assert_webp_640(invoke(instance)[0], "MISS")  # the warm instance notices and re-stores
    assert objects(bucket, "_next/image-variants/") == [variant]
    assert_webp_640(invoke(instance)[0], "HIT")


def test_an_oversize_redirect_always_points_at_an_object_that_exists(
    proxy: FaultProxy, env: dict[str, str]
) -> None:
    bucket = env["NEXT_IMAGE_BUCKET"]
    instance = lambda_instance(env | {"NEXT_IMAGE_MAX_INLINE_BYTES": "100"})
    for _ in range(3):
        response, _ = invoke(instance)
        assert response["statusCode"] == 302
        key = response_headers(response)["location"].removeprefix("/")
        s3_client().head_object(Bucket=bucket, Key=key)  # raises if the redirect would break
        s3_client().delete_object(Bucket=bucket, Key=key)  # S3 loses it behind our back

    proxy.mode = "hang"  # now it cannot be stored: a clear, uncached 503, never a 302
    oversize = facing_a_bad_store(env) | {"NEXT_IMAGE_MAX_INLINE_BYTES": "100"}
    response, _ = invoke(lambda_instance(oversize))
    assert response["statusCode"] == 503
    assert response_headers(response)["cache-control"] == "no-store"


@pytest.mark.parametrize("fault", ["hang", "refuse"])
def test_an_oversize_variant_is_redirected_as_soon_as_s3_answers_again(
    proxy: FaultProxy,
    env: dict[str, str],
    fault: Mode,
    patient_store_client: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The outage opened the breaker, but its cooldown does not keep the 503 going: the
    write an oversize answer needs is tried anyway, and once S3 confirms it the redirect is
    back and the store is used again."""
    caplog.set_level(logging.INFO, logger="handler.stores.guarded")
    bucket = env["NEXT_IMAGE_BUCKET"]
    instance = lambda_instance(facing_a_bad_store(env) | {"NEXT_IMAGE_MAX_INLINE_BYTES": "100"})
    proxy.bucket, proxy.mode = bucket, fault
    response, _ = invoke(instance)
    assert response["statusCode"] == 503  # nowhere to send it from
    assert "store unavailable" in caplog.text  # skipped for the next 10 s

    proxy.mode = "pass"
    proxy.release()
    response, _ = invoke(instance)  # well within the cooldown
    assert response["statusCode"] == 302
    key = response_headers(response)["location"].removeprefix("/")
    s3_client().head_object(Bucket=bucket, Key=key)  # the redirect points at a stored object
    assert "store available again: put_variant confirmed" in caplog.text
    before = len(proxy.requests_to(bucket))
    assert invoke(instance)[0]["statusCode"] == 302
    assert proxy.requests_to(bucket)[before:]  # no longer skipped
