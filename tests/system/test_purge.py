"""``next-image purge``: the pointers of some URLs (or all) removed from the filesystem, Redis or
S3 store, so the next request re-checks the source; the matching CloudFront invalidation made
with boto3 through ``AWS_ENDPOINT_URL_CLOUDFRONT``, which ``handler/commands/cloudfront_api.py``
answers.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handler.commands.cli import main
from handler.commands.cloudfront_api import CloudFrontApi, cloudfront_api
from handler.commands.invoke import mocked_s3
from handler.commands.purge import command
from handler.entry.settings import Settings
from handler.http.replay import REPLAY_SECONDS
from handler.model import Pointer, Variant
from handler.request.keys import pointer_key
from handler.stores.filesystem import FilesystemStore
from handler.stores.redis import RedisStore
from handler.stores.s3 import POINTER_MEMORY_SECONDS, S3Store
from kit import imagegen
from kit.support import Clock, MakeApp

BUCKET = "variants"
DISTRIBUTION = "E2PURGETEST"
QUERY = "url=%2Ftest.jpg&w=640&q=75"


def pointer(generation: str = "") -> Pointer:
    return Pointer("ab" * 32, "etag", None, 60, 1e12, generation=generation)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits purge asks for (made instant), in seconds."""
    asked: list[float] = []
    monkeypatch.setattr(command, "wait", asked.append)
    return asked


@pytest.fixture
def cloudfront(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[CloudFrontApi, list[Any]]]:
    applied: list[Any] = []
    with cloudfront_api([DISTRIBUTION], lambda d, paths: applied.append((d, paths))) as api:
        monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDFRONT", api.url)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(name, "testing")
        yield api, applied


