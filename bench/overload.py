"""Overload: how ``next-image serve`` behaves under a burst of distinct cache misses.

For every (configuration, burst size, repetition), interleaved (repetition 1: every configuration
and size, then repetition 2: the same again), a fresh ``next-image serve --store memory`` is
started on a free port and measured side by side:

  burst      N concurrent requests (default 64, then 8), each a distinct miss: its own file with
             its own bytes (nothing is a HIT, single-flight merges nothing), balanced over
             (photo, w in {1920, 3840}, Accept image/avif or image/webp). Per request: status,
             latency, bytes, Retry-After, Cache-Control; every 200 is decoded (pyvips) and checked
             (AVIF or WebP as asked, width = min(w, source width)). Counted as correct 200,
             fast 503 (under --fast seconds), 504, other (wrong 200, slow 503, error, ...).
  HIT probe  a URL warmed before the burst, requested every 100 ms while the burst runs:
             latency p50 / max, and any answer that is not a 200 HIT.
  memory     VmRSS, VmHWM and Threads of the server and its children from /proc every 50 ms:
             RSS at start, peak (VmHWM, the kernel's high-water mark) and peak threads, and RSS
             --settle seconds (30) after the last burst response: does memory go back? Plus the
             CPU seconds the server spent during the burst and after it (work still running
             after its requests were answered).

Photos: real JPEG/PNG wallpapers from Debian's ``ukui-wallpapers`` (3640-3840 px; rendered
artwork rather than camera shots), fetched once with ``apt-get download`` and ``dpkg-deb -x``
into the cache folder (bench/photos/overload), or any folder given with ``--photos``. Every
other photo is upscaled once with pyvips (lanczos3) to 5120 px wide in the cache folder, so the
set spans 3.6K-5K px; the output says which.

The server is ``python -m handler.commands.cli serve`` run from ``--repo`` (default: this checkout,
put first on PYTHONPATH), or ``--server-cmd``; extra serve flags and environment pass through.
Several configurations in one run, interleaved: ``--target 'LABEL [repo=DIR] [cmd=CMD] [env=K=V]...
[arg=--flag=V]...'``. Prints a compact table and one JSON line with every figure.

    .venv/bin/python bench/overload.py                       # this checkout, N=64 and 8, 2 reps
    .venv/bin/python bench/overload.py --repo /tmp/before    # another checkout (git worktree)
    .venv/bin/python bench/overload.py --serve-arg=--max-transforms=2 --env MALLOC_ARENA_MAX=2
    .venv/bin/python bench/overload.py --target 'before repo=/tmp/before' --target after \\
        --target 'after-1GiB arg=--memory-budget=1073741824' \\
        --target 'before-arena2 repo=/tmp/before env=MALLOC_ARENA_MAX=2'

Each (configuration, size, repetition) takes about settle + 15-35 s (a 64-burst is bounded by
the server's 30 s budget): 4 configurations x 2 sizes x 2 repetitions is about 14 minutes.
``--logs DIR`` keeps every server's log. In the table, other = bad200 (a 200 of the wrong type
or width, e.g. the original bytes served as a fallback) + slow503 + transport errors + other
codes; the JSON line also has every request (photo, w, Accept, status, s, bytes, verdict, what
the body decoded as, Retry-After, Cache-Control).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo
from bench.common import (
    CACHE,
    REPO,
    Job,
    Photo,
    Result,
    Sample,
    Target,
    params,
    prepare_photos,
    read_tree,
    request,
    server_env,
    start_server,
    stop_server,
    unique,
    verify,
    wait_ready,
)

# (w, Accept): every fourth request of a photo gets each.
COMBOS = (
    (1920, "image/avif"),
    (1920, "image/webp"),
    (3840, "image/avif"),
    (3840, "image/webp"),
)
PROBE_WIDTH = 640
MIB = 1 << 20


# --- photos ---------------------------------------------------------------------------------


# --- configurations ---------------------------------------------------------------------------


def parse_target(spec: str, base: Target) -> Target:
    """``LABEL [repo=DIR] [cmd=CMD] [env=K=V]... [arg=FLAG]...``, on top of the global options."""
    tokens = shlex.split(spec)
    if not tokens or "=" in tokens[0]:
        raise SystemExit(f"--target {spec!r}: starts with a label")
    repo, cmd, env, args = base.repo, base.cmd, list(base.env), list(base.args)
    for token in tokens[1:]:
        key, _, value = token.partition("=")
        if key == "repo":
            repo = Path(value).resolve()
        elif key == "cmd":
            cmd = tuple(shlex.split(value))
        elif key == "env" and "=" in value:
            name, _, val = value.partition("=")
            env.append((name, val))
        elif key == "arg":
            args.append(value)
        else:
            raise SystemExit(f"--target {spec!r}: unknown {token!r} (repo=, cmd=, env=, arg=)")
    return Target(tokens[0], repo, cmd, tuple(env), tuple(args))


def code_path(target: Target) -> str:
    """Which ``handler`` package the default command imports (checks --repo took effect)."""
    if target.cmd != (sys.executable, "-m", "handler.commands.cli"):
        return "?"
    done = subprocess.run(
        [sys.executable, "-c", "import handler, os; print(os.path.dirname(handler.__file__))"],
        cwd=target.repo,
        env=server_env(target),
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "?"


# --- /proc sampling ---------------------------------------------------------------------------


class Sampler(threading.Thread):
    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[Sample] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            sample = read_tree(self.pid)
            if sample is not None:
                self.samples.append(sample)

    def now(self) -> Sample:
        sample = read_tree(self.pid)
        if sample is None:
            raise RuntimeError("the server process is gone")
        self.samples.append(sample)
        return sample

    def stop(self) -> None:
        self._halt.set()
        self.join()


# --- one run ----------------------------------------------------------------------------------


@dataclass
class Options:
    fast: float
    settle: float
    client_timeout: float
    probe_interval: float
    sample_interval: float
    logs: Path | None = None


def make_jobs(photos: list[Photo], n: int, tag: str, public: Path) -> list[Job]:
    """N distinct misses: request i gets photo i mod P and combo (i + i div P) mod 4, so every
    (photo, w, type) comes once before any repeats, and each file has bytes of its own."""
    jobs = []
    for i in range(n):
        photo = photos[i % len(photos)]
        width, accept = COMBOS[(i + i // len(photos)) % len(COMBOS)]
        name = f"{tag}-{i:03d}-{photo.name}"
        (public / name).write_bytes(unique(photo.data, name))
        jobs.append(Job(name, photo, width, accept))
    return jobs


async def probe(
    client: httpx.AsyncClient, file: str, done: asyncio.Event, interval: float
) -> list[tuple[float, str]]:
    """Request the warmed URL every ``interval`` until ``done``: (seconds, "200 HIT" or what)."""
    answers: list[tuple[float, str]] = []
    while not done.is_set():
        started = time.monotonic()
        try:
            response = await client.get(
                "/_next/image", params=params(file, PROBE_WIDTH), headers={"accept": "image/webp"}
            )
            answer = f"{response.status_code} {response.headers.get('x-nextjs-cache')}"
        except httpx.HTTPError as exc:
            answer = type(exc).__name__
        elapsed = time.monotonic() - started
        answers.append((elapsed, answer))
        try:
            async with asyncio.timeout(max(interval - elapsed, 0.0)):
                await done.wait()
        except TimeoutError:
            pass
    return answers


async def run_once(
    target: Target, n: int, rep: int, photos: list[Photo], options: Options
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="overload-") as tmp_name:
        tmp = Path(tmp_name)
        public = tmp / "public"
        public.mkdir()
        tag = "".join(c if c.isalnum() else "-" for c in f"{target.label}-n{n}-r{rep}")
        jobs = make_jobs(photos, n, tag, public)
        probe_file = f"probe-{tag}-{photos[0].name}"
        (public / probe_file).write_bytes(unique(photos[0].data, probe_file))
        load = round(os.getloadavg()[0], 2)  # the machine's load when the run began
        server = start_server(target, public, tmp)
        sampler = Sampler(server.process.pid, options.sample_interval)
        try:
            sampler.start()
            limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)
            base = f"http://127.0.0.1:{server.port}"
            async with (
                httpx.AsyncClient(
                    base_url=base, timeout=options.client_timeout, limits=limits
                ) as client,
                httpx.AsyncClient(base_url=base, timeout=options.client_timeout) as probe_client,
            ):
                await wait_ready(client, server)
                start = sampler.now()
                warm = [
                    await probe_client.get(
                        "/_next/image",
                        params=params(probe_file, PROBE_WIDTH),
                        headers={"accept": "image/webp"},
                    )
                    for _ in range(2)
                ]
                if warm[-1].headers.get("x-nextjs-cache") != "HIT":
                    raise SystemExit(f"the probe URL is not a HIT: {warm[-1].status_code}")
                before = sampler.now()
                done = asyncio.Event()
                prober = asyncio.create_task(
                    probe(probe_client, probe_file, done, options.probe_interval)
                )
                results = await asyncio.gather(*(request(client, job) for job in jobs))
                end = sampler.now()
                done.set()
                probes = await prober
            await asyncio.sleep(max(end.t + options.settle - time.monotonic(), 0.0))
            after = sampler.now()
        finally:
            try:
                sampler.stop()
            finally:
                stop_server(server)
            if options.logs:
                options.logs.mkdir(parents=True, exist_ok=True)
                shutil.copy(server.log, options.logs / f"{tag}.log")
    for result in results:
        result.verdict = verify(result, options.fast)
        result.body = b""
    summary = summarize(target, n, rep, results, probes, sampler.samples, start, before, end, after)
    summary["loadavg_1m_before"] = load
    return summary


def _p50(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _max(values: list[float]) -> float | None:
    return round(max(values), 3) if values else None


def summarize(
    target: Target,
    n: int,
    rep: int,
    results: list[Result],
    probes: list[tuple[float, str]],
    samples: list[Sample],
    start: Sample,
    before: Sample,
    end: Sample,
    after: Sample,
) -> dict[str, Any]:
    verdicts = Counter(r.verdict for r in results)
    counts = {
        key: verdicts.get(key, 0)
        for key in ("correct_200", "fast_503", "504", "bad_200", "slow_503", "error", "other")
    }
    ok = [r.seconds for r in results if r.verdict == "correct_200"]
    hits = [s * 1000 for s, answer in probes]
    window = [s for s in samples if start.t <= s.t <= after.t]
    return {
        "label": target.label,
        "n": n,
        "rep": rep,
        "counts": counts,
        "other": sum(v for k, v in counts.items() if k not in ("correct_200", "fast_503", "504")),
        "statuses": dict(Counter(str(r.status or r.error) for r in results)),
        "lat_200_p50_s": _p50(ok),
        "lat_200_max_s": _max(ok),
        "lat_503_p50_s": _p50([r.seconds for r in results if r.status == 503]),
        "lat_503_max_s": _max([r.seconds for r in results if r.status == 503]),
        "lat_504_p50_s": _p50([r.seconds for r in results if r.status == 504]),
        "burst_s": round(end.t - before.t, 3),
        "bytes_200": sum(r.size for r in results if r.status == 200),
        "retry_after": dict(Counter(r.retry_after for r in results if r.retry_after)),
        "cache_control": dict(Counter(str(r.cache_control) for r in results)),
        "x_cache": dict(Counter(str(r.x_cache) for r in results if r.status == 200)),
        "requests": [
            [
                r.job.photo.name,
                r.job.width,
                r.job.accept,
                r.status or r.error,
                round(r.seconds, 3),
                r.size,
                r.verdict,
                r.got or r.content_type,
                r.retry_after,
                r.cache_control,
            ]
            for r in results
        ],
        "hit_count": len(hits),
        "hit_p50_ms": _p50(hits),
        "hit_max_ms": _max(hits),
        "hit_not_hit": sum(1 for _, answer in probes if answer != "200 HIT"),
        "rss_start_mib": round(start.rss / MIB, 1),
        "rss_pre_burst_mib": round(before.rss / MIB, 1),
        "rss_peak_sampled_mib": round(max(s.rss for s in window) / MIB, 1),
        "hwm_mib": round(after.hwm / MIB, 1),
        "rss_burst_end_mib": round(end.rss / MIB, 1),
        "rss_after_mib": round(after.rss / MIB, 1),
        "settle_s": round(after.t - end.t, 1),
        "threads_start": start.threads,
        "threads_peak": max(s.threads for s in window),
        "threads_after": after.threads,
        "cpu_burst_s": round(end.cpu - before.cpu, 1),
        "cpu_after_s": round(after.cpu - end.cpu, 1),
    }


# --- report -----------------------------------------------------------------------------------

COLUMNS = (
    ("config", 14, lambda r: r["label"]),
    ("N", 4, lambda r: r["n"]),
    ("rep", 4, lambda r: r["rep"]),
    ("ok200", 6, lambda r: r["counts"]["correct_200"]),
    ("f503", 5, lambda r: r["counts"]["fast_503"]),
    ("504", 4, lambda r: r["counts"]["504"]),
    ("other", 6, lambda r: r["other"]),
    ("(bad200", 8, lambda r: r["counts"]["bad_200"]),
    ("slow503)", 9, lambda r: r["counts"]["slow_503"]),
    ("200 p50/max s", 14, lambda r: f"{_fmt(r['lat_200_p50_s'])}/{_fmt(r['lat_200_max_s'])}"),
    ("503 p50/max s", 14, lambda r: f"{_fmt(r['lat_503_p50_s'])}/{_fmt(r['lat_503_max_s'])}"),
    ("HIT p50/max ms", 15, lambda r: f"{_fmt(r['hit_p50_ms'], 0)}/{_fmt(r['hit_max_ms'], 0)}"),
    ("peak MiB", 9, lambda r: round(r["hwm_mib"])),
    ("thr", 5, lambda r: r["threads_peak"]),
    ("start MiB", 10, lambda r: round(r["rss_start_mib"])),
    ("+settle MiB", 12, lambda r: round(r["rss_after_mib"])),
    ("cpu after s", 12, lambda r: r["cpu_after_s"]),
)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(runs: list[dict[str, Any]]) -> None:
    """One row per run; other = bad200 (wrong type or width) + slow503 + errors + other codes."""
    print("".join(f"{name:>{width}}" for name, width, _ in COLUMNS))
    ordered = sorted(runs, key=lambda r: (r["label"], -r["n"], r["rep"]))
    for run in ordered:
        print("".join(f"{get(run)!s:>{width}}" for _, width, get in COLUMNS))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Pass serve flags as --serve-arg=--max-transforms=2 (with '=').",
    )
    parser.add_argument("--photos", type=Path, help="folder of JPEG/PNG photos [ukui-wallpapers]")
    parser.add_argument("--cache", type=Path, default=CACHE, help="photo cache [%(default)s]")
    parser.add_argument(
        "--upscale-width", type=int, default=5120, help="upscale every other photo; 0: never"
    )
    parser.add_argument(
        "-n", "--concurrency", type=int, action="append", help="burst size(s) [64 and 8]"
    )
    parser.add_argument("--reps", type=int, default=2, help="repetitions [%(default)s]")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to serve [this one]")
    parser.add_argument(
        "--server-cmd", help="instead of 'python -m handler.commands.cli' (shell words)"
    )
    parser.add_argument("--serve-arg", action="append", default=[], help="extra serve flag")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    parser.add_argument("--label", default="current", help="name of the configuration")
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        help="'LABEL [repo=DIR] [cmd=CMD] [env=K=V]... [arg=FLAG]...'; repeatable, interleaved",
    )
    parser.add_argument("--fast", type=float, default=1.0, help="a fast 503 is under [1] s")
    parser.add_argument("--settle", type=float, default=30.0, help="RSS read this long after")
    parser.add_argument("--client-timeout", type=float, default=90.0, help="seconds per request")
    parser.add_argument("--probe-interval", type=float, default=0.1)
    parser.add_argument("--sample-interval", type=float, default=0.05)
    parser.add_argument("--logs", type=Path, help="keep each server's log in this folder")
    args = parser.parse_args()

    env = tuple((k, v) for k, _, v in (e.partition("=") for e in args.env) if k)
    cmd = (
        shlex.split(args.server_cmd)
        if args.server_cmd
        else [sys.executable, "-m", "handler.commands.cli"]
    )
    base = Target(args.label, args.repo.resolve(), tuple(cmd), env, tuple(args.serve_arg))
    targets = [parse_target(spec, base) for spec in args.target] or [base]
    sizes = args.concurrency or [64, 8]
    options = Options(
        args.fast,
        args.settle,
        args.client_timeout,
        args.probe_interval,
        args.sample_interval,
        args.logs,
    )
    photos = prepare_photos(args.photos, args.cache, args.upscale_width)
    print(
        "photos: "
        + ", ".join(
            f"{p.name} {p.width}x{p.height}{' (upscaled)' if p.upscaled else ''}" for p in photos
        )
    )
    codes = {t.label: code_path(t) for t in targets}
    for t in targets:
        extra = " ".join([*(f"{k}={v}" for k, v in t.env), *t.args])
        print(f"config {t.label}: handler from {codes[t.label]} {extra}".rstrip())
    runs = []
    for rep in range(1, args.reps + 1):
        for n in sizes:
            for target in targets:
                run = asyncio.run(run_once(target, n, rep, photos, options))
                runs.append(run)
                print(
                    f"# {target.label} N={n} rep={rep}: {run['counts']} "
                    f"peak {run['hwm_mib']} MiB, burst {run['burst_s']} s",
                    file=sys.stderr,
                    flush=True,
                )
    report(runs)
    print(
        json.dumps(
            {
                "bench": "overload",
                "photos": [
                    {"name": p.name, "width": p.width, "height": p.height, "upscaled": p.upscaled}
                    for p in photos
                ],
                "configs": {
                    t.label: {"code": codes[t.label], "env": dict(t.env), "args": list(t.args)}
                    for t in targets
                },
                "options": {
                    k: v if not isinstance(v, Path) else str(v) for k, v in vars(options).items()
                },
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
