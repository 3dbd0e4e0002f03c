"""``next-image warm``: the variants it stores are the ones requests then hit, in every store.

Real parts only: images made with pyvips, worker processes, the filesystem store, moto's S3
server; each warmed variant is then asked of the real app (or the Lambda handler) as a browser
would, and must come back a HIT of the right format and width.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient

from handler.commands.cli import main
from handler.commands.invoke import FakeContext, response_body, response_headers
from handler.commands.warm.images import Job
from handler.entry.settings import Settings
from handler.entry.wiring import build_app
from handler.stores.s3_client import s3_client
from kit import imagegen
from kit.lambda_events import event, lambda_instance
from kit.support import HANG_SECONDS, Route, Upstream, free_port, s3_at, wait_for
from kit.upstream_server import serve
from layers.build_layer import requirement_name, runtime_requirements

CONFIG = json.dumps({"images": {"formats": ["image/avif", "image/webp"]}})
WIDTHS = (64, 256)
# What Chrome sends for an <img>: it negotiates AVIF, the config's first choice.
CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
SUMMARY = re.compile(
    r"warm: (\d+) of (\d+) variants of (\d+) images in [\d.]+ s on (\d+) process(?:es)?: "
    r"(\d+) made \(([\d,]+) bytes\), (\d+) skipped \(already stored\), (\d+) refreshed, "
    r"(\d+) failed"
)


def summary(out: str) -> dict[str, int]:
    match = SUMMARY.search(out)
    assert match, out
    names = ("done", "variants", "images", "processes", "made", "bytes", "skipped")
    values = [int(v.replace(",", "")) for v in match.groups()]
    return dict(zip((*names, "refreshed", "failed"), values, strict=True))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """Three small images (one in a folder, under a name a URL must escape) and a corrupt one."""
    public = tmp_path / "public"
    (public / "deals").mkdir(parents=True)
    (public / "a.jpg").write_bytes(imagegen.jpeg(300, 200))
    (public / "b.png").write_bytes(imagegen.png(200, 150, alpha=True))
    (public / "deals" / "50% off?.webp").write_bytes(imagegen.webp(120, 90))
    (public / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not a jpeg" * 40)
    (public / "robots.txt").write_text("User-agent: *\n")
    return public


IMAGES = {"/a.jpg": (300, 200), "/b.png": (200, 150), "/deals/50%25 off%3F.webp": (120, 90)}


def warm(site: Path, cache: Path, *flags: str) -> int:
    base = ["warm", "--public-dir", str(site), "--store", "filesystem", "--cache-dir", str(cache)]
    return main([*base, "--config", CONFIG, *flags])


def test_warmed_variants_are_hits_for_requests(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    assert warm(site, cache, "--widths", "64,256", "--jobs", "2") == 1  # broken.jpg failed

    out, err = capsys.readouterr()
    counts = summary(out)
    # 4 images (robots.txt is none) x 2 formats x 2 widths; broken.jpg's 4 fail
    assert counts | {"bytes": 0} == {
        "done": 16,
        "variants": 16,
        "images": 4,
        "processes": 2,
        "made": 12,
        "bytes": 0,
        "skipped": 0,
        "refreshed": 0,
        "failed": 4,
    }
    assert counts["bytes"] > 0
    failures = [line for line in err.splitlines() if line.startswith("warm: failed: ")]
    assert len(failures) == 4 and all("/broken.jpg" in line for line in failures)

    settings = Settings(
        public_dir=str(site), store="filesystem", cache_dir=str(cache), images_config=CONFIG
    )
    app = build_app(settings)
    with TestClient(app) as client:
        for url, (source_width, _) in IMAGES.items():
            for width in WIDTHS:
                for accept, fmt in ((CHROME, "avif"), ("image/webp,*/*", "webp")):
                    # a query spelled another way (urlencode's +) names the same image
                    query = urlencode({"url": url, "w": width, "q": 75})
                    response = client.get(f"/_next/image?{query}", headers={"accept": accept})
                    assert response.status_code == 200, (url, width, response.text)
                    assert response.headers["x-nextjs-cache"] == "HIT", (url, width, accept)
                    assert response.headers["content-type"] == f"image/{fmt}"
                    decoded = imagegen.decode(response.content)
                    assert (decoded.format, decoded.width) == (fmt, min(width, source_width))

    assert warm(site, cache, "--widths", "64,256") == 1
    again = summary(capsys.readouterr().out)
    assert (again["made"], again["skipped"], again["failed"]) == (0, 12, 4)


def test_a_rerun_makes_only_what_is_missing(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What an interrupted run left undone is what the next run makes."""
    cache = tmp_path / "cache"
    (site / "broken.jpg").unlink()
    assert warm(site, cache, "--widths", "64", "--jobs", "1") == 0
    assert summary(capsys.readouterr().out)["made"] == 6
    assert warm(site, cache, "--widths", "64,256") == 0
    counts = summary(capsys.readouterr().out)
    assert (counts["made"], counts["skipped"], counts["failed"]) == (6, 6, 0)


