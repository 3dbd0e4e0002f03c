"""Service throughput: cache misses and cache hits of ``next-image serve`` per store and workers.

Configurations, each a fresh ``next-image serve`` on a free port with AVIF and WebP enabled:

  fs1     --workers 1 --store filesystem --cache-dir <fresh temporary folder>
  redis2  --workers 2 --store redis --redis-url <a fresh redis-server>
  fs2     --workers 2 --store filesystem  (workers without the store change)
  redis1  --workers 1 --store redis       (the store without the workers change)

The redis-server (from PATH) is started by this script for each run on a free loopback port
with ``--save '' --appendonly no``, so every run starts from an empty cache. For every round
and configuration (interleaved: round 1 in the order given, round 2 reversed, and so on, so
drifting load hits them alike), on the same jobs:

  misses  36 distinct variants (6 photos x w 640/1080/1920 x Accept image/webp, image/avif) sent
          by an httpx client with a concurrency of 4 against the empty cache: misses/s (36 / the
          phase's wall time), latency p50/p95, and every answer checked: 200, and its body
          decoded with pyvips is the asked type (AVIF must be AV1) of width min(w, source width).
  check   the same 36 URLs once more with httpx: each must be a 200 with ``x-nextjs-cache: HIT``
          and the very bytes of its miss.
  hits    ``wrk`` (Debian package ``wrk``) cycling over the 36 URLs with the right ``Accept``,
          keep-alive (default -t2 -c16 -d10s): requests/s, latency p50/p99, and the count of
          non-2xx answers (wrk's ``Non-2xx or 3xx responses`` line; must be 0) and socket errors.

Plus the CPU seconds the server's process tree (and the redis-server) spent in each phase, and
the machine's 1-minute load average before and after each run: wrk and the client share the
machine with the server, so on a shared machine compare runs made under similar load.

Photos: ``ukui-wallpapers`` picks (3640-3840 px JPEG/PNG), fetched and cached as
``bench/overload.py`` does (its helpers are imported), or ``--photos DIR``.

    .venv/bin/python bench/service.py                          # fs1 redis2 fs2 redis1, 2 rounds
    .venv/bin/python bench/service.py --configs fs1,redis2 --rounds 3 --duration 15
    .venv/bin/python bench/service.py --cache /tmp/overload-cache --logs /tmp/service-logs

Each run is startup + misses (15-30 s) + 10 s of wrk: the four configurations take about
2.5 minutes a round on 2 cores. Prints a table (one row per configuration and round, then
medians per configuration) and one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo
from bench.common import (
    CACHE,
    FORMATS,
    REPO,
    Job,
    Photo,
    Server,
    Target,
    free_port,
    params,
    prepare_photos,
    read_tree,
    request,
    server_env,
    stop_server,
    verify,
    wait_ready,
)
from devtools.redis_server import start_redis, stop_redis

WIDTHS = (640, 1080, 1920)
ACCEPTS = ("image/webp", "image/avif")
CONFIGS: dict[str, tuple[int, str]] = {  # label: (workers, store)
    "fs1": (1, "filesystem"),
    "redis2": (2, "redis"),
    "fs2": (2, "filesystem"),
    "redis1": (1, "redis"),
}
WRK_MISSING = (
    "wrk is not on PATH: it drives the hit phase. Install it with\n"
    "  apt-get update && apt-get install -y wrk\n"
    "(Debian package 'wrk'), or pass --wrk PATH."
)


# --- redis-server -----------------------------------------------------------------------------


def redis_info(url: str) -> dict[str, str]:
    """``INFO`` of the redis-server (keys, memory), by hand: no client library needed."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"INFO\r\n")
        data = b""
        while True:  # a bulk string: $LENGTH\r\n then LENGTH bytes and \r\n
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
            header, _, rest = data.partition(b"\r\n")
            if header.startswith(b"$") and len(rest) >= int(header[1:]) + 2:
                break
    fields = (line.partition(":") for line in data.decode(errors="replace").splitlines())
    return {k: v.strip() for k, _, v in fields if v}


