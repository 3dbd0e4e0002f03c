"""End to end over real HTTP: the Lambda handler, boto3 and moto's S3 server (``AWS_ENDPOINT_URL``).

Each handler built here is a fresh Lambda instance (no memory carried over); only S3 persists.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import pyvips

from handler.commands.invoke import FakeContext, response_body, response_headers
from handler.entry.lambda_handler import LambdaHandler
from handler.http.app import OVERSIZE_UNSTORED
from handler.stores.records import decode_pointer, encode_pointer
from handler.stores.s3_client import reset_s3_client, s3_client, s3_source_client
from kit import imagegen
from kit.lambda_events import event, lambda_instance
from kit.lambda_s3 import ASSETS_PREFIX, objects
from kit.support import HANG_SECONDS, free_port

PREFIX = "site/"
WEBP = "image/webp,*/*"


@pytest.fixture
def buckets(endpoint: str) -> dict[str, str]:
    """Fresh variant and asset buckets per test, on the shared server."""
    names = {"NEXT_IMAGE_BUCKET": f"v-{uuid.uuid4().hex[:12]}"}
    names["NEXT_IMAGE_ASSETS_BUCKET"] = f"a-{uuid.uuid4().hex[:12]}"
    for bucket in names.values():
        s3_client().create_bucket(Bucket=bucket)
    return names | {"NEXT_IMAGE_PREFIX": PREFIX, "NEXT_IMAGE_ASSETS_PREFIX": ASSETS_PREFIX}


def upload(env: dict[str, str], path: str, body: bytes) -> None:
    bucket = env["NEXT_IMAGE_ASSETS_BUCKET"]
    s3_client().put_object(Bucket=bucket, Key=ASSETS_PREFIX + path, Body=body)


def s3_calls() -> list[tuple[str, str]]:
    """(operation, key) of every S3 request the store's and the sources' clients make from now
    on, in order."""
    calls: list[tuple[str, str]] = []

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        calls.append((model.name, params.get("Key", "")))

    for client in (s3_client(), s3_source_client()):
        client.meta.events.register("before-parameter-build.s3", record)
    return calls


def test_miss_writes_variant_and_pointer_then_hit_never_reads_the_source(
    buckets: dict[str, str],
) -> None:
    upload(buckets, "photo.jpg", imagegen.jpeg(800, 600))
    bucket = buckets["NEXT_IMAGE_BUCKET"]
    query = "url=%2Fphoto.jpg&w=640&q=75"

    miss = lambda_instance(buckets)(event(query), FakeContext())
    assert miss["statusCode"] == 200
    assert response_headers(miss)["x-nextjs-cache"] == "MISS"
    [variant_key] = objects(bucket, PREFIX + "_next/image-variants/")
    [pointer_key] = objects(bucket, PREFIX + "_next/image-pointers/")
    stored = s3_client().get_object(Bucket=bucket, Key=variant_key)
    assert stored["ContentType"] == "image/webp"
    assert stored["CacheControl"] == "public, max-age=31536000, immutable"
    assert stored["Metadata"] == {"etag": response_headers(miss)["etag"], "kind": "optimized"}
    assert stored["Body"].read() == response_body(miss)

    calls = s3_calls()
    cold = lambda_instance(buckets)  # another instance: nothing in memory
    hit = cold(event(query), FakeContext())
    assert hit["statusCode"] == 200
    assert response_headers(hit)["x-nextjs-cache"] == "HIT"
    assert response_body(hit) == response_body(miss)
    assert calls == [("GetObject", pointer_key), ("GetObject", variant_key)]
    calls.clear()
    assert response_headers(cold(event(query), FakeContext()))["x-nextjs-cache"] == "HIT"
    assert calls == [("GetObject", variant_key)]  # warm: the pointer is kept in memory


def test_a_cold_miss_overlaps_its_writes_and_a_new_width_reads_the_asset_again(
    buckets: dict[str, str],
) -> None:
    body = imagegen.jpeg(800, 600)
    upload(buckets, "photo.jpg", body)
    bucket = buckets["NEXT_IMAGE_BUCKET"]
    put_spans: dict[str, tuple[float, float]] = {}
    both_writing = threading.Barrier(2)  # neither write goes on until the other has started

    def slow_put(model: Any, params: dict[str, Any], context: Any, **_: Any) -> None:
        if model.name == "PutObject":
            context["started"] = time.monotonic()
            both_writing.wait(timeout=HANG_SECONDS)  # one after the other would never pass

    def put_done(model: Any, context: Any, **_: Any) -> None:
        if model.name == "PutObject" and "started" in context:
            kind = next(k for k in ("pointer", "variant") if k in context["key"])
            put_spans[kind] = (context["started"], time.monotonic())

    def remember_key(params: dict[str, Any], context: Any, **_: Any) -> None:
        context["key"] = params.get("Key", "")

    events = s3_client().meta.events
    events.register("before-parameter-build.s3.PutObject", remember_key)
    events.register("before-call.s3.PutObject", slow_put)
    events.register("after-call.s3.PutObject", put_done)
    calls = s3_calls()
    try:
        miss = lambda_instance(buckets)(event("url=%2Fphoto.jpg&w=640&q=75"), FakeContext())
    finally:
        events.unregister("before-call.s3.PutObject", slow_put)
    miss_calls = list(calls)
    assert response_headers(miss)["x-nextjs-cache"] == "MISS"
    [variant_key] = objects(bucket, PREFIX + "_next/image-variants/")
    [pointer_key] = objects(bucket, PREFIX + "_next/image-pointers/")
    # The assets bucket is as near as the variant bucket: its bytes are not copied there.
    assert objects(bucket, PREFIX + "_next/image-sources/") == []
    # A new URL: the pointer, the source, the same bytes under another URL (looked up while the
    # transform is planned), then two writes at once. The source GET checks the size on its
    # headers, so there is no HEAD.
    assert miss_calls[:3] == [
        ("GetObject", pointer_key),
        ("GetObject", ASSETS_PREFIX + "photo.jpg"),
        ("GetObject", variant_key),
    ]
    assert sorted(miss_calls[3:]) == sorted(
        [("PutObject", variant_key), ("PutObject", pointer_key)]
    )
    starts, ends = zip(*put_spans.values(), strict=True)
    assert len(put_spans) == 2 and max(starts) < min(ends)  # the two written together

    calls.clear()
    wider = lambda_instance(buckets)(event("url=%2Fphoto.jpg&w=384&q=75"), FakeContext())
    wider_calls = list(calls)
    assert response_headers(wider)["x-nextjs-cache"] == "MISS"
    assert imagegen.decode(response_body(wider))[:3] == ("webp", 384, 288)
    [new_variant] = set(objects(bucket, PREFIX + "_next/image-variants/")) - {variant_key}
    # A fresh pointer that says no copy was kept: the asset is read again (not the variant
    # bucket first), the variant just found missing is not looked up again, and the pointer is
    # not rewritten.
    assert wider_calls == [
        ("GetObject", pointer_key),
        ("GetObject", new_variant),
        ("GetObject", ASSETS_PREFIX + "photo.jpg"),
        ("PutObject", new_variant),
    ]


def expire_pointer(bucket: str, key: str) -> None:
    pointer = decode_pointer(s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    assert pointer is not None
    aged = dataclasses.replace(pointer, expire_at=0.0)
    s3_client().put_object(Bucket=bucket, Key=key, Body=encode_pointer(aged))


def test_expired_pointer_revalidates_conditionally_and_a_changed_source_gets_a_new_variant(
    buckets: dict[str, str],
) -> None:
    upload(buckets, "photo.jpg", imagegen.jpeg(800, 600))
    bucket = buckets["NEXT_IMAGE_BUCKET"]
    query = "url=%2Fphoto.jpg&w=640&q=75"
    lambda_instance(buckets)(event(query), FakeContext())
    [pointer_key] = objects(bucket, PREFIX + "_next/image-pointers/")

    expire_pointer(bucket, pointer_key)
    calls = s3_calls()
    same = lambda_instance(buckets)(event(query), FakeContext())
    assert same["statusCode"] == 200
    assert response_headers(same)["x-nextjs-cache"] == "STALE"
    assert ("GetObject", ASSETS_PREFIX + "photo.jpg") in calls  # answered 304 by S3
    assert len(objects(bucket, PREFIX + "_next/image-variants/")) == 1  # no new transform
    pointer = decode_pointer(s3_client().get_object(Bucket=bucket, Key=pointer_key)["Body"].read())
    assert pointer is not None and pointer.expire_at > 0

    upload(buckets, "photo.jpg", imagegen.jpeg(800, 400))
    expire_pointer(bucket, pointer_key)
    changed = lambda_instance(buckets)(event(query), FakeContext())
    assert changed["statusCode"] == 200
    decoded = imagegen.decode(response_body(changed))
    assert (decoded.format, decoded.width, decoded.height) == ("webp", 640, 320)
    assert len(objects(bucket, PREFIX + "_next/image-variants/")) == 2
    fresh = lambda_instance(buckets)(event(query), FakeContext())
    assert response_headers(fresh)["x-nextjs-cache"] == "HIT"
    assert response_body(fresh) == response_body(changed)


def test_two_instances_racing_on_one_miss_both_answer_and_one_variant_is_kept(
    buckets: dict[str, str],
) -> None:
    upload(buckets, "photo.jpg", imagegen.jpeg(800, 600))
    instances = [lambda_instance(buckets), lambda_instance(buckets)]
    start = threading.Barrier(2)
    responses: list[dict[str, Any]] = []
    refused: list[str] = []

    def on_put(http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        refused.append(parsed.get("Error", {}).get("Code", ""))

    s3_client().meta.events.register("after-call.s3.PutObject", on_put)

    def run(handle: LambdaHandler) -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())  # Mangum uses the thread's loop
        start.wait()
        responses.append(handle(event("url=%2Fphoto.jpg&w=640&q=75"), FakeContext()))

    threads = [threading.Thread(target=run, args=(handle,)) for handle in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [r["statusCode"] for r in responses] == [200, 200]
    assert response_body(responses[0]) == response_body(responses[1])
    assert len(objects(buckets["NEXT_IMAGE_BUCKET"], PREFIX + "_next/image-variants/")) == 1
    assert "PreconditionFailed" in refused  # the loser's conditional write, taken as success


def test_s3_down_still_answers_miss(
    monkeypatch: pytest.MonkeyPatch, public_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    reset_s3_client()
    env = {"NEXT_IMAGE_BUCKET": "down", "NEXT_IMAGE_PUBLIC_DIR": str(public_dir)}
    try:
        response = lambda_instance(env)(event("url=%2Ftest.png&w=640&q=75"), FakeContext())
    finally:
        reset_s3_client()
    assert response["statusCode"] == 200
    assert response_headers(response)["x-nextjs-cache"] == "MISS"
    decoded = imagegen.decode(response_body(response))
    assert (decoded.format, decoded.width, decoded.height) == ("webp", 640, 480)
    assert "store get_pointer failed" in caplog.text
    # Writes overlap (the source's with the transform, the variant's with the pointer's), so
    # which failure is the third and opens the breaker varies; it opens once.
    assert caplog.text.count("store unavailable after 3 failures in a row") == 1
    assert "Traceback" not in caplog.text  # an outage is a warning, not a stack trace per call


def test_oversize_with_s3_down_is_an_uncached_503(
    monkeypatch: pytest.MonkeyPatch, public_dir: Path
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    reset_s3_client()
    env = {
        "NEXT_IMAGE_BUCKET": "down",
        "NEXT_IMAGE_PUBLIC_DIR": str(public_dir),
        "NEXT_IMAGE_MAX_INLINE_BYTES": "100",
    }
    try:
        response = lambda_instance(env)(event("url=%2Ftest.png&w=640&q=75"), FakeContext())
    finally:
        reset_s3_client()
    assert response["statusCode"] == 503
    assert response_headers(response)["cache-control"] == "no-store"
    assert response_body(response) == OVERSIZE_UNSTORED.encode()


def noisy_png(width: int, height: int) -> bytes:
    """Random pixels from a 256-colour palette: incompressible, so even the quantised PNG output
    stays far above Lambda's cap, yet quick to quantise."""
    index = pyvips.Image.gaussnoise(width, height, sigma=80, mean=128).cast("uchar")
    ramp = pyvips.Image.identity()
    lut = ramp.bandjoin([ramp.invert(), (ramp * 7 % 256).cast("uchar")])
    return bytes(index.maplut(lut).copy(interpretation="srgb").pngsave_buffer(compression=1))


