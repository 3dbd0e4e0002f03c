"""Cache hits: ``next start`` (Next.js 16.4.6's own optimizer) against ``next-image serve`` with
the filesystem store, 1 and 2 workers, on the same app, images and variants.

The app is ``tests/e2e/app``, copied to ``--work`` (its ``node_modules`` hard-linked, so the
e2e test's own build is never touched), its images drawn as the e2e test draws them, plus one
more scene so that there are 7, and ``next build`` run there once (kept for later runs).

Targets, each started once and kept running for the whole benchmark:

  next    node node_modules/next/dist/bin/next start   (its cache: .next/cache/images, emptied
          at start)
  ours-1  next-image serve --store filesystem --public-dir <app>/public --config <app>/.next
          --workers 1   (a fresh --cache-dir)
  ours-2  the same with --workers 2

Each is warmed on the same variants: 7 images x 7 widths (64 to 1080), q=75, ``Accept:
image/webp``, every URL asked until it answers ``x-nextjs-cache: HIT`` (then a few more times
on new connections, so each worker of ours-2 has seen it). The run stops if any URL is not a
WebP HIT. Then, interleaved (round 1 in the order above, round 2 reversed, ...):

  cycle   wrk -t2 -c32 -d10s with a Lua script cycling over the 49 URLs, keep-alive
  hot     the same on one URL (w=640 of one photo)

wrk's Lua ``done`` reports requests/s, p50 and p99 latency, non-2xx answers and socket errors
(both must be 0). wrk shares the 2 cores with the server under test: compare runs made under
similar load (the 1-minute load average is printed with each round).

    .venv/bin/python bench/hits.py                    # 2 rounds, 10 s per run
    .venv/bin/python bench/hits.py --rounds 3 --duration 15
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: the repo
from tests.e2e.pictures import draw, scene  # noqa: E402

E2E_APP = REPO / "tests" / "e2e" / "app"
NEXT = ["node", "node_modules/next/dist/bin/next"]
IMAGES = ("street.jpg", "harbour.jpg", "meadow.jpg", "dunes.jpg", "logo.png", "huge.png")
EXTRA = "bench.jpg"  # drawn here: the seventh image
WIDTHS = (64, 128, 256, 384, 640, 828, 1080)  # from Next's default imageSizes and deviceSizes
ACCEPT = "image/webp,*/*"
HOT = ("street.jpg", 640)


@dataclass
class Target:
    name: str
    url: str


def prepare_app(work: Path) -> Path:
    """The e2e app under ``work``, its images drawn and ``next build`` done (once)."""
    app = work / "app"
    if not (app / ".next" / "BUILD_ID").is_file():
        shutil.rmtree(app, ignore_errors=True)
        shutil.copytree(E2E_APP, app, ignore=shutil.ignore_patterns(".next", "node_modules"))
        modules = E2E_APP / "node_modules"
        if (modules / "next").is_dir():
            shutil.copytree(modules, app / "node_modules", copy_function=os.link, symlinks=True)
        else:
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=app, check=True)
        draw(app)
        write_extra(app)
        subprocess.run([*NEXT, "build"], cwd=app, check=True, env=next_env())
    write_extra(app)
    return app


def write_extra(app: Path) -> None:
    target = app / "public" / "images" / EXTRA
    if not target.is_file():
        image = scene(1400, 1000, (60, 120, 200), (220, 180, 120), (255, 240, 200), 7)
        target.write_bytes(bytes(image.jpegsave_buffer(Q=88)))


def next_env() -> dict[str, str]:
    return {**os.environ, "NEXT_TELEMETRY_DISABLED": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def process(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> Iterator[None]:
    """A server in its own process group, stopped (SIGTERM, then SIGKILL) by that group's id."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_ready(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in time")


def paths() -> list[str]:
    files = [*IMAGES, EXTRA]
    return [image_path(file, width) for file in files for width in WIDTHS]


def image_path(file: str, width: int) -> str:
    return "/_next/image?" + urlencode({"url": f"/images/{file}", "w": width, "q": 75})


