"""Animated GIF/WebP to animated WebP (``NEXT_IMAGE_ANIMATED=webp``) against Next's pass-through.

Next 16.4.6 serves an animation as it is, whatever ``w`` asks for. With ``--animated webp`` the
pipeline resizes every frame and writes animated WebP. For each source and width this prints
the bytes a browser gets either way and what the transform costs:

  source bytes    what Next sends (pass-through)
  WebP bytes      the animated WebP (measured with the caps lifted, so over-cap sources show too)
  ratio           WebP / source
  served          what the default settings send: ``webp``, or ``as is`` when over a cap
                  (500 frames, 100 MP decoded), when the WebP is no smaller than the source,
                  or (uncached) when the transform ran past sharp's 7 s timeout
  transform ms    plan + decode + resize + encode of every frame (the product's
                  ``plan_transform`` + ``run_transform``, the 7 s timeout lifted so that the
                  figure is whole), median of ``--rounds``, jobs interleaved (each round runs
                  every job once, in a rotated order); ``pass-through ms``: Next's decision
  plan s / MiB    the plan's time (one reference core) and memory, what admission control uses
  peak MiB        peak resident growth of the same transform alone in a fresh process (decoded
                  frames over libvips' 100 MB disc threshold live in a temporary file's pages)

Sources: three generated animations (cached in ``--work``): ``shapes``, 40 frames of 480x360,
moving shapes over a noisy gradient (camera-like, dithered); ``screen``, 120 frames of 800x600,
a screen recording (flat page, thin lines, a moving cursor and text); ``sticker``, 24 frames of
240x240 with soft-edged transparency; and ``shapes.webp``, the first as an animated WebP (Q 90).
Real files are added with ``--gif PATH`` (any animated GIF or WebP).

    .venv/bin/python bench/animated.py [--rounds 5] [--widths 640,384] [--gif PATH ...]
        [--work DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyvips

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: this checkout's handler, not the installed one

from handler.contract.config import ImagesConfig  # noqa: E402
from handler.pipeline import animated  # noqa: E402
from handler.pipeline.animated import PASSTHROUGH, AnimatedOptions  # noqa: E402
from handler.pipeline.transform import (  # noqa: E402
    Plan,
    encode,
    plan_transform,
    run_transform,
    setup_libvips,
)

CONFIG = ImagesConfig()
UNTIMED = replace(CONFIG, img_opt_timeout_seconds=0)  # timed runs: no cut at sharp's 7 s
QUALITY = 75
DEFAULTS = AnimatedOptions("webp")
UNCAPPED = AnimatedOptions("webp", max_frames=10**9, max_pixels=10**15)

# Run in a fresh process: one transform's peak resident growth (VmHWM) over the start (VmRSS).
PEAK = """
import sys
sys.path.insert(0, sys.argv[3])
from handler.pipeline.transform import plan_transform, run_transform, setup_libvips
from handler.pipeline.animated import AnimatedOptions
from handler.contract.config import ImagesConfig
setup_libvips()
source = open(sys.argv[1], "rb").read()
def status(name):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(name))
before = status("VmRSS:")
plan = plan_transform(source, width=int(sys.argv[2]), quality=75, mime_type="image/webp",
                      config=ImagesConfig(), animated=AnimatedOptions("webp", 10**9, 10**15))
