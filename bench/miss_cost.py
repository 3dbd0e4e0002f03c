"""The miss path's cost against raw libvips on the same jobs.

Runs a fixed set of (photo, width, output type) jobs two ways in one run, interleaved:
  service  HTTP GET /_next/image on a real ``next-image serve`` (filesystem store): read the
           public file, hash, sniff, thumbnail, encode, write the variant and pointer, respond;
  raw      read the same file, one pyvips thumbnail, the same encoder call.
Every round gives each photo new bytes (a comment chunk), so every service request is a real
miss. Prints per-job medians and the total ratio service / raw.

Photos: real JPEG/PNG photographs from Debian's ``ukui-wallpapers`` (fetched once with
``apt-get download`` into bench/photos/), else generated ones.

    .venv/bin/python bench/miss_cost.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pyvips

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo
from bench.common import (
    PHOTOS,
    PICKS,
    REPO,
    download_ukui,
    free_port,
    unique,
    wait_answering,
)
from handler.contract.config import ImagesConfig
from handler.pipeline.transform import encode

# (photo, width, Accept) -> output: webp, or the source type when Accept names nothing we make.
JOBS = [
    (photo, width, accept)
    for photo in PICKS
    for width, accept in (
        (640, "image/webp"),
        (1080, "image/webp"),
        (1920, "image/webp"),
        (1080, "*/*"),
    )
] + [("string.jpg", 640, "image/avif"), ("calla.png", 640, "image/avif")]
OUTPUT = {"image/webp": "image/webp", "image/avif": "image/avif"}


def fetch_photos() -> list[Path]:
    if not all((PHOTOS / name).exists() for name in PICKS):
        try:
            download_ukui(PHOTOS, PICKS)
        except (OSError, subprocess.CalledProcessError, StopIteration):
            print("ukui-wallpapers unavailable: using generated photos", file=sys.stderr)
            for name in PICKS:
                noise = pyvips.Image.gaussnoise(3840, 2400, sigma=40, mean=128).cast("uchar")
                image = noise.bandjoin([noise.rot180(), noise.fliphor()]).gaussblur(2)
                image.copy(interpretation="srgb").write_to_file(str(PHOTOS / name))
    return [PHOTOS / name for name in PICKS]


def raw(path: Path, width: int, accept: str, config: ImagesConfig) -> bytes:
    data = path.read_bytes()
    image = pyvips.Image.thumbnail_buffer(data, width, height=10_000_000, size="down")
    source_type = "image/jpeg" if path.suffix == ".jpg" else "image/png"
    return encode(image, OUTPUT.get(accept, source_type), 75, config)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    photos = {p.name: p.read_bytes() for p in fetch_photos()}
    config = ImagesConfig(formats=("image/avif", "image/webp"))
    with tempfile.TemporaryDirectory() as tmp:
        public = Path(tmp) / "public"
        public.mkdir()
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "handler.commands.cli",
                "serve",
                "--port",
                str(port),
                "--public-dir",
                str(public),
                "--store",
                "filesystem",
                "--cache-dir",
                str(Path(tmp) / "cache"),
                "--config",
                '{"formats": ["image/avif", "image/webp"]}',
            ],
            cwd=REPO,  # python -m: this checkout's handler
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            results = run(port, public, photos, config, args.rounds)
        finally:
            server.terminate()
            server.wait()
    report(results)


def run(
    port: int, public: Path, photos: dict[str, bytes], config: ImagesConfig, rounds: int
) -> dict[tuple[str, int, str], tuple[list[float], list[float]]]:
    results: dict[tuple[str, int, str], tuple[list[float], list[float]]] = {
        job: ([], []) for job in JOBS
    }
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        wait_answering(client, "/_next/image", 30, "the service")
        for round_ in range(rounds + 1):  # round 0 warms both sides up and is not counted
            for i, job in enumerate(JOBS):
                photo, width, accept = job
                name = f"r{round_}-{i}-{photo}"
                (public / name).write_bytes(unique(photos[photo], name))
                started = time.perf_counter()
                response = client.get(
                    "/_next/image",
                    params={"url": f"/{name}", "w": width, "q": 75},
                    headers={"accept": accept},
                )
                service = time.perf_counter() - started
                assert (
                    response.status_code == 200 and response.headers["x-nextjs-cache"] == "MISS"
                ), response.text
                started = time.perf_counter()
                raw(public / name, width, accept, config)
                direct = time.perf_counter() - started
                if round_:
                    results[job][0].append(service)
                    results[job][1].append(direct)
    return results


def report(results: dict[tuple[str, int, str], tuple[list[float], list[float]]]) -> None:
    print(f"{'photo':<14}{'w':>6}  {'accept':<11}{'service ms':>11}{'raw ms':>9}{'ratio':>7}")
    total_service = total_raw = 0.0
    for (photo, width, accept), (service, direct) in results.items():
        s, r = statistics.median(service), statistics.median(direct)
        total_service += s
        total_raw += r
        print(f"{photo:<14}{width:>6}  {accept:<11}{s * 1000:>11.1f}{r * 1000:>9.1f}{s / r:>7.3f}")
    print(
        f"total: service {total_service * 1000:.0f} ms, raw {total_raw * 1000:.0f} ms, "
        f"ratio {total_service / total_raw:.3f}"
    )


if __name__ == "__main__":
    main()
