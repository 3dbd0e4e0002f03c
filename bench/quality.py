"""Encoder settings against Next's on the miss path: speed, bytes and quality at once (issue #10).

Every configuration runs the product's own miss, ``pipeline.plan_transform`` then
``run_transform`` from the source bytes, with only the WebP or AVIF saver swapped: "next" is the
pipeline's saver as it is (sharp's parameters); a candidate is the same call with a few parameters
changed. Each output is decoded and scored against the same thumbnail kept uncompressed (the
pipeline's own thumbnail call, captured before any encoder), with SSIMULACRA2 (the ``ssimulacra2``
package, a Python port of libjxl's tool) and SSIM (scikit-image, Gaussian window, sigma 1.5).

Timing is interleaved: each repetition runs every job with every configuration back to back, in
an order rotated per job and repetition; each sample runs ``--parallel`` copies of the miss at
once (2: a loaded service on 2 cores) and counts wall time / copies; the median of the
repetitions is a job's time. Scores are deterministic, so they are computed once per output after
timing (in ``--score-workers`` processes) and kept in bench/photos/quality-scores.json: the first
run spends most of its time on the Python SSIMULACRA2, later runs only time.

A configuration is ``FORMAT[/TOKEN...]``: ``webp`` or ``avif`` alone is Next's saver; tokens
change it: ``eN`` effort, ``Q+N``/``Q-N`` libvips Q offset (AVIF's Q is already Next's
``q*50/80``), ``smart`` WebP smart_subsample, ``420``/``444`` AVIF chroma, ``name=value`` any
other saver parameter (``preset=photo``), ``cN`` libvips concurrency for the whole miss (default:
libvips' own, as in the product).

    .venv/bin/python bench/quality.py [--photos 7] [--reps 3] [--widths 640 1080 1920 3840]
        [--configs webp webp/e2 avif avif/e2] [--parallel 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import numpy.typing as npt
import pyvips

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo
from bench.common import PHOTOS, UKUI_PICKS, download_ukui
from handler.contract.config import ImagesConfig
from handler.formats import AVIF, WEBP, pipeline_version
from handler.pipeline import transform as pipeline

# overload's pictures (the package's richest) and its dark gradient, where banding shows first.
PICKS = (*UKUI_PICKS, "focal-ubuntukylin.png")
SCORES = PHOTOS / "quality-scores.json"
TYPES = {"webp": WEBP, "avif": AVIF}
# The study's nearest misses (bench/README.md): effort 2 is the cheapest step down for both.
DEFAULT_CONFIGS = ("webp", "webp/e2", "avif", "avif/e2")
# No timeout: a 3640 px AVIF under load must not turn into the original-bytes fallback.
CONFIG = dataclasses.replace(ImagesConfig(), img_opt_timeout_seconds=0)

Pixels = npt.NDArray[np.uint8]


# Shorthands for saver parameters; any other one is written ``name=value``.
ALIASES: dict[str, tuple[str, Any]] = {
    "smart": ("smart_subsample", True),  # WebP: sharp RGB -> YUV conversion
    "420": ("subsample_mode", "on"),  # AVIF chroma 4:2:0
    "444": ("subsample_mode", "off"),  # AVIF chroma 4:4:4, Next's
}


@dataclasses.dataclass(frozen=True)
class Config:
    spec: str
    content_type: str
    params: tuple[tuple[str, Any], ...] = ()  # saver parameters that replace Next's
    dq: int = 0  # added to Next's libvips Q
    concurrency: int | None = None  # libvips threads per miss; None: libvips' default

    @property
    def is_next(self) -> bool:
        return "/" not in self.spec

    def overrides(self, base: dict[str, Any]) -> dict[str, Any]:
        """The saver's parameters that differ from Next's ``base`` ones."""
        return {**dict(self.params), **({"Q": base["Q"] + self.dq} if self.dq else {})}


def parse_config(spec: str) -> Config:
    fmt, *tokens = spec.split("/")
    if fmt not in TYPES:
        raise argparse.ArgumentTypeError(f"{spec}: the format is webp or avif")
    params: list[tuple[str, Any]] = []
    dq, concurrency = 0, None
    for token in tokens:
        name, equals, value = token.partition("=")
        if token[:1] == "e" and token[1:].isdigit():
            params.append(("effort", int(token[1:])))
        elif token[:1] == "c" and token[1:].isdigit():
            concurrency = int(token[1:])
        elif token[:1] == "Q" and token[1:2] in ("+", "-") and token[2:].isdigit():
            dq = int(token[1:])
        elif token in ALIASES:
            params.append(ALIASES[token])
        elif equals and name.isidentifier() and value:
            params.append((name, _value(value)))
        else:
            raise argparse.ArgumentTypeError(f"{spec}: unknown token {token!r}")
    return Config(spec, TYPES[fmt], tuple(params), dq, concurrency)


def _value(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    return int(text) if text.lstrip("-").isdigit() else text


class _Recorder:
    """Stands in for an image: records the save call a pipeline saver makes."""

    def __init__(self) -> None:
        self.call: tuple[str, dict[str, Any]] = ("", {})

    def __getattr__(self, method: str) -> Callable[..., bytes]:
        def save(**kwargs: Any) -> bytes:
            self.call = (method, kwargs)
            return b""

        return save


def next_call(content_type: str, quality: int) -> tuple[str, dict[str, Any]]:
    """The pyvips method and parameters of the product's saver: candidates start from them."""
    recorder = _Recorder()
    pipeline.encode(recorder, content_type, quality, CONFIG)
    return recorder.call


