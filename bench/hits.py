"""Cache hits: ``next start`` (Next.js 16.4.6's own optimizer) against ``next-image serve`` on the
same app, images and variants, at three working sets, side by side in one interleaved run.

The app is ``tests/e2e/app``, copied to ``--work`` (its ``node_modules`` hard-linked, so the
e2e test's own build is never touched), its images drawn as the e2e test draws them, plus one
more scene so that there are 7, and ``next build`` run there once (kept for later runs). The
photos of the larger working sets are written into its ``public/bench/`` before ``next start``:

  hot        49 variants: the 7 images x 7 widths (64 to 1080)
  catalogue  1,200 variants: 300 distinct photos, 1600x1066 JPEG (q=85), x w 640/750/828/1080
  large      10,000 variants: 2,500 distinct photos, 1000x667 JPEG (q=85), x w 640/750/828/1080.
             Smaller photos than the catalogue's only so that warming 10,000 variants on every
             target takes minutes, not an hour; a hit's cost does not depend on the source

The photos are crops (at random scales and places, seeded) of Debian's ``ukui-wallpapers``
photographs (fetched once into ``bench/photos/``, as ``miss_cost.py`` does), or of drawn
scenes when the package cannot be had. Every variant is WebP at q=75 (``Accept:
image/webp,*/*``).

Targets, each started once and kept running for the whole benchmark:

  next      node node_modules/next/dist/bin/next start   (its cache: .next/cache/images, emptied
            at start)
  ours-1    next-image serve --store filesystem --public-dir <app>/public --config <app>/.next
            (defaults: 1 worker, the 64 MB hot tier; a fresh --cache-dir)
  ours-2    the same folder with --workers 2
  redis-1   next-image serve --store redis (a redis-server of its own on a free port), 1 worker;
            only on the sets of ``--redis-sets`` (hot and catalogue by default)
  redis-2   the same redis-server with --workers 2
  before-1  with ``--baseline DIR``: ours-1 run from another checkout (``DIR/handler``, e.g. a
            ``git worktree`` of an older commit), on ours-1's folder
  before-r1 with ``--baseline DIR`` and a redis target: redis-1 run from that checkout, on
            redis-1's server

Each target is warmed on every URL of its sets (4 at a time): each URL is asked until it answers
a WebP ``x-nextjs-cache: HIT``; on the hot set, a few more times on new connections, so that each
worker of a 2-worker target has it in memory. The run stops if any URL is not a WebP HIT. ours-2
shares ours-1's folder and redis-2 redis-1's server, so their warm-up finds every variant stored.

Then, interleaved (round 1 in the order above, round 2 reversed, ...), for each set and target:

  wrk -t1 -c8 -d8s with a Lua script cycling over the set's URLs in order, keep-alive

With 1,200 or 10,000 URLs, a URL comes round again only after 1,200 (10,000) other requests:
at the catalogue's rates a repeat may still fall within a replayed hit's life
(``handler/http/replay.py``), at the large set's never, so every hit there takes the whole way
(validation, the store's pointer and variant, headers, metrics, the access log); the large set
is larger than the 64 MB hot tier, so its variants are read from the folder too.

wrk's Lua ``done`` reports requests/s, p50 and p99 latency, non-2xx answers and socket errors
(both must be 0). After each run the target's resident memory (VmRSS summed over its process
tree: for ours the workers, the supervisor and the transform processes) is read from /proc.
wrk shares the 2 cores with the server under test: compare runs made under similar load (the
1-minute load average is printed with each round). Medians over rounds, with the ratio to Next's.

    .venv/bin/python bench/hits.py                                # 2 rounds, 8 s per run
    .venv/bin/python bench/hits.py --keep-caches                  # warm caches kept in --work
    .venv/bin/python bench/hits.py --sets hot,catalogue --rounds 3
    git worktree add /tmp/before <commit>
    .venv/bin/python bench/hits.py --baseline /tmp/before --targets next,ours-1

With ``--profile DIR``, after the rounds each of our targets is run once more per set with
py-spy sampling its process tree (``--subprocesses``, 250 Hz, ``--gil``: only the thread that
runs Python, so waiting threads do not count; not counted in the figures): the
collapsed stacks go to ``DIR/<target>-<set>.txt`` and the top frames, self and inclusive
(``bench/stacks.py``), are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pyvips

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo
from bench.common import HOT_WIDTHS, PHOTOS, PICKS, REPO, download_ukui, free_port
from bench.stacks import summary
from devtools.pictures import draw, scene
from devtools.redis_server import RedisServer, start_redis, stop_redis

E2E_APP = REPO / "tests" / "e2e" / "app"
NEXT = ["node", "node_modules/next/dist/bin/next"]
IMAGES = ("street.jpg", "harbour.jpg", "meadow.jpg", "dunes.jpg", "logo.png", "huge.png")
EXTRA = "bench.jpg"  # drawn here: the seventh image
PHOTO_WIDTHS = (640, 750, 828, 1080)
ACCEPT = "image/webp,*/*"
TARGETS = ("next", "ours-1", "ours-2", "redis-1", "redis-2")


@dataclass(frozen=True)
class PhotoSet:
    """``count`` distinct photos of ``width`` x ``height`` under ``public/bench/<name>/``."""

    name: str
    count: int
    width: int
    height: int


PHOTO_SETS = {
    "catalogue": PhotoSet("catalogue", 300, 1600, 1066),
    "large": PhotoSet("large", 2500, 1000, 667),
}
SETS = ("hot", *PHOTO_SETS)


@dataclass
class Target:
    name: str
    url: str
    pid: int


def prepare_app(work: Path, sets: list[str]) -> Path:
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
    for name in sets:
        if name in PHOTO_SETS:
            write_photos(app, PHOTO_SETS[name])
    return app


def write_extra(app: Path) -> None:
    target = app / "public" / "images" / EXTRA
    if not target.is_file():
        image = scene(1400, 1000, (60, 120, 200), (220, 180, 120), (255, 240, 200), 7)
        target.write_bytes(bytes(image.jpegsave_buffer(Q=88)))


def originals() -> list[Any]:
    """The photographs the sets are cut from (sRGB, 3 bands), or drawn scenes without them."""
    try:
        if not all((PHOTOS / name).exists() for name in PICKS):
            download_ukui(PHOTOS, PICKS)
        images = [pyvips.Image.new_from_file(str(PHOTOS / name)) for name in PICKS]
    except (OSError, subprocess.CalledProcessError, StopIteration):
        print("ukui-wallpapers unavailable: cutting drawn scenes", file=sys.stderr)
        images = [
            scene(3840, 2400, (40 * n, 120, 200), (220, 40 * n, 120), (255, 240, 200), n)
            for n in range(4)
        ]
    images = [image.colourspace("srgb") for image in images]
    return [image[:3] if image.bands > 3 else image for image in images]


def write_photos(app: Path, photos: PhotoSet) -> None:
    """``photos.count`` crops of the originals, each at its own scale and place (seeded)."""
    folder = app / "public" / "bench" / photos.name
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == photos.count:
        return
    folder.mkdir(parents=True, exist_ok=True)
    sources = originals()
    started = time.monotonic()
    for n in range(photos.count):
        rng = random.Random(f"{photos.name}-{n}")
        source = sources[n % len(sources)]
        least = max(photos.width / source.width, photos.height / source.height)
        scaled = source.resize(rng.uniform(least, min(1.0, least * 2.5)))
        left = rng.randrange(scaled.width - photos.width + 1)
        top = rng.randrange(scaled.height - photos.height + 1)
        crop = scaled.crop(left, top, photos.width, photos.height)
        crop.jpegsave(str(folder / photo_name(n)), Q=85)
    print(f"{photos.count} photos for {photos.name} in {time.monotonic() - started:.0f} s")


def photo_name(n: int) -> str:
    return f"p{n:05d}.jpg"


def urls_of(name: str) -> list[str]:
    if name == "hot":
        files = [f"/images/{file}" for file in (*IMAGES, EXTRA)]
        return [image_path(file, width) for file in files for width in HOT_WIDTHS]
    photos = PHOTO_SETS[name]
    files = [f"/bench/{name}/{photo_name(n)}" for n in range(photos.count)]
    return [image_path(file, width) for file in files for width in PHOTO_WIDTHS]


def image_path(file: str, width: int) -> str:
    return "/_next/image?" + urlencode({"url": file, "w": width, "q": 75})


def next_env() -> dict[str, str]:
    return {**os.environ, "NEXT_TELEMETRY_DISABLED": "1"}


@contextmanager
def process(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> Iterator[int]:
    """A server in its own process group (its pid), stopped (SIGTERM, then SIGKILL) by that
    group's id."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc.pid
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