# --- the server -------------------------------------------------------------------------------


def start_server(
    label: str, workers: int, store: str, repo: Path, public: Path, tmp: Path, redis_url: str
) -> Server:
    port = free_port()
    store_args = (
        ["--redis-url", redis_url] if store == "redis" else ["--cache-dir", str(tmp / "cache")]
    )
    cmd = [sys.executable, "-m", "handler.commands.cli", "serve", "--workers", str(workers)]
    cmd += ["--store", store, *store_args, "--public-dir", str(public), "--port", str(port)]
    cmd += ["--config", FORMATS]
    target = Target(label, repo, tuple(cmd[:3]), (), ())
    log = tmp / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd,
            cwd=repo,
            env=server_env(target),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(process, port, log, cmd)


def cpu_seconds(*pids: int) -> float:
    """User + system seconds of the live process trees (the server's workers included)."""
    return sum(sample.cpu for sample in map(read_tree, pids) if sample is not None)


# --- jobs -------------------------------------------------------------------------------------


def make_jobs(photos: list[Photo], public: Path) -> list[Job]:
    """Every (photo, width, Accept), photo-major: 6 x 3 x 2 = 36 distinct variants."""
    jobs: list[Job] = []
    for photo in photos:
        (public / photo.name).write_bytes(photo.data)
        jobs.extend(Job(photo.name, photo, w, accept) for w in WIDTHS for accept in ACCEPTS)
    return jobs


def path_of(job: Job) -> str:
    return "/_next/image?" + urlencode(params(job.file, job.width))


def lua_script(jobs: list[Job]) -> str:
    """A wrk script: each connection's requests cycle over the jobs (each thread starts at its
    own offset), and ``done`` prints the exact figures as one JSON line."""
    rows = ",\n".join(f"  {{{json.dumps(path_of(j))}, {json.dumps(j.accept)}}}" for j in jobs)
    return f"""local jobs = {{
{rows}
}}
local i = 0
local thread_index = 0
setup = function(thread)
  thread:set("offset", thread_index * 7)
  thread_index = thread_index + 1
end
init = function(args)
  i = offset or 0
end
request = function()
  i = i % #jobs + 1
  return wrk.format("GET", jobs[i][1], {{["Accept"] = jobs[i][2]}})
end
done = function(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {{"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "timeout": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}}\\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.status,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, latency.mean))
end
"""


# --- phases -----------------------------------------------------------------------------------


def _quantile(values: list[float], q: int) -> float:
    """The q-th percentile (inclusive method: within the data's range)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def misses(
    client: httpx.AsyncClient, jobs: list[Job], concurrency: int
) -> tuple[float, list[dict[str, Any]], dict[str, bytes]]:
    """Every job once, ``concurrency`` at a time: (wall seconds, per-request rows, bodies)."""
    queue: asyncio.Queue[Job] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    rows: list[dict[str, Any]] = []
    bodies: dict[str, bytes] = {}

    async def worker() -> None:
        while not queue.empty():
            job = queue.get_nowait()
            result = await request(client, job)
            result.verdict = verify(result, 0.0)
            rows.append(
                {
                    "photo": job.photo.name,
                    "w": job.width,
                    "accept": job.accept,
                    "status": result.status or result.error,
                    "s": round(result.seconds, 3),
                    "bytes": result.size,
                    "x_cache": result.x_cache,
                    "verdict": result.verdict,
                    "got": result.got,
                }
            )
            bodies[path_of(job) + " " + job.accept] = result.body

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.monotonic() - started, rows, bodies


async def hit_check(
    client: httpx.AsyncClient, jobs: list[Job], bodies: dict[str, bytes]
) -> dict[str, int]:
    """Each URL once more: a 200 HIT with the bytes of its miss, or counted as what it was."""
    counts = {"hit_same": 0, "hit_other_bytes": 0, "not_hit": 0}
    for job in jobs:
        response = await client.get(
            "/_next/image", params=params(job.file, job.width), headers={"accept": job.accept}
        )
        if response.status_code != 200 or response.headers.get("x-nextjs-cache") != "HIT":
            counts["not_hit"] += 1
        elif response.content != bodies.get(path_of(job) + " " + job.accept):
            counts["hit_other_bytes"] += 1
        else:
            counts["hit_same"] += 1
    return counts


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(text: str) -> dict[str, Any]:
    """wrk's own lines (Requests/sec, Non-2xx, Socket errors, the latency distribution) and the
    JSON line of the script's ``done``."""
    out: dict[str, Any] = {"non_2xx": 0, "socket_errors": 0}
    if match := re.search(r"Requests/sec:\s*([\d.]+)", text):
        out["rps"] = float(match.group(1))
    if match := re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text):
        out["non_2xx"] = int(match.group(1))
    if match := re.search(r"Socket errors:\s*(.*)", text):
        out["socket_errors"] = sum(int(n) for n in re.findall(r"\d+", match.group(1)))
    for pct in ("50", "99"):
        if match := re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M):
            out[f"p{pct}_ms_text"] = round(float(match.group(1)) * _UNITS[match.group(2)], 3)
    if match := re.search(r"^WRK_JSON (.*)$", text, re.M):
        out["lua"] = json.loads(match.group(1))
    return out