def make_saver(config: Config, quality: int) -> Callable[[Any, int, ImagesConfig], bytes]:
    method, base = next_call(config.content_type, quality)
    kwargs = {**base, **config.overrides(base)}

    def save(image: Any, _quality: int, _config: ImagesConfig) -> bytes:
        return bytes(getattr(image, method)(**kwargs))

    return save


def miss(source: bytes, width: int, quality: int, content_type: str) -> pipeline.Transformed:
    """The product's miss: header, decision, thumbnail and save, from the source bytes."""
    plan = pipeline.plan_transform(
        source, width=width, quality=quality, mime_type=content_type, config=CONFIG
    )
    assert isinstance(plan, pipeline.Plan), plan
    return pipeline.run_transform(plan, CONFIG)


def reference(source: bytes, width: int, quality: int) -> Pixels:
    """The pipeline's thumbnail before any encoder, as 8-bit sRGB."""
    kept: list[Pixels] = []

    def capture(image: Any, _quality: int, _config: ImagesConfig) -> bytes:
        kept.append(rgb(image))
        return b""

    with mock.patch.dict(pipeline._SAVERS, {WEBP: capture}):
        miss(source, width, quality, WEBP)
    return kept[0]


def rgb(image: Any) -> Pixels:
    """An image as an H x W x 3 8-bit sRGB array (alpha, opaque in these photos, flattened)."""
    if image.hasalpha():
        image = image.flatten()
    data = image.colourspace("srgb").cast("uchar").write_to_memory()
    return np.frombuffer(data, dtype=np.uint8).reshape(image.height, image.width, 3)


# --- timing -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    photo: str
    width: int  # as asked; the output is narrower for a narrower source (withoutEnlargement)
    content_type: str


def timed(
    pool: ThreadPoolExecutor,
    source: bytes,
    job: Job,
    saver: Callable[[Any, int, ImagesConfig], bytes],
    concurrency: int,
    quality: int,
    parallel: int,
) -> tuple[float, bytes]:
    """Seconds per miss with ``parallel`` copies running at once, and the output."""
    pyvips.concurrency_set(concurrency)
    with mock.patch.dict(pipeline._SAVERS, {job.content_type: saver}):
        started = time.perf_counter()
        futures = [
            pool.submit(miss, source, job.width, quality, job.content_type) for _ in range(parallel)
        ]
        results = [f.result() for f in futures]
        elapsed = time.perf_counter() - started
    assert all(r.kind == "optimized" for r in results), job
    return elapsed / parallel, results[0].body