def test_ctrl_c_stops_the_run_and_the_next_run_continues(site: Path, tmp_path: Path) -> None:
    with serve() as upstream:
        held = threading.Event()
        command = held_command(site, tmp_path / "cache", upstream, held)
        process = started_and_held(command, tmp_path / "cache", upstream)
        process.send_signal(signal.SIGINT)
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.extend(iter(process_stderr(process))))
        reader.start()
        wait_for(lambda: any("finishing the variants in hand" in line for line in seen), "Ctrl-C")
        held.set()  # only now can the variant in hand end: the run cannot have finished first
        out = process_stdout(process)
        reader.join(timeout=HANG_SECONDS)
        assert process.wait(timeout=HANG_SECONDS) == 130, "".join(seen)
        err = "".join(seen)
        assert "interrupted; run it again to continue" in err
        first = summary(out)
        assert first["done"] < first["variants"]

        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    second = summary(done.stdout)
    assert second["skipped"] >= max(first["made"], 1)  # what was stored before Ctrl-C
    assert second["made"] + second["skipped"] == second["variants"]


def test_a_worker_killed_stops_the_run_instead_of_hanging_it(site: Path, tmp_path: Path) -> None:
    with serve() as upstream:
        held = threading.Event()
        command = held_command(site, tmp_path / "cache", upstream, held)
        process = started_and_held(command, tmp_path / "cache", upstream)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        workers = [
            pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        os.kill(int(workers[0]), signal.SIGKILL)  # as the kernel's OOM killer would
        out, err = process.communicate(timeout=HANG_SECONDS)
        held.set()
    assert process.returncode == 1, err
    assert "a worker process died (out of memory?); run it again to continue" in err
    assert summary(out)["done"] < summary(out)["variants"]


def held_command(site: Path, cache: Path, upstream: Upstream, held: threading.Event) -> list[str]:
    """One worker through the small images, then an image from the origin whose answer waits
    for ``held``, then three photo-like JPEGs: the run stops there until the test lets it on."""
    (site / "broken.jpg").unlink()
    for index in range(3):
        (site / f"photo{index}.jpg").write_bytes(imagegen.noise_jpeg(1200, 900, seed=index))
    held_image = imagegen.jpeg(1300, 1000)
    upstream.routes["/held.jpg"] = Route(
        body=held_image, headers={"Content-Type": "image/jpeg"}, gate=held
    )
    urls = cache.parent / "urls.txt"
    photos = [f"/photo{index}.jpg" for index in range(3)]
    urls.write_text("\n".join(["/a.jpg", "/b.png", "/held.jpg", *photos]) + "\n")
    warm = [sys.executable, "-m", "handler.commands.cli", "warm", "--public-dir", str(site)]
    warm += ["--urls", str(urls), "--origin", upstream.url(""), "--jobs", "1"]
    return [*warm, "--store", "filesystem", "--cache-dir", str(cache), "--widths", "640,828,1200"]


def started_and_held(command: list[str], cache: Path, upstream: Upstream) -> subprocess.Popen[str]:
    """The run, once it has stored a pointer and a variant in full (a write in progress is a
    hidden temporary file) and its worker waits for the held image."""
    env = os.environ | {"NEXT_IMAGE_FETCH_TIMEOUT": str(HANG_SECONDS)}  # held as long as needed
    with sigint_not_ignored():
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )

    def stored(kind: str) -> list[Path]:
        files = (cache / kind).rglob("*")
        return [p for p in files if p.is_file() and not p.name.startswith(".")]

    def waiting() -> bool:
        assert process.poll() is None, process.communicate()
        return bool(upstream.hits.get("/held.jpg") and stored("pointers") and stored("variants"))

    wait_for(waiting, "the run storing, then waiting for the held image")
    return process