def run_wrk(wrk: str, script: Path, port: int, threads: int, conns: int, seconds: int) -> str:
    cmd = [wrk, f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    cmd += ["-s", str(script), f"http://127.0.0.1:{port}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


# --- one run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    repo: Path
    wrk: str
    redis_server: str
    concurrency: int
    threads: int
    connections: int
    duration: int
    logs: Path | None


async def run_once(
    label: str, round_: int, jobs: list[Job], public: Path, script: Path, options: Options
) -> dict[str, Any]:
    workers, store = CONFIGS[label]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp_name:
        tmp = Path(tmp_name)
        redis = start_redis(options.redis_server, tmp) if store == "redis" else None
        server = None
        try:
            server = start_server(
                label, workers, store, options.repo, public, tmp, redis.url if redis else ""
            )
            pids = [server.process.pid] + ([redis.process.pid] if redis else [])
            base = f"http://127.0.0.1:{server.port}"
            limits = httpx.Limits(max_connections=options.concurrency)
            async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
                await wait_ready(client, server)
                await asyncio.sleep(1.0 if workers > 1 else 0.2)  # every worker up
                cpu0 = cpu_seconds(*pids)
                miss_s, rows, bodies = await misses(client, jobs, options.concurrency)
                cpu1 = cpu_seconds(*pids)
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                check = await hit_check(client, jobs, bodies)
            cpu2 = cpu_seconds(*pids)
            text = await asyncio.to_thread(
                run_wrk,
                options.wrk,
                script,
                server.port,
                options.threads,
                options.connections,
                options.duration,
            )
            cpu3 = cpu_seconds(*pids)
            info = redis_info(redis.url) if redis else {}
            disk = (
                sum(f.stat().st_size for f in (tmp / "cache").rglob("*") if f.is_file())
                if store == "filesystem"
                else None
            )
        finally:
            if server is not None:
                stop_server(server)
            if redis is not None:
                stop_redis(redis)
            if options.logs and server is not None:
                options.logs.mkdir(parents=True, exist_ok=True)
                shutil.copy(server.log, options.logs / f"{label}-r{round_}.log")
    wrk = parse_wrk(text)
    lua = wrk.get("lua", {})
    latencies = [float(r["s"]) for r in rows]
    ok = sum(1 for r in rows if r["verdict"] == "correct_200")
    return {
        "label": label,
        "round": round_,
        "workers": workers,
        "store": store,
        "load1_before": round(load_before[0], 2),
        "load1_after": round(os.getloadavg()[0], 2),
        "load5_before": round(load_before[1], 2),
        "miss_n": len(rows),
        "miss_ok": ok,
        "miss_x_cache": sorted({str(r["x_cache"]) for r in rows}),
        "miss_wall_s": round(miss_s, 3),
        "misses_per_s": round(len(rows) / miss_s, 2),
        "miss_p50_s": round(statistics.median(latencies), 3),
        "miss_p95_s": round(_quantile(latencies, 95), 3),
        "miss_cpu_s": round(cpu1 - cpu0, 1),
        "hit_check": check,
        "hit_rps": wrk.get("rps"),
        "hit_requests": lua.get("requests"),
        "hit_p50_ms": round(lua["p50_us"] / 1000, 3) if "p50_us" in lua else None,
        "hit_p99_ms": round(lua["p99_us"] / 1000, 3) if "p99_us" in lua else None,
        "hit_max_ms": round(lua["max_us"] / 1000, 1) if "max_us" in lua else None,
        "hit_p50_ms_text": wrk.get("p50_ms_text"),
        "hit_p99_ms_text": wrk.get("p99_ms_text"),
        "hit_non_2xx": wrk["non_2xx"],
        "hit_socket_errors": wrk["socket_errors"],
        "hit_cpu_s": round(cpu3 - cpu2, 1),
        "hit_mb_per_s": round(lua["bytes"] / lua["duration_us"], 1) if lua else None,
        "redis_keys": info.get("db0"),
        "redis_used_memory": info.get("used_memory_human"),
        "fs_cache_bytes": disk,
        "requests": rows,
        "wrk_output": text,
    }


# --- report -----------------------------------------------------------------------------------


def _check(run: dict[str, Any]) -> str:
    c = run["hit_check"]
    return "ok" if c["hit_same"] == run["miss_n"] else f"{c['not_hit']}miss/{c['hit_other_bytes']}"


COLUMNS: tuple[tuple[str, int, Any], ...] = (
    ("config", 8, lambda r: r["label"]),
    ("round", 6, lambda r: r["round"]),
    ("load1", 6, lambda r: r["load1_before"]),
    ("ok", 6, lambda r: f"{r['miss_ok']}/{r['miss_n']}"),
    ("miss/s", 8, lambda r: f"{r['misses_per_s']:.2f}"),
    ("p50 s", 7, lambda r: f"{r['miss_p50_s']:.2f}"),
    ("p95 s", 7, lambda r: f"{r['miss_p95_s']:.2f}"),
    ("cpu s", 7, lambda r: r["miss_cpu_s"]),
    ("HIT?", 6, _check),
    ("hit rps", 9, lambda r: f"{r['hit_rps']:.0f}"),
    ("p50 ms", 8, lambda r: f"{r['hit_p50_ms']:.1f}"),
    ("p99 ms", 8, lambda r: f"{r['hit_p99_ms']:.1f}"),
    ("non2xx", 7, lambda r: r["hit_non_2xx"]),
    ("sockerr", 8, lambda r: r["hit_socket_errors"]),
    ("cpu s", 7, lambda r: r["hit_cpu_s"]),
)
MEDIANS = ("misses_per_s", "miss_p50_s", "miss_p95_s", "hit_rps", "hit_p50_ms", "hit_p99_ms")


def report(runs: list[dict[str, Any]], labels: list[str]) -> None:
    print("misses: 36 at concurrency 4 (cpu s: server tree + redis-server) | hits: wrk")
    print("".join(f"{name:>{width}}" for name, width, _ in COLUMNS))
    for run in sorted(runs, key=lambda r: (labels.index(r["label"]), r["round"])):
        print("".join(f"{get(run)!s:>{width}}" for _, width, get in COLUMNS))
    print("medians over rounds:")
    for label in labels:
        mine = [r for r in runs if r["label"] == label]
        med = {k: statistics.median(r[k] for r in mine) for k in MEDIANS}
        print(
            f"  {label:<7} {med['misses_per_s']:.2f} misses/s (p50 {med['miss_p50_s']:.2f} s, "
            f"p95 {med['miss_p95_s']:.2f} s)   {med['hit_rps']:.0f} hits/s "
            f"(p50 {med['hit_p50_ms']:.1f} ms, p99 {med['hit_p99_ms']:.1f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="configurations: "
        + ", ".join(f"{k} (--workers {w} --store {s})" for k, (w, s) in CONFIGS.items()),
    )
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma list [%(default)s]")
    parser.add_argument("--rounds", type=int, default=2, help="rounds [%(default)s]")
    parser.add_argument("--photos", type=Path, help="folder of JPEG/PNG photos [ukui-wallpapers]")
    parser.add_argument("--cache", type=Path, default=CACHE, help="photo cache [%(default)s]")
    parser.add_argument("--photo-count", type=int, default=6, help="photos [%(default)s]")
    parser.add_argument("--concurrency", type=int, default=4, help="misses at once [4]")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t [%(default)s]")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c [%(default)s]")
    parser.add_argument("--duration", type=int, default=10, help="wrk -d seconds [%(default)s]")
    parser.add_argument("--wrk", default=shutil.which("wrk"), help="wrk binary [PATH]")
    parser.add_argument("--redis-server", default=shutil.which("redis-server"))
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to serve [this one]")
    parser.add_argument("--logs", type=Path, help="keep each server's log in this folder")
    args = parser.parse_args()

    labels = [c.strip() for c in args.configs.split(",") if c.strip()]
    if unknown := [c for c in labels if c not in CONFIGS]:
        raise SystemExit(f"unknown configuration(s) {unknown}: choose from {list(CONFIGS)}")
    if not args.wrk or not os.access(args.wrk, os.X_OK):
        raise SystemExit(WRK_MISSING)
    needs_redis = any(CONFIGS[c][1] == "redis" for c in labels)
    if needs_redis and not args.redis_server:
        raise SystemExit("redis-server is not on PATH (apt-get install -y redis-server)")
    options = Options(
        args.repo.resolve(),
        args.wrk,
        args.redis_server or "",
        args.concurrency,
        args.threads,
        args.connections,
        args.duration,
        args.logs,
    )
    photos = prepare_photos(args.photos, args.cache, 0)[: args.photo_count]
    print("photos: " + ", ".join(f"{p.name} {p.width}x{p.height}" for p in photos))
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up servers on SIGTERM
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-service-public-") as public_name:
        public = Path(public_name)
        jobs = make_jobs(photos, public)
        script = public.parent / f"{public.name}.lua"
        script.write_text(lua_script(jobs))
        try:
            for round_ in range(1, args.rounds + 1):
                order = labels if round_ % 2 else labels[::-1]
                for label in order:
                    run = asyncio.run(run_once(label, round_, jobs, public, script, options))
                    runs.append(run)
                    print(
                        f"# {label} round {round_}: {run['miss_ok']}/{run['miss_n']} ok, "
                        f"{run['misses_per_s']} misses/s, {run['hit_rps']} hits/s, "
                        f"non-2xx {run['hit_non_2xx']}, load {run['load1_before']}"
                        f"->{run['load1_after']}",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            script.unlink(missing_ok=True)
    report(runs, labels)
    for run in runs:
        run.pop("wrk_output")
    print(
        json.dumps(
            {
                "bench": "service",
                "photos": [{"name": p.name, "width": p.width, "height": p.height} for p in photos],
                "jobs": len(jobs),
                "wrk": {"t": args.threads, "c": args.connections, "d": args.duration},
                "concurrency": args.concurrency,
                "cpus": os.cpu_count(),
                "runs": runs,
            }
        )
    )
    failed = [
        f"{r['label']} r{r['round']}"
        for r in runs
        if r["miss_ok"] != r["miss_n"]
        or r["hit_check"]["hit_same"] != r["miss_n"]
        or r["hit_non_2xx"]
        or r["hit_socket_errors"]
    ]
    if failed:
        raise SystemExit(f"checks failed in: {', '.join(failed)}")


if __name__ == "__main__":
    main()