def run(
    sources: dict[str, bytes], jobs: list[Job], configs: list[Config], args: argparse.Namespace
) -> tuple[dict[tuple[Job, str], list[float]], dict[tuple[Job, str], bytes]]:
    default_concurrency = pyvips.concurrency_get()
    savers = {c.spec: make_saver(c, args.quality) for c in configs}
    times: dict[tuple[Job, str], list[float]] = {}
    bodies: dict[tuple[Job, str], bytes] = {}
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        for rep in range(args.reps + 1):  # repetition 0 warms up and is not counted
            for i, job in enumerate(jobs if rep else jobs[: len(jobs) // len(sources)]):
                mine = [c for c in configs if c.content_type == job.content_type]
                turn = (rep + i) % len(mine)
                for config in mine[turn:] + mine[:turn]:
                    seconds, body = timed(
                        pool,
                        sources[job.photo],
                        job,
                        savers[config.spec],
                        config.concurrency or default_concurrency,
                        args.quality,
                        args.parallel,
                    )
                    if rep == 0:
                        continue
                    times.setdefault((job, config.spec), []).append(seconds)
                    if bodies.setdefault((job, config.spec), body) != body:
                        print(f"note: {config.spec} {job} is not deterministic", file=sys.stderr)
            if rep:
                print(f"repetition {rep}/{args.reps} done, load {load()}", file=sys.stderr)
    pyvips.concurrency_set(default_concurrency)
    return times, bodies


# --- scores -----------------------------------------------------------------------------------


def score(ref: Pixels, body: bytes) -> tuple[float, float]:
    """SSIMULACRA2 and SSIM of an encoded output against the uncompressed thumbnail."""
    from PIL import Image
    from skimage import metrics
    from ssimulacra2 import compute_ssimulacra2

    dist = rgb(pyvips.Image.new_from_buffer(body, ""))
    files = []
    for pixels in (ref, dist):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PPM")
        buffer.seek(0)
        files.append(buffer)
    ssimu2 = float(compute_ssimulacra2(*files))
    structural_similarity: Any = metrics.structural_similarity  # untyped
    ssim = structural_similarity(
        ref,
        dist,
        channel_axis=2,
        data_range=255,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    return round(ssimu2, 4), round(float(ssim), 6)


def scores(
    sources: dict[str, bytes], bodies: dict[tuple[Job, str], bytes], args: argparse.Namespace
) -> dict[tuple[Job, str], tuple[float, float]]:
    """Every output's scores, from the cache or computed in worker processes."""
    cache: dict[str, list[float]] = json.loads(SCORES.read_text()) if SCORES.exists() else {}
    photo_ids = {name: hashlib.sha256(data).hexdigest()[:16] for name, data in sources.items()}

    def key(job: Job, body: bytes) -> str:
        digest = hashlib.sha256(body).hexdigest()[:32]
        return f"{pipeline_version()}/{photo_ids[job.photo]}/{job.width}/{digest}"

    missing = {key(job, body): (job, body) for (job, _), body in bodies.items()}
    missing = {k: v for k, v in missing.items() if k not in cache}
    if missing:
        print(f"scoring {len(missing)} outputs (cached for later runs)...", file=sys.stderr)
        by_reference: dict[tuple[str, int], list[tuple[str, bytes]]] = {}
        for k, (job, body) in missing.items():
            by_reference.setdefault((job.photo, job.width), []).append((k, body))
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.score_workers, mp_context=spawn) as workers:
            for (photo, width), outputs in by_reference.items():
                ref = reference(sources[photo], width, args.quality)
                futures = {k: workers.submit(score, ref, body) for k, body in outputs}
                for k, future in futures.items():
                    cache[k] = list(future.result())
                SCORES.write_text(json.dumps(cache, sort_keys=True))
    marks: dict[tuple[Job, str], tuple[float, float]] = {}
    for (job, spec), body in bodies.items():
        ssimu2, ssim = cache[key(job, body)]
        marks[job, spec] = (ssimu2, ssim)
    return marks


# --- report -----------------------------------------------------------------------------------


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclasses.dataclass(frozen=True)
class Figures:
    """What one run measured: per (job, config spec) times, outputs and scores."""

    jobs: list[Job]
    configs: list[Config]
    times: dict[tuple[Job, str], list[float]]
    bodies: dict[tuple[Job, str], bytes]
    marks: dict[tuple[Job, str], tuple[float, float]]

    def ms(self, job: Job, spec: str) -> float:
        return statistics.median(self.times[job, spec]) * 1000


def totals(figures: Figures, content_type: str, quality: int) -> list[dict[str, Any]]:
    """Each configuration of one format against Next's saver, summed over that format's jobs."""
    jobs = [j for j in figures.jobs if j.content_type == content_type]
    mine = [c for c in figures.configs if c.content_type == content_type]
    method, base_params = next_call(content_type, quality)

    def sums(spec: str) -> tuple[float, int, float, float]:
        return (
            sum(figures.ms(j, spec) for j in jobs),
            sum(len(figures.bodies[j, spec]) for j in jobs),
            statistics.fmean(figures.marks[j, spec][0] for j in jobs),
            statistics.fmean(figures.marks[j, spec][1] for j in jobs),
        )

    base = next(c for c in mine if c.is_next).spec
    ms0, bytes0, s2_0, ssim0 = sums(base)
    rows = []
    for config in mine:
        ms, size, s2, ssim = sums(config.spec)
        worst = min(figures.marks[j, config.spec][0] - figures.marks[j, base][0] for j in jobs)
        rows.append(
            {
                "config": config.spec,
                "speed": round(ms0 / ms, 3),
                "bytes": round(size / bytes0, 4),
                "ssimulacra2": round(s2, 3),
                "d_ssimulacra2": round(s2 - s2_0, 3),
                "worst_d_ssimulacra2": round(worst, 3),
                "ssim": round(ssim, 5),
                "d_ssim": round(ssim - ssim0, 5),
                "free": size <= bytes0 and s2 >= s2_0,  # costs no bytes and no SSIMULACRA2
                "target": ms0 / ms >= 1.25 and size <= bytes0 and s2 >= s2_0,
                "saver": method,
                "params": {**base_params, **config.overrides(base_params)},
                "concurrency": config.concurrency,
            }
        )
    return rows


def report(figures: Figures, sources: dict[str, bytes], quality: int) -> dict[str, Any]:
    """Prints the per-job and total tables; returns the totals and frontier for the JSON line."""
    print(f"{'photo':<22}{'w':>5} {'config':<28}{'bytes':>9}{'ms':>8}{'ssimu2':>8}{'ssim':>8}")
    for job in figures.jobs:
        width = min(job.width, pyvips.Image.new_from_buffer(sources[job.photo], "").width)
        for config in (c for c in figures.configs if c.content_type == job.content_type):
            k = (job, config.spec)
            print(
                f"{job.photo:<22}{width:>5} {label(config.spec):<28}{len(figures.bodies[k]):>9}"
                f"{figures.ms(*k):>8.0f}{figures.marks[k][0]:>8.2f}{figures.marks[k][1]:>8.4f}"
            )
    print(
        f"\n{'config':<28}{'speed':>7}{'bytes':>7}{'ssimu2':>8}{'d-ssimu2':>9}{'worst':>7}"
        f"{'ssim':>8}{'d-ssim':>8}  target"
    )
    rows: list[dict[str, Any]] = []
    frontier: dict[str, dict[str, Any]] = {}
    for content_type in dict.fromkeys(c.content_type for c in figures.configs):
        mine = totals(figures, content_type, quality)
        rows += mine
        for row in mine:
            print(
                f"{label(row['config']):<28}{row['speed']:>7.3f}{row['bytes']:>7.3f}"
                f"{row['ssimulacra2']:>8.2f}{row['d_ssimulacra2']:>+9.2f}"
                f"{row['worst_d_ssimulacra2']:>+7.2f}{row['ssim']:>8.4f}{row['d_ssim']:>+8.4f}  "
                f"{'-' if '/' not in row['config'] else 'met' if row['target'] else 'no'}"
            )
        best = max((r for r in mine if r["free"]), key=lambda r: r["speed"])  # Next's at least
        frontier[content_type] = {"config": best["config"], "speed": best["speed"]}
    print(
        "speed: Next's summed miss time / this one's; bytes: summed bytes / Next's; worst: the "
        "lowest per-job SSIMULACRA2 difference; target: speed >= 1.25, bytes <= 1, mean "
        "SSIMULACRA2 >= Next's"
    )
    for content_type, best in frontier.items():
        print(
            f"fastest at bytes <= and SSIMULACRA2 >= Next's, {content_type}: "
            f"{best['config']} ({best['speed']:.3f}x)"
        )
    return {"totals": rows, "frontier": frontier}


def label(spec: str) -> str:
    return spec if "/" in spec else f"{spec} (next)"


# --- main -------------------------------------------------------------------------------------


def fetch(count: int) -> dict[str, bytes]:
    names = PICKS[:count]
    missing = tuple(n for n in names if not (PHOTOS / n).exists())
    if missing:
        try:
            download_ukui(PHOTOS, missing)
        except (OSError, subprocess.CalledProcessError, StopIteration) as exc:
            raise SystemExit(f"could not fetch ukui-wallpapers: {exc}") from None
    return {n: (PHOTOS / n).read_bytes() for n in names}


def main() -> None:
    parser = argparse.ArgumentParser(
        description="WebP/AVIF savers against Next's: speed, bytes, quality"
    )
    parser.add_argument("--photos", type=int, default=7, help=f"how many of {len(PICKS)}")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--widths", type=int, nargs="+", default=[640, 1080, 1920, 3840])
    parser.add_argument("--quality", type=int, default=75)
    parser.add_argument(
        "--configs", type=parse_config, nargs="+", default=list(map(parse_config, DEFAULT_CONFIGS))
    )
    parser.add_argument("--parallel", type=int, default=2, help="copies of each miss at once")
    parser.add_argument("--score-workers", type=int, default=2)
    args = parser.parse_args()
    pyvips.cache_set_max(0)  # as the entry points run it
    configs: list[Config] = list({c.spec: c for c in args.configs}.values())
    for fmt, content_type in TYPES.items():  # Next's saver is the yardstick of its format
        if any(c.content_type == content_type for c in configs) and not any(
            c.content_type == content_type and c.is_next for c in configs
        ):
            configs.insert(0, parse_config(fmt))
    load_before = load()
    sources = fetch(args.photos)
    formats = list(dict.fromkeys(c.content_type for c in configs))
    jobs = [Job(p, w, f) for p in sources for w in args.widths for f in formats]
    times, bodies = run(sources, jobs, configs, args)
    figures = Figures(jobs, configs, times, bodies, scores(sources, bodies, args))
    summary = report(figures, sources, args.quality)
    print(f"load average: before {load_before}, after {load()}")
    print(
        json.dumps(
            {
                "photos": list(sources),
                "widths": args.widths,
                "quality": args.quality,
                "reps": args.reps,
                "parallel": args.parallel,
                "libvips": pipeline_version(),
                "loadavg_before": load_before,
                "loadavg_after": load(),
                **summary,
            }
        )
    )


if __name__ == "__main__":
    main()
