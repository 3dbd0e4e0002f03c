"""Fast first view: what the first visitor of a page of AVIF misses waits, with it and without.

For every repetition, interleaved (off, then on), a fresh ``next-image serve --store memory``
that negotiates AVIF (``formats: [avif, webp]``) is started on a free port, without
``--fast-first-view`` ("off", Next's behaviour) or with ``--fast-first-view 0.5`` ("on"), and
given its own copy of the photos (new bytes per server: every first request is a miss):

  first view   for each (photo, w in 640/1080/1920/3840), one after another, a browser's request
               (``Accept: image/avif,image/webp,*/*``): latency, type, bytes, Cache-Control.
               Off must answer AVIF; on may answer WebP, then with ``max-age=10``.
  second view  once the background AVIFs are done, the same requests again: each must be an
               AVIF HIT. "drain" is the time from the last first view to the last AVIF HIT; "AVIF
               after", per WebP first view, the time from its answer to its AVIF HIT: an upper
               bound (the page's later first views come in between).

The first views come one after another, as fast as answered: a page's images, and each
background AVIF shares the CPU with the WebP first views after it. ``--isolated`` waits for an
idle server (no transform running or waiting) before each first view instead: one image at a
time, and "AVIF after" is then exact (the wait for idle after its WebP).

Waiting for the background AVIFs: by default (``--poll metrics``) the server's ``/metrics``
gauges are read until no transform runs or waits, then each URL is asked once (and again every
``--poll-interval`` until it is AVIF, at most ``--poll-max`` seconds). Asking the URL itself
while its AVIF is still being made is not free: such a request is another fast first view, a
WebP encoded again and another AVIF started. ``--poll requests`` does that on purpose (only the
oldest URL still waiting, every ``--poll-interval``) and counts the WebP answers.

Every body is decoded with pyvips and checked (type, width = min(w, photo width)). After the
servers are stopped, each WebP first view and its AVIF (w up to ``--score-max-width``, 1920:
the Python SSIMULACRA2 takes ~30 s for a 3840 px image) are scored with SSIMULACRA2 (the
``ssimulacra2`` package) against the same thumbnail uncompressed; bytes are compared at every w.

Photos: ``bench.overload``'s set (ukui-wallpapers, every other one upscaled to 5120 px; cached in
bench/photos/overload) or ``--photos DIR``. The server is ``python -m handler.commands.cli serve``
from ``--repo`` (default: this checkout; a ``git worktree`` of a commit keeps a run away from files
being edited). Prints a row per server, a row per w with off and on side by side, and one JSON line
with every figure and the load average.

    .venv/bin/python bench/first_view.py [--reps 2] [--fast-first-view 0.5] [--poll requests]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo
from bench.common import (
    CACHE,
    REPO,
    Photo,
    Target,
    prepare_photos,
    print_table,
    start_server,
    stop_server,
    unique,
    wait_ready,
)

WIDTHS = (640, 1080, 1920, 3840)
ACCEPT = "image/avif,image/webp,*/*"  # what a browser sends for an <img>, reduced
AVIF, WEBP = "image/avif", "image/webp"
GAUGES = ("next_image_transforms_running", "next_image_transforms_queued")
IDLE_SAMPLES = 2  # consecutive idle /metrics reads, 100 ms apart, before the second view
MODES = ("off", "on")


@dataclass
class View:
    """One answer: ``end`` is time.monotonic() when its body was read."""

    status: int
    seconds: float
    end: float
    content_type: str = ""
    cache_control: str = ""
    x_cache: str = ""
    size: int = 0
    body: bytes = field(default=b"", repr=False)
    got: str = ""  # what the body decoded as: loader and width
    ok: bool = False


@dataclass
class Item:
    photo: Photo
    width: int
    file: str
    first: View
    second: View | None = None
    webp_polls: int = 0  # requests answered WebP while waiting for the AVIF
    idle_after: float | None = None  # --isolated: first answer to no transform left

    @property
    def avif_after(self) -> float | None:
        """First answer to AVIF: exact with --isolated, else an upper bound (the second view)."""
        if self.idle_after is not None:
            return self.idle_after
        return self.second.end - self.first.end if self.second else None


async def get(client: httpx.AsyncClient, file: str, width: int) -> View:
    started = time.monotonic()
    try:
        response = await client.get(
            "/_next/image",
            params={"url": f"/{file}", "w": width, "q": 75},
            headers={"accept": ACCEPT},
        )
    except httpx.HTTPError as exc:
        end = time.monotonic()
        return View(0, end - started, end, content_type=type(exc).__name__)
    end = time.monotonic()
    return View(
        response.status_code,
        end - started,
        end,
        response.headers.get("content-type", ""),
        response.headers.get("cache-control", ""),
        response.headers.get("x-nextjs-cache", ""),
        len(response.content),
        response.content,
    )


async def busy(client: httpx.AsyncClient) -> float:
    """Transforms running or waiting for a slot, from the server's own gauges."""
    text = (await client.get("/metrics")).text
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.split(" ", 1)[0] in GAUGES
    )