def warm(target: Target, urls: list[str], every_worker: bool) -> None:
    """Every URL answered as a WebP HIT (``every_worker``: by each worker that may take a new
    connection), 4 URLs at a time, each thread on one keep-alive connection (a client made per
    request would cost the benchmark more CPU than the server's transforms)."""
    local = threading.local()
    clients: list[httpx.Client] = []

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=target.url, timeout=120)
            clients.append(local.client)
        made: httpx.Client = local.client
        return made

    def check(response: httpx.Response, path: str) -> None:
        if (
            response.status_code != 200
            or response.headers.get("x-nextjs-cache") != "HIT"
            or response.headers.get("content-type") != "image/webp"
        ):
            raise RuntimeError(f"{target.name} {path}: {dict(response.headers)}")

    def one(path: str) -> None:
        for _ in range(50):
            response = client().get(path, headers={"Accept": ACCEPT})
            if response.status_code != 200:
                raise RuntimeError(f"{target.name} {path}: {response.status_code}")
            if response.headers.get("x-nextjs-cache") == "HIT":
                check(response, path)
                break
            time.sleep(0.1)  # Next writes its cache entry after answering
        else:
            raise RuntimeError(f"{target.name} {path}: never a HIT")
        for _ in range(4 if every_worker else 0):  # new connections: each worker reads it
            with httpx.Client(base_url=target.url, timeout=60) as fresh:
                check(fresh.get(path, headers={"Accept": ACCEPT}), path)

    pool = ThreadPoolExecutor(4)
    try:
        list(pool.map(one, urls))
    finally:  # interrupted: the URLs not started are dropped
        pool.shutdown(cancel_futures=True)
        for made in clients:
            made.close()


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


