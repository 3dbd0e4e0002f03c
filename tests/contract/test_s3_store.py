"""The S3 store against moto in-process: layout, metadata, conditional writes, pointer cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from handler.commands.invoke import mocked_s3
from handler.entry.settings import Settings
from handler.model import Pointer, Variant
from handler.stores.records import encode_pointer
from handler.stores.s3 import S3Store
from handler.stores.s3_client import reset_s3_client, s3_client
from kit.support import Clock

BUCKET = "variants"
VARIANT = Variant(b"RIFF....WEBPVP8 body", "image/webp", "etag-abc", "optimized")


def pointer(expire_at: float) -> Pointer:
    return Pointer("ab" * 32, "ZXRhZw", '"etag"', 3600, expire_at)


@pytest.fixture
def s3() -> Iterator[Any]:
    with mocked_s3(Settings(bucket=BUCKET)) as client:
        yield client


def count_calls(client: Any) -> list[str]:
    calls: list[str] = []
    client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    return calls


def test_variant_layout_and_metadata(s3: Any) -> None:
    store = S3Store(BUCKET, "site/")
    store.put_variant("hash/640w-75q-webp-p1", VARIANT)

    obj = s3.get_object(Bucket=BUCKET, Key="site/_next/image-variants/hash/640w-75q-webp-p1")
    assert obj["Body"].read() == VARIANT.body
    assert obj["ContentType"] == "image/webp"
    assert obj["CacheControl"] == "public, max-age=31536000, immutable"
    assert obj["Metadata"] == {"etag": "etag-abc", "kind": "optimized"}
    assert S3Store(BUCKET, "site/").get_variant("hash/640w-75q-webp-p1") == VARIANT


def test_pointer_layout_and_round_trip(s3: Any) -> None:
    store = S3Store(BUCKET, "")
    record = pointer(2e9)
    store.put_pointer("k1", record)

    obj = s3.get_object(Bucket=BUCKET, Key="_next/image-pointers/k1")
    assert json.loads(obj["Body"].read())["source_hash"] == record.source_hash
    assert S3Store(BUCKET, "").get_pointer("k1") == record


def test_missing_and_foreign_objects_are_misses(s3: Any) -> None:
    store = S3Store(BUCKET)
    s3.put_object(Bucket=BUCKET, Key="_next/image-variants/foreign", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key="_next/image-pointers/garbled", Body=b"{not json")
    assert store.get_variant("nope") is None
    assert store.get_variant("foreign") is None
    assert store.get_pointer("nope") is None
    assert store.get_pointer("garbled") is None


def test_losing_the_write_race_is_success_and_keeps_the_winner(s3: Any) -> None:
    winner = Variant(b"first", "image/webp", "e1", "optimized")
    S3Store(BUCKET).put_variant("k", winner)
    calls = count_calls(s3)
    S3Store(BUCKET).put_variant("k", Variant(b"second", "image/webp", "e2", "optimized"))
    assert calls == ["PutObject"]  # sent, refused with 412, and that is fine
    assert S3Store(BUCKET).get_variant("k") == winner


def test_conflict_409_is_success_but_other_errors_raise() -> None:
    class Client:
        def __init__(self, code: str) -> None:
            self.code = code

        def put_object(self, **kwargs: Any) -> None:
            assert kwargs["IfNoneMatch"] == "*"
            raise ClientError({"Error": {"Code": self.code}}, "PutObject")

    S3Store(BUCKET, client=Client("ConditionalRequestConflict")).put_variant("k", VARIANT)
    with pytest.raises(ClientError):
        S3Store(BUCKET, client=Client("AccessDenied")).put_variant("k", VARIANT)


def test_unavailable_bucket_raises_for_the_optimizer_to_log(s3: Any) -> None:
    store = S3Store("no-such-bucket")
    with pytest.raises(ClientError):
        store.get_variant("k")
    with pytest.raises(ClientError):
        store.put_variant("k", VARIANT)


def test_a_hit_costs_at_most_two_requests_and_one_when_the_pointer_is_warm(s3: Any) -> None:
    clock = Clock()
    S3Store(BUCKET).put_pointer("p", pointer(clock.now + 60))
    S3Store(BUCKET).put_variant("v", VARIANT)
    store = S3Store(BUCKET, clock=clock)
    calls = count_calls(s3)

    assert store.get_pointer("p") is not None and store.get_variant("v") is not None
    assert calls == ["GetObject", "GetObject"]
    calls.clear()
    assert store.get_pointer("p") is not None and store.get_variant("v") is not None
    assert calls == ["GetObject"]  # the pointer came from memory


def test_pointer_cache_honours_expiry_and_is_bounded(s3: Any) -> None:
    clock = Clock()
    store = S3Store(BUCKET, clock=clock, pointer_cache_size=2)
    calls = count_calls(s3)
    for key in ("a", "b", "c"):
        store.put_pointer(key, pointer(clock.now + 60))
    calls.clear()
    store.get_pointer("c")
    store.get_pointer("b")
    assert calls == []
    store.get_pointer("a")  # evicted: least recently used of three with room for two
    assert calls == ["GetObject"]

    clock.now += 61  # expired in memory: S3 may hold a pointer refreshed by another instance
    s3.put_object(
        Bucket=BUCKET, Key="_next/image-pointers/b", Body=encode_pointer(pointer(clock.now + 60))
    )
    calls.clear()
    assert store.get_pointer("b") == pointer(clock.now + 60)
    assert calls == ["GetObject"]


def test_a_variant_lost_from_the_bucket_is_written_back(s3: Any) -> None:
    store = S3Store(BUCKET)
    store.put_variant("k", VARIANT)
    assert store.get_variant("k") == VARIANT
    s3.delete_object(Bucket=BUCKET, Key="_next/image-variants/k")  # lifecycle, or an operator
    assert store.get_variant("k") is None
    calls = count_calls(s3)
    store.put_variant("k", VARIANT)
    assert calls == ["PutObject"]
    assert store.get_variant("k") == VARIANT


def test_endpoint_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    reset_s3_client()
    try:
        client = s3_client()
        assert client.meta.endpoint_url == "http://127.0.0.1:9"
        assert client.meta.config.s3["addressing_style"] == "path"
        assert s3_client() is client  # one client per process
    finally:
        reset_s3_client()