async def wait_idle(client: httpx.AsyncClient, deadline: float) -> None:
    idle = 0
    while idle < IDLE_SAMPLES and time.monotonic() < deadline:
        idle = idle + 1 if await busy(client) == 0 else 0
        await asyncio.sleep(0.1)


async def until_avif(
    client: httpx.AsyncClient, item: Item, interval: float, deadline: float
) -> None:
    """Ask again until the answer is AVIF (or the deadline): the second view."""
    while True:
        view = await get(client, item.file, item.width)
        item.second = view
        if view.content_type == AVIF or time.monotonic() >= deadline:
            return
        item.webp_polls += view.content_type == WEBP
        await asyncio.sleep(interval)


async def run_server(
    mode: str, rep: int, photos: list[Photo], args: argparse.Namespace
) -> dict[str, Any]:
    """One fresh server: the first views in order, then the second views."""
    flags = ("--fast-first-view", str(args.fast_first_view)) if mode == "on" else ()
    target = Target(mode, args.repo, (sys.executable, "-m", "handler.commands.cli"), (), flags)
    with tempfile.TemporaryDirectory(prefix="first-view-") as tmp_name:
        tmp = Path(tmp_name)
        public = tmp / "public"
        public.mkdir()
        files: dict[str, Photo] = {}
        for photo in [*photos, photos[0]]:  # the last one: warm-up
            name = f"{mode}-r{rep}-{len(files)}-{photo.name}"
            (public / name).write_bytes(unique(photo.data, name))
            files[name] = photo
        *names, warm = files
        server = start_server(target, public, tmp)
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{server.port}", timeout=90
            ) as client:
                await wait_ready(client, server)
                # Libraries loaded and the pace learned once, as on a server already running.
                await get(client, warm, WIDTHS[0])
                await wait_idle(client, time.monotonic() + args.poll_max)
                load = round(os.getloadavg()[0], 2)
                items = []
                for name in names:
                    for width in WIDTHS:
                        view = await get(client, name, width)
                        items.append(Item(files[name], width, name, view))
                        if args.isolated:
                            await wait_idle(client, time.monotonic() + args.poll_max)
                            items[-1].idle_after = time.monotonic() - view.end
                last_first = time.monotonic()
                deadline = last_first + args.poll_max
                if args.poll == "metrics":
                    await wait_idle(client, deadline)
                for item in items:
                    await until_avif(client, item, args.poll_interval, deadline)
        finally:
            stop_server(server)
    for item in items:
        check(item, mode)
    return summarize(mode, rep, items, last_first, load)


def decoded(view: View) -> tuple[str, int]:
    import pyvips

    try:
        image: Any = pyvips.Image.new_from_buffer(view.body, "")
        loader = str(image.get("vips-loader"))
        if image.get_typeof("heif-compression"):
            loader += "/" + str(image.get("heif-compression"))
        return loader, int(image.width)
    except pyvips.Error:
        return "undecodable", 0