def run_wrk(url: str, script: Path, args: argparse.Namespace) -> dict[str, float]:
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s"]
    out = subprocess.run(
        [*command, "-s", str(script), url], check=True, capture_output=True, text=True
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    result: dict[str, float] = json.loads(line.removeprefix("RESULT "))
    if result["non2xx"] or result["socket_errors"]:
        raise RuntimeError(f"wrk saw errors against {url}:\n{out}")
    return result


def profile(target: Target, name: str, script: Path, args: argparse.Namespace) -> None:
    """One more wrk run of ``target`` on set ``name``, sampled by py-spy (not counted)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    args.profile.mkdir(parents=True, exist_ok=True)
    out = args.profile / f"{target.name}-{name}.txt"
    command = [spy, "record", "--pid", str(target.pid), "--subprocesses", "--rate", "250"]
    command += ["--duration", str(args.duration), "--format", "raw", "--nonblocking", "--gil"]
    sampler = subprocess.Popen([*command, "-o", str(out)], stdout=subprocess.DEVNULL)
    try:
        result = run_wrk(target.url, script, args)
    finally:
        sampler.wait()
    print(f"\nprofile {target.name} {name}: {result['rps']:,.0f} rps while sampled; {out}")
    print(summary(out.read_text().splitlines(), top=15))


def tree_rss(pid: int) -> int:
    """VmRSS of ``pid`` and all its descendants, in bytes."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(child) for child in f.read().split())
            with open(f"/proc/{current}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def serve_command(repo: Path, app: Path, port: int, *flags: str) -> list[str]:
    command = [sys.executable, "-m", "handler.commands.cli", "serve", "--port", str(port)]
    command += ["--public-dir", str(app / "public"), "--config", str(app / ".next")]
    return [*command, *flags]


def serve_env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench-hits")
    parser.add_argument("--sets", default=",".join(SETS), help="[%(default)s]")
    parser.add_argument("--targets", default=",".join(TARGETS), help="[%(default)s]")
    parser.add_argument("--redis-sets", default="hot,catalogue", help="[%(default)s]")
    parser.add_argument("--baseline", type=Path, help="a checkout to run as before-1")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--json-out", type=Path, help="also write every figure here")
    parser.add_argument("--profile", type=Path, help="py-spy our targets into this folder")
    parser.add_argument(
        "--keep-caches",
        action="store_true",
        help="keep Next's image cache and ours' folders under --work between runs (the warm-up "
        "then finds most variants stored; Redis starts empty)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the servers on the way out
    sets = [name for name in args.sets.split(",") if name]
    names = [name for name in args.targets.split(",") if name]
    if args.baseline is not None:
        names.append("before-1")
        if any(name.startswith("redis") for name in names):
            names.append("before-r1")
    if unknown := set(sets) - set(SETS):
        sys.exit(f"unknown sets: {', '.join(sorted(unknown))}")
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install -y wrk")
    redis_binary = shutil.which("redis-server")
    if any(name.startswith("redis") for name in names) and redis_binary is None:
        sys.exit("redis-server is missing: apt-get install -y redis-server (or make redis)")
    args.work.mkdir(parents=True, exist_ok=True)
    app = prepare_app(args.work, sets)
    if not args.keep_caches:
        shutil.rmtree(app / ".next" / "cache" / "images", ignore_errors=True)
    urls = {name: urls_of(name) for name in sets}
    redis_sets = [name for name in sets if name in args.redis_sets.split(",")]
    sets_of = {  # which sets each target is measured on
        name: redis_sets if name.startswith(("redis", "before-r")) else sets for name in names
    }
    results: list[dict[str, Any]] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-hits-")))
        caches = args.work / "caches" if args.keep_caches else tmp
        scripts = {}
        for name in sets:
            scripts[name] = tmp / f"{name}.lua"
            scripts[name].write_text(LUA % (", ".join(json.dumps(u) for u in urls[name]), ACCEPT))
        redis: RedisServer | None = None
        if any(name.startswith("redis") for name in names):
            assert redis_binary is not None
            redis = start_redis(redis_binary, tmp)
            stack.callback(stop_redis, redis)
        targets: list[Target] = []
        for name in names:
            port = free_port()
            log = tmp / f"{name}.log"
            if name == "next":
                command = [*NEXT, "start", "--hostname", "127.0.0.1", "--port", str(port)]
                pid = stack.enter_context(process(command, app, next_env(), log))
            else:
                repo = args.baseline if name.startswith("before") else REPO
                workers = name[-1]
                if name.startswith(("redis", "before-r")):
                    assert redis is not None
                    flags = ["--store", "redis", "--redis-url", redis.url]
                else:
                    flags = ["--store", "filesystem", "--cache-dir", str(caches / "cache")]
                command = serve_command(repo, app, port, *flags, "--workers", workers)
                pid = stack.enter_context(process(command, repo, serve_env(repo), log))
            targets.append(Target(name, f"http://127.0.0.1:{port}", pid))
        for target in targets:
            wait_ready(target.url + "/", time.monotonic() + 60)
            for name in sets_of[target.name]:
                started = time.monotonic()
                warm(target, urls[name], every_worker=name == "hot")
                took = time.monotonic() - started
                print(f"{target.name}: {len(urls[name])} variants ({name}) warm in {took:.0f} s")
        for round_ in range(args.rounds):
            order = targets if round_ % 2 == 0 else targets[::-1]
            for name in sets:
                load = os.getloadavg()[0]
                for target in order:
                    if name not in sets_of[target.name]:
                        continue
                    result = run_wrk(target.url, scripts[name], args)
                    row: dict[str, Any] = {"round": round_ + 1, "set": name, "target": target.name}
                    row |= result | {"rss_mb": round(tree_rss(target.pid) / 1e6, 1)}
                    row["load1"] = round(load, 2)
                    results.append(row)
                    print(
                        f"round {round_ + 1} {name:9} {target.name:8} {result['rps']:8.0f} rps  "
                        f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
                        f"RSS {row['rss_mb']:6.1f} MB  (load {load:.2f})",
                        flush=True,
                    )
        if args.profile is not None:
            for target in targets:
                for name in sets_of[target.name] if target.name != "next" else ():
                    profile(target, name, scripts[name], args)
    report(results, sets, [t.name for t in targets], urls)
    document = {"variants": {name: len(urls[name]) for name in sets}, "runs": results}
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(document, indent=1))
    print(json.dumps(document))


def report(
    results: list[dict[str, Any]], sets: list[str], names: list[str], urls: dict[str, list[str]]
) -> None:
    print("\nmedians over rounds (rps: the range over rounds; RSS: the largest after any run)")
    header = f"{'set':22} {'target':8} {'rps':>8} {'range':>15} {'x next':>7} {'p99 ms':>7}"
    print(header + f" {'RSS MB':>7}")
    for name in sets:
        label = f"{name} ({len(urls[name]):,} variants)"
        medians: dict[str, float] = {}
        for target in names:
            rows = [r for r in results if r["target"] == target and r["set"] == name]
            if not rows:
                continue
            rps = [float(r["rps"]) for r in rows]
            medians[target] = statistics.median(rps)
            p99 = statistics.median(float(r["p99_ms"]) for r in rows)
            rss = max(float(r["rss_mb"]) for r in rows)
            ratio = f"{medians[target] / medians['next']:7.2f}" if "next" in medians else "      -"
            spread = f"{min(rps):,.0f}-{max(rps):,.0f}"
            print(
                f"{label:22} {target:8} {medians[target]:8,.0f} {spread:>15} {ratio} "
                f"{p99:7.2f} {rss:7.1f}"
            )


if __name__ == "__main__":
    main()