def test_oversize_png_at_3840_redirects_to_the_variant_cloudfront_serves(
    buckets: dict[str, str],
) -> None:
    upload(buckets, "big.png", noisy_png(3840, 2160))
    handle = lambda_instance(buckets)
    response = handle(event("url=%2Fbig.png&w=3840&q=75", accept="*/*"), FakeContext())

    assert response["statusCode"] == 302
    assert len(json.dumps(response)) < 6 * 1024 * 1024
    headers = response_headers(response)
    assert headers["cache-control"] == "public, max-age=14400, must-revalidate"
    assert headers["vary"] == "Accept"
    location = headers["location"]
    assert location.startswith("/_next/image-variants/")

    # CloudFront maps /_next/image-variants/* to the bucket under the prefix: read it that way.
    key = PREFIX + unquote(location.removeprefix("/"))
    served = s3_client().get_object(Bucket=buckets["NEXT_IMAGE_BUCKET"], Key=key)
    assert served["ContentType"] == "image/png"
    assert served["CacheControl"] == "public, max-age=31536000, immutable"
    body = served["Body"].read()
    assert len(body) > 4_400_000
    decoded = imagegen.decode(body)
    assert (decoded.format, decoded.width, decoded.height) == ("png", 3840, 2160)

    calls = s3_calls()
    again = handle(event("url=%2Fbig.png&w=3840&q=75", accept="*/*"), FakeContext())
    assert again["statusCode"] == 302
    assert response_headers(again)["x-nextjs-cache"] == "HIT"
    assert response_headers(again)["location"] == location
    assert [op for op, _ in calls] == ["GetObject"]  # a HIT writes nothing
