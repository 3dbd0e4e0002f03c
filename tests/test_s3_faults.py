"""The Lambda handler against a failing S3: hung, slow, and objects lost behind a warm instance.

moto's S3 server sits behind a loopback ``FaultProxy`` that can hang or slow every answer; each
request must still be answered within its budget, and no invocation may leave S3 work running.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imagegen
import pytest
from fault_proxy import FaultProxy, fault_proxy
from moto.server import ThreadedMotoServer
from support import free_port, s3_at
from test_lambda_e2e import event, lambda_instance, objects

from devtools.invoke import FakeContext, response_body, response_headers
from handler.s3_client import reset_s3_client, s3_client

BUDGET = 10.0
STORE_TIMEOUT = 0.5


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
    proxy.mode = "pass"
    bucket = f"v-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(Bucket=bucket)
    yield {
        "NEXT_IMAGE_BUCKET": bucket,
        "NEXT_IMAGE_PUBLIC_DIR": str(public_dir),
        "NEXT_IMAGE_TIMEOUT": str(BUDGET),
        "NEXT_IMAGE_STORE_TIMEOUT": str(STORE_TIMEOUT),
    }
    proxy.mode = "pass"
    reset_s3_client()  # no pooled connection to a hung proxy survives into the next test


def invoke(handler: Any, query: str = "url=%2Ftest.png&w=640&q=75") -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    response = handler(event(query), FakeContext())
    return response, time.monotonic() - started


def assert_webp_640(response: dict[str, Any], cache: str) -> None:
    assert response["statusCode"] == 200
    assert response_headers(response)["x-nextjs-cache"] == cache
    decoded = imagegen.decode(response_body(response))
    assert (decoded.format, decoded.width, decoded.height) == ("webp", 640, 480)


def test_a_hung_s3_costs_a_transform_not_the_budget(
    proxy: FaultProxy, env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    response, _ = invoke(lambda_instance(env))
    assert_webp_640(response, "MISS")  # stored while S3 answered

    proxy.mode = "hang"
    instance = lambda_instance(env)  # a new instance: nothing in memory, everything asks S3
    response, elapsed = invoke(instance)
    assert_webp_640(response, "MISS")
    # Three store calls give up after STORE_TIMEOUT each, then the breaker skips the store; the
    # invocation also waits for the abandoned calls to end (botocore's 2 s reads, 2 attempts).
    assert elapsed < BUDGET
    time.sleep(0.2)
    assert proxy.hung_connections == 0  # nothing of this invocation still waits on S3
    assert caplog.text.count("store unavailable after 3 failures") == 1

    connections = proxy.connections
    response, elapsed = invoke(instance)
    assert_webp_640(response, "MISS")
    assert elapsed < 1.0  # the breaker is open: straight to transform-and-answer
    assert proxy.connections == connections
    assert caplog.text.count("store unavailable") == 1  # logged once, not per request


def test_a_slow_s3_still_answers_hits(proxy: FaultProxy, env: dict[str, str]) -> None:
    proxy.mode, proxy.delay = "slow", 0.2
    response, _ = invoke(lambda_instance(env))
    assert_webp_640(response, "MISS")
    response, elapsed = invoke(lambda_instance(env))
    assert_webp_640(response, "HIT")
    assert elapsed < BUDGET


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
    response, _ = invoke(lambda_instance(env | {"NEXT_IMAGE_MAX_INLINE_BYTES": "100"}))
    assert response["statusCode"] == 503
    assert response_headers(response)["cache-control"] == "no-store"