def warm(target: Target, urls: list[str]) -> None:
    """Every URL answered as a WebP HIT, by every worker that may take a connection."""
    for path in urls:
        for _ in range(20):
            with httpx.Client(base_url=target.url, timeout=60) as client:  # a new connection
                response = client.get(path, headers={"Accept": ACCEPT})
            if response.status_code != 200:
                raise RuntimeError(f"{target.name} {path}: {response.status_code}")
            if response.headers.get("x-nextjs-cache") == "HIT":
                break
            time.sleep(0.2)  # Next writes its cache entry after answering
        else:
            raise RuntimeError(f"{target.name} {path}: never a HIT")
        for _ in range(4):  # new connections: each worker of ours-2 reads it once
            with httpx.Client(base_url=target.url, timeout=60) as client:
                response = client.get(path, headers={"Accept": ACCEPT})
            if (
                response.headers.get("x-nextjs-cache") != "HIT"
                or response.headers.get("content-type") != "image/webp"
            ):
                raise RuntimeError(f"{target.name} {path}: {dict(response.headers)}")


LUA = """
local paths = {%s}
local i = 0
wrk.headers["Accept"] = "%s"
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT {\\"rps\\": %%.1f, \\"p50_ms\\": %%.2f, \\"p99_ms\\": %%.2f, \\"non2xx\\": %%d, " ..
    "\\"socket_errors\\": %%d}\\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def run_wrk(url: str, urls: list[str], args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    script = tmp / "paths.lua"
    script.write_text(LUA % (", ".join(json.dumps(p) for p in urls), ACCEPT))
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s"]
    out = subprocess.run(
        [*command, "-s", str(script), url], check=True, capture_output=True, text=True
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    result: dict[str, float] = json.loads(line.removeprefix("RESULT "))
    if result["non2xx"] or result["socket_errors"]:
        raise RuntimeError(f"wrk saw errors against {url}:\n{out}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench-hits")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install -y wrk")
    args.work.mkdir(parents=True, exist_ok=True)
    app = prepare_app(args.work)
    shutil.rmtree(app / ".next" / "cache" / "images", ignore_errors=True)
    urls = paths()
    hot = [image_path(*HOT)]
    serve = [str(REPO / ".venv" / "bin" / "next-image"), "serve", "--store", "filesystem"]
    serve += ["--public-dir", str(app / "public"), "--config", str(app / ".next")]
    results: list[dict[str, object]] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-hits-")))
        targets: list[Target] = []
        port = free_port()
        command = [*NEXT, "start", "--hostname", "127.0.0.1", "--port", str(port)]
        stack.enter_context(process(command, app, next_env(), tmp / "next.log"))
        targets.append(Target("next", f"http://127.0.0.1:{port}"))
        for workers in (1, 2):
            port = free_port()
            command = [*serve, "--port", str(port), "--workers", str(workers)]
            command += ["--cache-dir", str(tmp / f"cache-{workers}")]
            stack.enter_context(process(command, REPO, dict(os.environ), tmp / f"ours-{workers}"))
            targets.append(Target(f"ours-{workers}", f"http://127.0.0.1:{port}"))
        for target in targets:
            wait_ready(target.url + "/", time.monotonic() + 60)
            started = time.monotonic()
            warm(target, urls)
            print(f"{target.name}: {len(urls)} variants warm in {time.monotonic() - started:.1f} s")
        for round_ in range(args.rounds):
            order = targets if round_ % 2 == 0 else targets[::-1]
            load = os.getloadavg()[0]
            for target in order:
                for phase, phase_urls in (("cycle", urls), ("hot", hot)):
                    result = run_wrk(target.url, phase_urls, args, tmp)
                    row = {"round": round_ + 1, "target": target.name, "phase": phase, **result}
                    row["load1"] = round(load, 2)
                    results.append(row)
                    print(
                        f"round {round_ + 1} {target.name:7} {phase:5} "
                        f"{result['rps']:8.0f} rps  p50 {result['p50_ms']:6.2f} ms  "
                        f"p99 {result['p99_ms']:6.2f} ms  (load {load:.2f})",
                        flush=True,
                    )
    print("\nmedians over rounds")
    print(f"{'target':8} {'phase':6} {'rps':>8} {'p99 ms':>8} {'x next':>7}")
    medians: dict[tuple[str, str], float] = {}
    for phase in ("cycle", "hot"):
        for target in targets:
            rows = [r for r in results if r["target"] == target.name and r["phase"] == phase]
            rps = statistics.median(float(str(r["rps"])) for r in rows)
            p99 = statistics.median(float(str(r["p99_ms"])) for r in rows)
            medians[target.name, phase] = rps
            ratio = rps / medians["next", phase]
            print(f"{target.name:8} {phase:6} {rps:8.0f} {p99:8.2f} {ratio:7.2f}")
    print(json.dumps({"variants": len(urls), "runs": results}))


if __name__ == "__main__":
    main()