# What a type's body must decode as: the loader's name starts with the first, ends with the last.
LOADERS = {AVIF: ("heifload", "/av1"), WEBP: ("webpload", "")}


def check(item: Item, mode: str) -> None:
    """Each answer is a 200 of the type it says, at the width Next would make (no upscaling):
    a first view AVIF, or (on only) WebP with max-age=10; a second view an AVIF HIT."""
    width = min(item.width, item.photo.width)
    _check(item.first, (AVIF, WEBP) if mode == "on" else (AVIF,), width, hit=False)
    if item.second is not None:
        _check(item.second, (AVIF,), width, hit=True)


def _check(view: View, types: tuple[str, ...], width: int, *, hit: bool) -> None:
    loader, got_width = decoded(view) if view.status == 200 else ("", 0)
    view.got = f"{loader} {got_width}" if loader else str(view.status or view.content_type)
    view.ok = (
        view.status == 200
        and view.content_type in types
        and loader.startswith(LOADERS[view.content_type][0])
        and loader.endswith(LOADERS[view.content_type][1])
        and got_width == width
        and (view.content_type != WEBP or "max-age=10," in view.cache_control)
        and (not hit or view.x_cache == "HIT")
    )


# --- figures ---------------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, float | None]:
    """p50 / p95 / mean / max in seconds (p95: inclusive quantiles, exact for the sample)."""
    if not values:
        return {"p50": None, "p95": None, "mean": None, "max": None}
    p95 = statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else 0
    return {
        "p50": round(statistics.median(values), 3),
        "p95": round(p95 or values[0], 3),
        "mean": round(statistics.fmean(values), 3),
        "max": round(max(values), 3),
    }


def summarize(
    mode: str, rep: int, items: list[Item], last_first: float, load: float
) -> dict[str, Any]:
    webp = [i for i in items if i.first.content_type == WEBP]
    avif_ends = [i.second.end for i in items if i.second and i.second.content_type == AVIF]
    return {
        "mode": mode,
        "rep": rep,
        "loadavg_1m": load,
        "n": len(items),
        "first": stats([i.first.seconds for i in items]),
        "first_total_s": round(sum(i.first.seconds for i in items), 3),
        "first_webp": len(webp),
        "first_bad": sum(not i.first.ok for i in items),
        "first_bytes": sum(i.first.size for i in items),
        "second_bad": sum(not (i.second and i.second.ok) for i in items),
        "second_hit_ms": stats([i.second.seconds * 1000 for i in items if i.second]),
        "avif_after_s": stats([a for i in webp if (a := i.avif_after) is not None]),
        "drain_s": round(max(avif_ends) - last_first, 3) if avif_ends else None,
        "webp_polls": sum(i.webp_polls for i in items),
        "requests": [
            {
                "photo": i.photo.name,
                "w": i.width,
                "s": round(i.first.seconds, 3),
                "type": i.first.content_type,
                "bytes": i.first.size,
                "cache_control": i.first.cache_control,
                "got": i.first.got,
                "ok": i.first.ok,
                "avif_bytes": i.second.size if i.second else None,
                "avif_after_s": None if i.avif_after is None else round(i.avif_after, 3),
                "second": i.second.got if i.second else None,
                "second_ok": bool(i.second and i.second.ok),
                "webp_polls": i.webp_polls,
            }
            for i in items
        ],
        "_items": items,  # bodies for the scores; dropped before the JSON line
    }