@contextmanager
def sigint_not_ignored() -> Iterator[None]:
    """SIGINT handled in this process while a child starts, so that the child gets Python's
    Ctrl-C. A suite run from a background job of a script (``make test &``) has SIGINT ignored,
    a child inherits that, and Python then keeps it ignored: the run would never see Ctrl-C."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def process_stderr(process: subprocess.Popen[str]) -> IO[str]:
    assert process.stderr is not None
    return process.stderr


def process_stdout(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.read()


def test_an_s3_assets_prefix_into_the_s3_store(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "NEXT_IMAGE_BUCKET": f"v-{uuid.uuid4().hex[:12]}",
        "NEXT_IMAGE_PREFIX": "site/",
        "NEXT_IMAGE_ASSETS_BUCKET": f"a-{uuid.uuid4().hex[:12]}",
        "NEXT_IMAGE_ASSETS_PREFIX": "_assets/",
    }
    client = s3_client()
    for bucket in (env["NEXT_IMAGE_BUCKET"], env["NEXT_IMAGE_ASSETS_BUCKET"]):
        client.create_bucket(Bucket=bucket)
    uploads = {
        "img/a b.jpg": imagegen.jpeg(300, 200),
        "_next/static/media/logo.0a1b2c.png": imagegen.png(100, 100),
        "robots.txt": b"User-agent: *\n",
    }
    for key, body in uploads.items():
        client.put_object(Bucket=env["NEXT_IMAGE_ASSETS_BUCKET"], Key="_assets/" + key, Body=body)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert main(["warm", "--store", "s3", "--widths", "64,640", "--jobs", "2"]) == 0
    counts = summary(capsys.readouterr().out)
    assert (counts["images"], counts["made"], counts["failed"]) == (2, 4, 0)

    handler = lambda_instance(env)  # a fresh Lambda instance: nothing in memory
    for src, width, source_width in (("/img/a b.jpg", 640, 300), ("/img/a b.jpg", 64, 300)):
        query = urlencode({"url": src, "w": width, "q": 75})
        response = handler(event(query), FakeContext())
        assert response["statusCode"] == 200, response
        assert response_headers(response)["x-nextjs-cache"] == "HIT"
        decoded = imagegen.decode(response_body(response))
        assert (decoded.format, decoded.width) == ("webp", min(width, source_width))
    static = urlencode({"url": "/_next/static/media/logo.0a1b2c.png", "w": 64, "q": 75})
    assert response_headers(handler(event(static), FakeContext()))["x-nextjs-cache"] == "HIT"


def test_a_list_of_urls(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listed = tmp_path / "urls.txt"
    listed.write_text("# images of the home page\n/a.jpg\n\nhttps://example.com/b.jpg\n/a.jpg\n")
    cache = str(tmp_path / "cache")
    flags = ["--public-dir", str(site), "--store", "filesystem", "--cache-dir", cache]
    assert main(["warm", *flags, "--urls", str(listed), "--widths", "64"]) == 1
    out, err = capsys.readouterr()
    counts = summary(out)
    assert (counts["images"], counts["made"], counts["failed"]) == (2, 1, 1)
    refused = 'https://example.com/b.jpg w=64 q=75 image/webp: 400 "url" parameter is not allowed'
    assert f"warm: failed: {refused}" in err


def test_a_public_folder_into_redis(
    site: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (site / "broken.jpg").unlink()
    prefix = f"{uuid.uuid4().hex[:8]}/"
    monkeypatch.setenv("NEXT_IMAGE_PREFIX", prefix)
    flags = ["--public-dir", str(site), "--store", "redis", "--redis-url", redis_url]
    assert main(["warm", *flags, "--widths", "256"]) == 0
    assert summary(capsys.readouterr().out)["made"] == 3

    settings = Settings(public_dir=str(site), store="redis", redis_url=redis_url, prefix=prefix)
    with TestClient(build_app(settings)) as client:
        response = client.get("/_next/image?url=%2Fa.jpg&w=256&q=75", headers={"accept": CHROME})
    assert response.headers["x-nextjs-cache"] == "HIT"
    assert imagegen.decode(response.content).width == 256


def test_an_assets_bucket_that_cannot_be_listed_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NEXT_IMAGE_ASSETS_BUCKET", "assets")
    with s3_at(f"http://127.0.0.1:{free_port()}"):  # nothing listens there
        assert main(["warm", "--store", "filesystem", "--cache-dir", str(tmp_path)]) == 2
    assert "cannot list s3://assets/" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--store", "memory"], "the memory store ends with the run"),
        (["--store", "filesystem", "--widths", "500"], "widths [500] are not in the config"),
        (["--store", "filesystem", "--qualities", "80"], "qualities [80] are not allowed"),
    ],
)
def test_a_command_line_that_cannot_work_exits_2(
    site: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    command = ["warm", "--public-dir", str(site), "--cache-dir", str(tmp_path / "c"), *flags]
    assert main(command) == 2
    assert message in capsys.readouterr().err


def test_nothing_to_warm_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["warm", "--store", "filesystem", "--cache-dir", str(tmp_path)]) == 2
    assert "nothing to warm" in capsys.readouterr().err


def test_query_is_what_next_default_loader_writes() -> None:
    """encodeURIComponent: everything but letters, digits and -_.!~*'() escaped, as UTF-8."""
    job = Job("/deals/50%25 off%3F (1)!~*'ü.webp", 640, 75, "image/webp")
    assert job.query == "url=%2Fdeals%2F50%2525%20off%253F%20(1)!~*'%C3%BC.webp&w=640&q=75"


def test_the_progress_bar_stays_out_of_the_lambda_layers() -> None:
    """tqdm is a dependency of the command, never of the function: no layer installs it."""
    layers = runtime_requirements()
    assert "tqdm" not in {requirement_name(r) for reqs in layers.values() for r in reqs}
