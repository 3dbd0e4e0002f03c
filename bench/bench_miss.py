"""The miss path's cost against raw libvips on the same jobs.

Runs a fixed set of (photo, width, output type) jobs two ways in one run, interleaved:
  service  HTTP GET /_next/image on a real ``next-image serve`` (filesystem store): read the
           public file, hash, sniff, thumbnail, encode, write the variant and pointer, respond;
  raw      read the same file, one pyvips thumbnail, the same encoder call.
Every round gives each photo new bytes (a comment chunk), so every service request is a real
miss. Prints per-job medians and the total ratio service / raw.

Photos: real JPEG/PNG photographs from Debian's ``ukui-wallpapers`` (fetched once with
``apt-get download`` into bench/photos/), else generated ones.

    .venv/bin/python bench/bench_miss.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import httpx
import pyvips

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: this checkout's handler, not the installed one
from handler.contract.config import ImagesConfig  # noqa: E402
from handler.pipeline.transform import encode  # noqa: E402

PHOTOS = Path(__file__).parent / "photos"
PICKS = ("rhythm.jpg", "string.jpg", "calla.png", "goldfish.png")
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


def download_ukui(folder: Path, names: tuple[str, ...]) -> None:
    """Copy ``names`` out of Debian's ukui-wallpapers (real photographs) into ``folder``.

    Raises OSError, CalledProcessError or StopIteration when the package cannot be had.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["apt-get", "download", "ukui-wallpapers"], cwd=tmp, check=True, capture_output=True
        )
        deb = next(Path(tmp).glob("*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        for name in names:
            shutil.copy(Path(tmp) / "usr/share/backgrounds" / name, folder / name)


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


def unique(data: bytes, tag: str) -> bytes:
    """The same picture with different bytes: a JPEG COM segment or a PNG tEXt chunk."""
    payload = tag.encode()
    if data[:2] == b"\xff\xd8":
        return data[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + data[2:]
    chunk = b"tEXt" + b"bench\0" + payload
    crc = struct.pack(">I", zlib.crc32(chunk))
    return data[:33] + struct.pack(">I", len(chunk) - 4) + chunk + crc + data[33:]


def raw(path: Path, width: int, accept: str, config: ImagesConfig) -> bytes:
    data = path.read_bytes()
    image = pyvips.Image.thumbnail_buffer(data, width, height=10_000_000, size="down")
    source_type = "image/jpeg" if path.suffix == ".jpg" else "image/png"
    return encode(image, OUTPUT.get(accept, source_type), 75, config)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        wait_ready(client)
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


def wait_ready(client: httpx.Client) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            client.get("/_next/image")
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the service did not start")


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