def test_a_purged_url_is_checked_at_its_source_again(
    make_app: MakeApp,
    public_dir: Path,
    tmp_path: Path,
    waits: list[float],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = tmp_path / "cache"
    app = make_app(store=FilesystemStore(cache))
    assert app.get(QUERY).headers["x-nextjs-cache"] == "MISS"
    before = app.get(QUERY)
    (public_dir / "test.jpg").write_bytes(imagegen.jpeg(800, 400))  # changed at its source
    assert app.get(QUERY).content == before.content  # the pointer is fresh: a HIT, old bytes

    flags = ["--store", "filesystem", "--cache-dir", str(cache)]
    assert main(["purge", *flags, "--url", "/test.jpg"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("purge: 1 URL: 1 pointer deleted from the filesystem store in ")
    assert waits == [REPLAY_SECONDS]  # the replayed hits (the tier checks each pointer)

    after = app.get(QUERY)
    assert after.headers["x-nextjs-cache"] == "MISS"
    assert imagegen.decode(after.content)[:3] == ("webp", 640, 320)

    assert main(["purge", *flags, "--url", "/test.jpg", "--url", "/other.png"]) == 0
    purged = capsys.readouterr()
    assert "2 URLs: 1 pointer deleted from the filesystem store (1 not stored)" in purged.out
    assert purged.err.startswith("purge: deleting the pointers of 2 URLs from the filesystem")


def test_purge_all_on_redis_leaves_variants_and_other_prefixes(
    redis_url: str, waits: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    store = RedisStore(redis_url, "purge-all/")
    neighbour = RedisStore(redis_url, "purge-other/")  # another site on the same server
    for key in ("a", "b", "c"):
        store.put_pointer(key, pointer())
    neighbour.put_pointer("a", pointer())
    variant = Variant(b"webp", "image/webp", "etag", "optimized")
    store.put_variant("ab/640w", variant)
    flags = ["--store", "redis", "--redis-url", redis_url]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NEXT_IMAGE_PREFIX", "purge-all/")
        assert main(["purge", *flags, "--all"]) == 0
    assert capsys.readouterr().out.startswith("purge: 3 pointers deleted from the redis store")
    assert [store.get_pointer(k) for k in ("a", "b", "c")] == [None, None, None]
    assert neighbour.get_pointer("a") == pointer()
    assert store.get_variant("ab/640w") == variant  # content-addressed: still right
    assert waits == [REPLAY_SECONDS]


def test_purge_on_s3_invalidates_at_cloudfront(
    cloudfront: tuple[CloudFrontApi, list[Any]],
    waits: list[float],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api, applied = cloudfront
    monkeypatch.setenv("NEXT_IMAGE_BUCKET", BUCKET)
    monkeypatch.setenv("NEXT_IMAGE_PREFIX", "site/")
    with mocked_s3(Settings(bucket=BUCKET)) as s3:
        store = S3Store(BUCKET, "site/")
        urls = ["/images/a b.jpg", "https://CDN.example.com/x/../p.png?v=1"]
        for href in ("/images/a b.jpg", "https://cdn.example.com/p.png?v=1", "/kept.jpg"):
            store.put_pointer(pointer_key(href), pointer())
        args = ["purge", "--store", "s3", "--distribution-id", DISTRIBUTION]
        assert main([*args, *(f"--url={url}" for url in urls)]) == 0
        left = s3.list_objects_v2(Bucket=BUCKET, Prefix="site/_next/image-pointers/")
        assert [o["Key"] for o in left["Contents"]] == [
            f"site/_next/image-pointers/{pointer_key('/kept.jpg')}"
        ]
    paths = (
        "/_next/image?url=%2Fimages%2Fa%20b.jpg*",
        "/_next/image?url=https%3A%2F%2FCDN.example.com%2Fx%2F..%2Fp.png%3Fv%3D1*",
    )
    assert applied == [(DISTRIBUTION, paths)]
    [made] = api.invalidations
    out = capsys.readouterr().out
    assert "2 URLs: 2 pointers deleted (the s3 store does not say which existed)" in out
    assert f"CloudFront invalidation {made.id} of 2 paths on {DISTRIBUTION}" in out
    assert waits == [POINTER_MEMORY_SECONDS + REPLAY_SECONDS]


def test_paths_with_a_base_path_and_past_the_wildcard_limit(tmp_path: Path) -> None:
    config = tmp_path / "images.json"
    config.write_text('{"images": {"path": "/shop/_next/image"}, "basePath": "/shop"}')
    settings = Settings(store="s3", bucket=BUCKET, images_config=str(config))

    def plan(*urls: str, every: bool = False) -> command.Plan:
        args = type("Args", (), {"urls": list(urls), "all": every, "distribution_id": "E1"})
        return command.make_plan(args, settings)  # type: ignore[arg-type]

    assert plan("/a*b.png").paths == ("/shop/_next/image?url=%2Fa*",)  # a * ends the path
    assert plan(every=True).paths == ("/shop/_next/image*",)
    many = plan(*(f"/{n}.png" for n in range(command.MAX_WILDCARD_PATHS + 1)))
    assert many.paths == ("/shop/_next/image*",)  # one path instead of 16 wildcards
    assert len(many.keys) == command.MAX_WILDCARD_PATHS + 1


def test_a_failed_invalidation_exits_1(
    cloudfront: tuple[CloudFrontApi, list[Any]],
    tmp_path: Path,
    waits: list[float],
    capsys: pytest.CaptureFixture[str],
) -> None:
    flags = ["--store", "filesystem", "--cache-dir", str(tmp_path)]
    assert main(["purge", *flags, "--all", "--distribution-id", "ENOSUCH"]) == 1
    err = capsys.readouterr().err
    assert "purge: failed: CloudFront invalidation: " in err and "NoSuchDistribution" in err


def test_command_lines_that_cannot_work_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["purge", "--store", "memory", "--all"]) == 2
    assert "the memory store lives in the serving process" in capsys.readouterr().err
    assert main(["purge", "--store", "redis", "--redis-url", "redis://127.0.0.1:9/0", "--all"]) == 2
    assert "the redis store does not answer" in capsys.readouterr().err
    flags = ["--store", "filesystem", "--cache-dir", str(tmp_path)]
    assert main(["purge", *flags, "--url", "ftp://example.com/a.png"]) == 2
    assert "not an http(s) URL" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exits:  # neither --url nor --all
        main(["purge", *flags])
    assert exits.value.code == 2


def test_a_warm_instance_forgets_a_purged_pointer_within_its_memory_bound() -> None:
    clock = Clock()
    with mocked_s3(Settings(bucket=BUCKET)) as s3:
        reader = S3Store(BUCKET, clock=clock)  # a warm Lambda instance
        reader.put_pointer("k", pointer())
        S3Store(BUCKET).delete_pointers(["k"])  # the purge, elsewhere
        assert reader.get_pointer("k") == pointer()  # still in its memory
        clock.now += POINTER_MEMORY_SECONDS + 0.001
        assert reader.get_pointer("k") is None  # asked S3 again
        assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_the_filesystem_store_accounts_a_purge_like_an_eviction(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    empty = store.total_bytes
    store.put_pointer("a", pointer())
    store.put_pointer("b", pointer())
    assert store.delete_all_pointers() == 2
    assert store.total_bytes == empty  # the record and its emptied folder
    assert not (tmp_path / "pointers").exists()
    with pytest.raises(ValueError, match="not a pointer key"):
        store.delete_pointers(["../usage"])


def test_purge_is_never_in_the_function_code_and_loads_only_when_run() -> None:
    from next_image_cdk.bundled_config import bundle_images_config
    from next_image_cdk.construct import FUNCTION_CODE, stage_function_code

    staged = stage_function_code(FUNCTION_CODE, bundle_images_config())
    assert sorted(p.name for p in staged.iterdir()) == ["handler", "next-image-config"]
    assert not list(staged.rglob("purge*"))
    assert not (staged / "handler" / "commands").exists()
    check = (
        "import sys; from handler.commands.cli import main\n"
        "try: main(['purge', '--help'])\nexcept SystemExit: pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('handler.commands.purge')))"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert done.stdout.strip().endswith("[]")
