"""What isolated transforms (handler/pipeline/isolation.py) cost a miss: the same misses through two
``next-image serve`` processes, one transforming in its worker
(``NEXT_IMAGE_ISOLATE_TRANSFORMS=false``), one in child processes (the default), one request at
a time, interleaved (the order alternates each round), repeated.

Jobs: Debian ukui-wallpapers photographs (3640-3840 px, 0.3-8.9 MB), and 1600x1066 JPEGs made
from them (q=85, 70-170 KB: a typical upload), to WebP and AVIF at 640-1920 px. Every request is a
real miss (new bytes under a new name each round; memory store). Prints per job the median
wall time and the mean CPU time of the server with all its processes, in-process and in-child,
their ratios, and the bytes that cross the process boundary (source in, image out). Then the
pool alone: the forkserver's first start, a child's start (forked until ready), a transform on a
fresh child against a warm one, and an idle child's memory: what ``--transforms-per-child``
amortises, and what Lambda would pay.

    .venv/bin/python bench/isolation.py [--rounds 5] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyvips

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo
from bench.common import (
    PHOTOS,
    REPO,
    download_ukui,
    free_port,
    unique,
    wait_answering,
)
from handler.contract.config import ImagesConfig
from handler.pipeline.transform import Plan, plan_transform

ORIGINALS = ("rhythm.jpg", "string.jpg", "calla.png", "goldfish.png")
UPLOADS = tuple(f"{Path(name).stem}-1600.jpg" for name in ORIGINALS)
WEBP, AVIF = "image/webp", "image/avif"
JOBS: list[tuple[str, int, str]] = [
    *((photo, width, accept) for photo in UPLOADS for width, accept in ((640, WEBP), (1080, AVIF))),
    *((photo, 1080, WEBP) for photo in UPLOADS[:2]),
    *((photo, width, accept) for photo in ORIGINALS[:3] for width, accept in ((640, WEBP),)),
    ("rhythm.jpg", 1920, WEBP),
    ("calla.png", 1080, AVIF),
]
TARGETS = {"in-process": "false", "in-child": "true"}
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Job:
    photo: str
    width: int
    accept: str
    # Per target: each counted request's wall seconds, and the CPU seconds its server spent on
    # it (every process of the server, children included; in clock ticks).
    seconds: dict[str, list[float]] = field(default_factory=lambda: {t: [] for t in TARGETS})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {t: [] for t in TARGETS})
    source_bytes: int = 0
    output_bytes: int = 0


def photos() -> dict[str, bytes]:
    """The originals (downloaded once into bench/photos/) and their 1600x1066 uploads."""
    if not all((PHOTOS / name).exists() for name in ORIGINALS):
        download_ukui(PHOTOS, ORIGINALS)
    found = {name: (PHOTOS / name).read_bytes() for name in ORIGINALS}
    for original, upload in zip(ORIGINALS, UPLOADS, strict=True):
        path = PHOTOS / upload
        if not path.exists():
            image = pyvips.Image.thumbnail(str(PHOTOS / original), 1600, height=1066, crop="centre")
            image.jpegsave(str(path), Q=85)
        found[upload] = path.read_bytes()
    return found


def start(target: str, port: int, public: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NEXT_IMAGE_ISOLATE_TRANSFORMS": TARGETS[target]}
    command = [sys.executable, "-m", "handler.commands.cli", "serve", "--port", str(port)]
    command += ["--public-dir", str(public), "--store", "memory", "--max-transforms", "1"]
    command += ["--config", '{"formats": ["image/avif", "image/webp"]}']
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def cpu_seconds(root: int) -> float:
    """User + system seconds of ``root`` and every live process below it."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICK

    def below(pid: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = parents.get(pid, 0)
        return False

    return sum(seconds for pid, seconds in times.items() if below(pid))


def run(rounds: int, sources: dict[str, bytes]) -> list[Job]:
    jobs = [Job(*job) for job in JOBS]
    with tempfile.TemporaryDirectory() as tmp:
        public = Path(tmp)
        ports = {target: free_port() for target in TARGETS}
        servers = {target: start(target, ports[target], public) for target in TARGETS}
        clients = {
            target: httpx.Client(base_url=f"http://127.0.0.1:{ports[target]}", timeout=120)
            for target in TARGETS
        }
        try:
            for client in clients.values():
                wait_answering(client, "/healthz", 60, "a server")
            for round_ in range(rounds + 1):  # round 0 warms both up and is not counted
                order = list(TARGETS) if round_ % 2 else list(reversed(TARGETS))
                for i, job in enumerate(jobs):
                    name = f"r{round_}-{i}-{job.photo}"
                    body = unique(sources[job.photo], name)
                    (public / name).write_bytes(body)
                    for target in order:
                        cpu = cpu_seconds(servers[target].pid)
                        started = time.perf_counter()
                        response = clients[target].get(
                            "/_next/image",
                            params={"url": f"/{name}", "w": job.width, "q": 75},
                            headers={"accept": job.accept},
                        )
                        elapsed = time.perf_counter() - started
                        cpu = cpu_seconds(servers[target].pid) - cpu
                        assert response.status_code == 200, response.text
                        assert response.headers["x-nextjs-cache"] == "MISS"
                        assert response.headers["content-type"] == job.accept
                        if round_:
                            job.seconds[target].append(elapsed)
                            job.cpu[target].append(cpu)
                        job.source_bytes, job.output_bytes = len(body), len(response.content)
        finally:
            for client in clients.values():
                client.close()
            for server in servers.values():
                server.terminate()
                server.wait()
    return jobs


def report(jobs: list[Job]) -> dict[str, Any]:
    print(
        f"{'photo':<18}{'w':>5} {'type':<5}{'wall: in-process':>17}{'in-child':>9}{'ratio':>7}"
        f"{'CPU: in-process':>16}{'in-child':>9}{'ratio':>7}{'crossing':>10}"
    )
    totals = {measure: dict.fromkeys(TARGETS, 0.0) for measure in ("wall", "cpu")}
    ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
    for job in jobs:
        line = f"{job.photo:<18}{job.width:>5} {job.accept.removeprefix('image/'):<5}"
        for measure, samples in (("wall", job.seconds), ("cpu", job.cpu)):
            # CPU comes in clock ticks (10 ms): its mean, not a median of ticks, says how much.
            average = statistics.median if measure == "wall" else statistics.mean
            medians = {t: average(samples[t]) for t in TARGETS}
            for target, median in medians.items():
                totals[measure][target] += median
            ratio = medians["in-child"] / medians["in-process"]
            ratios[measure].append(ratio)
            line += f"{medians['in-process'] * 1000:>14.1f}ms{medians['in-child'] * 1000:>7.1f}ms"
            line += f"{ratio:>7.3f}"
        print(line + f"{(job.source_bytes + job.output_bytes) / 1e6:>8.2f}MB")
    summary: dict[str, Any] = {}
    for measure, total in totals.items():
        ratio = total["in-child"] / total["in-process"]
        median_ratio = statistics.median(ratios[measure])
        summary[measure] = {
            "totals_seconds": total,
            "ratio": ratio,
            "median_job_ratio": median_ratio,
        }
        kind = "medians" if measure == "wall" else "means"
        print(
            f"{measure} (sum of per-job {kind}): in-process {total['in-process']:.2f} s, "
            f"in-child {total['in-child']:.2f} s, ratio {ratio:.3f}; median job ratio "
            f"{median_ratio:.3f}"
        )
    summary["jobs"] = [
        {
            "photo": j.photo,
            "width": j.width,
            "accept": j.accept,
            "seconds": j.seconds,
            "cpu_seconds": j.cpu,
            "crossing_bytes": j.source_bytes + j.output_bytes,
        }
        for j in jobs
    ]
    return summary


def pool_alone(sources: dict[str, bytes]) -> dict[str, float]:
    """The pool's own costs: what a replacement and Lambda would pay.

    Run by ``main`` in a process of its own started with ``-c``: a child imports its parent's
    main module (Python 3.11's forkserver does not preload it), and this script's imports
    (httpx) are not what ``serve``'s (``handler.commands.cli``) are.
    """
    from handler.pipeline.isolation import IsolatedTransforms

    config = ImagesConfig()
    started = time.perf_counter()
    pool = IsolatedTransforms(config, children=1, transforms_per_child=1_000_000)
    while not pool.pids():
        time.sleep(0.001)
    cold = time.perf_counter() - started
    starts: list[float] = []
    for _ in range(10):
        started = time.perf_counter()
        child = pool._start_child()  # the private step, timed alone
        starts.append(time.perf_counter() - started)
        child.stop()
    (pid,) = pool.pids()
    plan = plan_transform(sources[UPLOADS[0]], width=640, quality=75, mime_type=WEBP, config=config)
    assert isinstance(plan, Plan)

    async def transforms(pool: IsolatedTransforms, count: int) -> list[float]:
        times = []
        for _ in range(count):
            while not pool.pids():  # a fresh child is started and idle: its start not timed
                await asyncio.sleep(0.001)
            started = time.perf_counter()
            await pool.run(plan, deadline=time.monotonic() + 60)
            times.append(time.perf_counter() - started)
        return times

    warm = asyncio.run(transforms(pool, 10))
    resident = _status(pid)
    forkserver = _status(forkserver_pid())
    pool.close()
    fresh_pool = IsolatedTransforms(config, children=1, transforms_per_child=1)
    fresh = asyncio.run(transforms(fresh_pool, 10))  # each on a child that has done nothing yet
    fresh_pool.close()
    return {
        "forkserver_and_first_child_ms": cold * 1000,
        "child_start_ms": statistics.median(starts) * 1000,
        "warm_transform_ms": statistics.median(warm) * 1000,
        "fresh_child_transform_ms": statistics.median(fresh) * 1000,
        "idle_child_rss_mib": resident["VmRSS"] / 2**20,
        "idle_child_anon_mib": resident["RssAnon"] / 2**20,
        "forkserver_rss_mib": forkserver["VmRSS"] / 2**20,
    }


def pool_alone_in_own_process() -> dict[str, float]:
    code = "import json, bench.isolation as b; print(json.dumps(b.pool_alone(b.photos())))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True
    )
    figures: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    print(
        f"pool alone: forkserver + first child {figures['forkserver_and_first_child_ms']:.0f} ms; "
        f"a child's start {figures['child_start_ms']:.1f} ms; a 1600 px JPEG to 640 WebP on a "
        f"warm child {figures['warm_transform_ms']:.1f} ms, on a fresh one "
        f"{figures['fresh_child_transform_ms']:.1f} ms; an idle child after 10 transforms "
        f"{figures['idle_child_rss_mib']:.0f} MiB resident "
        f"({figures['idle_child_anon_mib']:.0f} MiB its own), the forkserver "
        f"{figures['forkserver_rss_mib']:.0f} MiB"
    )
    return figures


def forkserver_pid() -> int:
    from multiprocessing import forkserver

    pid: int = getattr(forkserver._forkserver, "_forkserver_pid")  # noqa: B009 (private)
    return pid


def _status(pid: int) -> dict[str, int]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon"):
            found[name] = int(value.split()[0]) * 1024
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    sources = photos()
    load = os.getloadavg()[0]
    result = report(run(args.rounds, sources))
    result["pool"] = pool_alone_in_own_process()
    result["load_average_at_start"] = load
    print(json.dumps({"rounds": args.rounds, "load_average_at_start": load}))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