def score(source: bytes, width: int, body: bytes) -> float:
    """SSIMULACRA2 of a body against the source's thumbnail at ``width``, uncompressed."""
    import pyvips
    from ssimulacra2 import compute_ssimulacra2

    def flat(image: Any) -> Any:
        return image.flatten() if image.bands == 4 else image

    with tempfile.TemporaryDirectory(prefix="first-view-score-") as tmp:
        ref = pyvips.Image.thumbnail_buffer(source, width, height=10_000_000, size="down")
        flat(ref).write_to_file(f"{tmp}/ref.png", compression=1)
        flat(pyvips.Image.new_from_buffer(body, "")).write_to_file(f"{tmp}/dist.png", compression=1)
        return round(float(compute_ssimulacra2(f"{tmp}/ref.png", f"{tmp}/dist.png")), 3)


def scores(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, float]:
    """SSIMULACRA2 per distinct body (the same pixels come back every repetition)."""
    jobs: dict[str, tuple[bytes, int, bytes]] = {}
    for run in runs:
        for item in run["_items"]:
            if item.width > args.score_max_width or item.first.content_type != WEBP:
                continue
            for view in (item.first, item.second):
                if view is not None and view.ok:
                    key = hashlib.sha256(view.body).hexdigest()
                    jobs[key] = (item.photo.data, item.width, view.body)
    if not jobs or args.score_max_width <= 0:
        return {}
    try:
        import ssimulacra2  # noqa: F401
    except ImportError:
        print("ssimulacra2 is not installed: bytes only", file=sys.stderr)
        return {}
    print(f"scoring {len(jobs)} outputs with SSIMULACRA2...", file=sys.stderr, flush=True)
    with ProcessPoolExecutor(args.score_workers) as pool:
        futures = {key: pool.submit(score, *job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def by_width(runs: list[dict[str, Any]], marks: dict[str, float]) -> list[dict[str, Any]]:
    """Per w: first-view p50 off and on, WebP first views, and WebP against its AVIF."""
    rows = []
    for width in ("all", *WIDTHS):
        views: dict[str, list[Item]] = {mode: [] for mode in MODES}
        for run in runs:
            views[run["mode"]] += [i for i in run["_items"] if width in ("all", i.width)]
        pairs = [
            (i.first, i.second)
            for i in views["on"]
            if i.first.content_type == WEBP and i.second and i.second.content_type == AVIF
        ]
        scored = [
            (marks[w_key], marks[a_key])
            for w_key, a_key in (
                (hashlib.sha256(w.body).hexdigest(), hashlib.sha256(a.body).hexdigest())
                for w, a in pairs
            )
            if w_key in marks and a_key in marks
        ]
        off = stats([i.first.seconds for i in views["off"]])
        on = stats([i.first.seconds for i in views["on"]])
        rows.append(
            {
                "w": width,
                "off": off,
                "on": on,
                "p50_ratio": _ratio(on["p50"], off["p50"]),
                "p95_ratio": _ratio(on["p95"], off["p95"]),
                "mean_ratio": _ratio(on["mean"], off["mean"]),
                "webp_first": len(pairs),
                "n_on": len(views["on"]),
                "webp_bytes": sum(w.size for w, _ in pairs),
                "avif_bytes": sum(a.size for _, a in pairs),
                "first_bytes_off": sum(i.first.size for i in views["off"]),
                "first_bytes_on": sum(i.first.size for i in views["on"]),
                "scored": len(scored),
                "ssimulacra2_webp": _mean([w for w, _ in scored]),
                "ssimulacra2_avif": _mean([a for _, a in scored]),
            }
        )
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _slash(*values: Any, spec: str = ".2f") -> str:
    return "/".join(_fmt(v, spec) for v in values)


def report(runs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """A row per server, then a row per w with off and on side by side."""
    servers = [
        ("mode", -5), ("rep", 4), ("load", 6), ("first p50/p95/mean s", 22), ("total s", 9),
        ("WebP", 7), ("bad", 5), ("KiB", 7), ("AVIF after p50/max s", 22), ("drain s", 9),
        ("HIT ms", 8), ("bad2", 6), ("polls", 7),
    ]  # fmt: skip
    print_table(servers, [_server_row(r) for r in runs])
    print()
    widths = [
        ("w", 5), ("off p50/p95/mean s", 21), ("on p50/p95/mean s", 21),
        ("on/off p50/p95/mean", 22), ("WebP", 7), ("WebP/AVIF bytes", 17),
        ("SSIMU2 WebP/AVIF", 18),
    ]  # fmt: skip
    print_table(widths, [_width_row(row) for row in rows])


def _server_row(r: dict[str, Any]) -> list[object]:
    f, a = r["first"], r["avif_after_s"]
    return [
        r["mode"],
        r["rep"],
        f"{r['loadavg_1m']:.2f}",
        _slash(f["p50"], f["p95"], f["mean"]),
        f"{r['first_total_s']:.1f}",
        f"{r['first_webp']}/{r['n']}",
        r["first_bad"],
        r["first_bytes"] // 1024,
        _slash(a["p50"], a["max"]),
        _fmt(r["drain_s"], ".1f"),
        _fmt(r["second_hit_ms"]["p50"], ".1f"),
        r["second_bad"],
        r["webp_polls"],
    ]


def _width_row(row: dict[str, Any]) -> list[object]:
    off, on = row["off"], row["on"]
    return [
        row["w"],
        _slash(off["p50"], off["p95"], off["mean"]),
        _slash(on["p50"], on["p95"], on["mean"]),
        _slash(row["p50_ratio"], row["p95_ratio"], row["mean_ratio"]),
        f"{row['webp_first']}/{row['n_on']}",
        _fmt(_ratio(row["webp_bytes"], row["avif_bytes"])),
        _slash(row["ssimulacra2_webp"], row["ssimulacra2_avif"], spec=".1f"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--photos", type=Path, help="folder of JPEG/PNG photos [ukui-wallpapers]")
    parser.add_argument("--cache", type=Path, default=CACHE, help="photo cache [%(default)s]")
    parser.add_argument("--upscale-width", type=int, default=5120, help="every other photo; 0: no")
    parser.add_argument("--reps", type=int, default=2, help="repetitions [%(default)s]")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to serve [this one]")
    parser.add_argument("--fast-first-view", type=float, default=0.5, help="seconds, for 'on'")
    parser.add_argument("--poll", choices=("metrics", "requests"), default="metrics")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="seconds between asks")
    parser.add_argument("--poll-max", type=float, default=60.0, help="seconds for the AVIFs")
    parser.add_argument(
        "--isolated", action="store_true", help="wait for an idle server before each first view"
    )
    parser.add_argument("--score-max-width", type=int, default=1920, help="0: no SSIMULACRA2")
    parser.add_argument("--score-workers", type=int, default=2)
    args = parser.parse_args()

    args.repo = args.repo.resolve()
    photos = prepare_photos(args.photos, args.cache, args.upscale_width)
    print(", ".join(f"{p.name} {p.width}x{p.height}" for p in photos), file=sys.stderr)
    load_start = os.getloadavg()
    runs = []
    for rep in range(1, args.reps + 1):
        for mode in MODES:
            run = asyncio.run(run_server(mode, rep, photos, args))
            runs.append(run)
            print(
                f"# {mode} rep {rep}: first p50 {run['first']['p50']} s, WebP "
                f"{run['first_webp']}/{run['n']}, drain {run['drain_s']} s",
                file=sys.stderr,
                flush=True,
            )
    load_end = os.getloadavg()
    marks = scores(runs, args)
    rows = by_width(runs, marks)
    report(runs, rows)
    for run in runs:
        del run["_items"]
    print(
        json.dumps(
            {
                "bench": "first_view",
                "fast_first_view_s": args.fast_first_view,
                "poll": args.poll,
                "isolated": args.isolated,
                "repo": str(args.repo),
                "accept": ACCEPT,
                "photos": [
                    {"name": p.name, "width": p.width, "height": p.height, "upscaled": p.upscaled}
                    for p in photos
                ],
                "loadavg_start": [round(x, 2) for x in load_start],
                "loadavg_end": [round(x, 2) for x in load_end],
                "by_width": rows,
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