run_transform(plan, ImagesConfig(img_opt_timeout_seconds=0))
print(status("VmHWM:") - before)
"""


def _stack(frames: list[Any], delay: int) -> Any:
    image = pyvips.Image.arrayjoin(frames, across=1).copy()
    image.set_type(pyvips.GValue.gint_type, "page-height", frames[0].height)
    image.set_type(pyvips.GValue.array_int_type, "delay", [delay] * len(frames))
    image.set_type(pyvips.GValue.gint_type, "loop", 0)
    return image


def shapes(count: int = 40, width: int = 480, height: int = 360) -> Any:
    """Moving shapes over a gradient with grain that changes every frame (camera-like)."""
    xyz = pyvips.Image.xyz(width, height)
    gradient = (xyz[0] * (255 / width)).bandjoin([xyz[1] * (255 / height), 128])
    grain = pyvips.Image.gaussnoise(width, height, sigma=20, mean=0)
    frames = []
    for i in range(count):
        t = i / count * 2 * math.pi
        frame = (gradient + grain.bandjoin([grain, grain]) * (0.5 + 0.5 * math.sin(t))).cast(
            "uchar"
        )
        x, y = int(width / 2 + width / 3 * math.cos(t)), int(height / 2 + height / 3 * math.sin(t))
        frame = frame.draw_circle([255, 220, 0], x, y, 40, fill=True)
        x = (i * 13) % (width - 60)
        frame = frame.draw_rect([0, 60, 200], x, height // 2 - 30, 60, 60, fill=True)
        frames.append(frame.copy(interpretation="srgb"))
    return _stack(frames, 50)


def screen(count: int = 120, width: int = 800, height: int = 600) -> Any:
    """A screen recording: a flat page, a sidebar, lines of text appearing, a moving cursor."""
    page = pyvips.Image.black(width, height, bands=3).new_from_image([245, 245, 245])
    page = page.draw_rect([40, 44, 52], 0, 0, width, 40, fill=True)
    page = page.draw_rect([220, 220, 225], 0, 40, 180, height - 40, fill=True)
    for row in range(12):
        page = page.draw_rect([180, 180, 190], 200, 70 + row * 36, 300 + row * 97 % 250, 14)
    frames = []
    for i in range(count):
        frame = page.copy()
        for row in range(i // 10 % 12):
            length = 10 + (i * 31 + row * 50) % 500
            frame = frame.draw_rect([30, 90, 200], 200, 520 - row * 4, length, 2, fill=True)
        frame = frame.draw_rect([0, 0, 0], 200 + i * 7 % 560, 500, 3, 18, fill=True)
        frame = frame.draw_rect([0, 0, 0], 100 + i * 5 % 600, 100 + i * 3 % 450, 10, 16, fill=True)
        frames.append(frame.copy(interpretation="srgb"))
    return _stack(frames, 100)


def sticker(count: int = 24, width: int = 240, height: int = 240) -> Any:
    """A shaded, bouncing, breathing blob with soft edges on a transparent background."""
    xyz = pyvips.Image.xyz(width, height)
    frames = []
    for i in range(count):
        t = i / count * 2 * math.pi
        cx, cy = width / 2, height / 2 + 20 * math.cos(t)
        radius = 60 + 30 * math.sin(t)
        distance = ((xyz[0] - cx) ** 2 + (xyz[1] - cy) ** 2) ** 0.5
        light = ((xyz[0] - cx + radius / 3) ** 2 + (xyz[1] - cy + radius / 3) ** 2) ** 0.5
        shade = 1 - light / (2 * radius)  # lit from the top left; cast() clips
        rgb = (shade * 255).bandjoin([shade * 80, shade * 120 + 40]).cast("uchar")
        alpha = ((radius - distance) * 64 + 128).cast("uchar")  # soft edge: a few pixels wide
        frames.append(rgb.bandjoin(alpha).copy(interpretation="srgb"))
    return _stack(frames, 40)


GENERATED = {"shapes": shapes, "screen": screen, "sticker": sticker}


def save(name: str, image: Any) -> bytes:
    """``shapes.webp`` is ``shapes`` as an animated WebP source (as uploaded stickers are)."""
    if name.endswith(".webp"):
        return bytes(image.webpsave_buffer(Q=90, effort=2))
    return bytes(image.gifsave_buffer(effort=1))


def sources(work: Path, extra: list[Path]) -> dict[str, Path]:
    """The generated GIFs (made once into ``work``) and the files given."""
    work.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    for name in (*GENERATED, "shapes.webp"):
        path = work / (name if "." in name else f"{name}.gif")
        if not path.exists():
            started = time.perf_counter()
            partial = path.with_suffix(".tmp")
            partial.write_bytes(save(name, GENERATED[name.split(".")[0]]()))
            partial.replace(path)
            print(f"made {path} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        found[name] = path
    for path in extra:
        found[path.name] = path
    return found


@dataclass
class Job:
    name: str
    source: bytes
    path: Path
    width: int
    seconds: list[float] = field(default_factory=list)
    passthrough_seconds: list[float] = field(default_factory=list)
    webp_bytes: int = 0
    served: str = ""
    frames: int = 0
    size: str = ""
    plan_seconds: float = 0.0
    plan_memory: int = 0
    peak: int = 0

    def describe(self) -> None:
        """Frames, size, what the defaults serve, the plan, and the WebP's bytes."""
        header = pyvips.Image.new_from_buffer(self.source, "")
        self.frames = header.get("n-pages") if header.get_typeof("n-pages") else 1
        self.size = f"{header.width}x{header.height}"
        plan = self.plan(UNCAPPED)
        assert isinstance(plan, Plan), f"{self.name} is not an animation libvips can resize"
        self.plan_seconds, self.plan_memory = plan.seconds, plan.memory
        frames = animated.thumbnail(self.source, self.width)
        self.webp_bytes = len(encode(frames, "image/webp", QUALITY, CONFIG))
        served = run_transform(plan, CONFIG)  # with sharp's 7 s timeout, as served
        if not isinstance(self.plan(DEFAULTS), Plan):
            self.served = "as is (over a cap)"
        elif served.transient:
            self.served = "as is, uncached (past 7 s)"
        elif served.kind == "optimized":
            self.served = "webp"
        else:
            self.served = "as is (WebP larger)"

    def plan(self, options: AnimatedOptions) -> Any:
        return plan_transform(
            self.source,
            width=self.width,
            quality=QUALITY,
            mime_type="image/webp",
            config=CONFIG,
            animated=options,
        )

    def run_once(self) -> None:
        started = time.perf_counter()
        plan = self.plan(UNCAPPED)
        run_transform(plan, UNTIMED)
        self.seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        self.plan(PASSTHROUGH)
        self.passthrough_seconds.append(time.perf_counter() - started)

    def measure_peak(self) -> None:
        done = subprocess.run(
            [sys.executable, "-c", PEAK, str(self.path), str(self.width), str(REPO)],
            capture_output=True,
            text=True,
            check=True,
        )
        self.peak = int(done.stdout.strip())

    def row(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "frames": self.frames,
            "size": self.size,
            "w": self.width,
            "source_bytes": len(self.source),
            "webp_bytes": self.webp_bytes,
            "ratio": round(self.webp_bytes / len(self.source), 2),
            "served": self.served,
            "transform_ms": round(statistics.median(self.seconds) * 1000),
            "transform_ms_range": [
                round(min(self.seconds) * 1000),
                round(max(self.seconds) * 1000),
            ],
            "passthrough_ms": round(statistics.median(self.passthrough_seconds) * 1000, 2),
            "plan_seconds": round(self.plan_seconds, 2),
            "plan_mib": round(self.plan_memory / 2**20),
            "peak_mib": round(self.peak / 2**20),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, interleaved [5]")
    parser.add_argument("--widths", default="640,384", help="widths asked for [640,384]")
    parser.add_argument("--gif", type=Path, action="append", default=[], help="a real animation")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "next-image-bench-animated",
        help="where the generated sources are kept",
    )
    parser.add_argument("--no-peak", action="store_true", help="skip the peak memory runs")
    parser.add_argument("--json", action="store_true", help="also one JSON line")
    args = parser.parse_args()
    setup_libvips()
    widths = [int(w) for w in args.widths.split(",")]
    jobs = [
        Job(name, path.read_bytes(), path, width)
        for name, path in sources(args.work, args.gif).items()
        for width in widths
    ]
    load = os.getloadavg()[0]
    for job in jobs:
        job.describe()
        if not args.no_peak:
            job.measure_peak()
    for round_ in range(args.rounds):
        shift = round_ % len(jobs)
        for job in jobs[shift:] + jobs[:shift]:
            job.run_once()
    rows = [job.row() for job in jobs]
    print(
        f"animated WebP against pass-through, q={QUALITY}, {args.rounds} rounds interleaved, "
        f"load average {load:.2f} at the start, {os.cpu_count()} CPUs"
    )
    header = (
        "| source | frames | size | w | source bytes | WebP bytes | ratio | served by default "
        "| transform ms (median) | pass-through ms | plan s | plan MiB | peak MiB |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in rows:
        print(
            f"| {r['source']} | {r['frames']} | {r['size']} | {r['w']} | {r['source_bytes']:,} "
            f"| {r['webp_bytes']:,} | {r['ratio']:.2f} | {r['served']} | {r['transform_ms']:,} "
            f"| {r['passthrough_ms']} | {r['plan_seconds']} | {r['plan_mib']} | {r['peak_mib']} |"
        )
    if args.json:
        print(json.dumps({"load": load, "rounds": args.rounds, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
