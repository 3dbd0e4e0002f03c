"""What several bench scripts share: the checkout, the photos, a free port, ``next-image serve``
started, waited for, measured and stopped, a request timed and its answer checked, and the S3 calls
of a Lambda handler recorded.

A script runs as ``python bench/<what>.py``: it puts the checkout first on ``sys.path`` (this
checkout's ``handler``, not an installed one) before importing this module::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo
    from bench.common import REPO, free_port  # noqa: E402
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "bench" / "photos"  # ukui-wallpapers' photos, fetched once (git-ignored)
CACHE = PHOTOS / "overload"  # the photo sets prepare_photos makes, upscaled ones included
# miss_cost.py's jobs: two photographs and two PNG illustrations.
PICKS = ("rhythm.jpg", "string.jpg", "calla.png", "goldfish.png")
# The richest of the package's pictures (the flat vector ones compress to almost nothing).
UKUI_PICKS = (
    "2004default.jpg",
    "calla.png",
    "firstgeneration.jpg",
    "fluent-color.png",
    "goldfish.png",
    "rhythm.jpg",
    "string.jpg",
    "the-mouse.jpg",
)
HOT_WIDTHS = (64, 128, 256, 384, 640, 828, 1080)  # Next's default imageSizes and deviceSizes


ACCEPTS = {
    "webp": "image/webp,image/apng,image/*,*/*;q=0.8",
    "avif": "image/avif,image/webp,image/apng,image/*,*/*;q=0.8",
}


FORMATS = '{"formats": ["image/avif", "image/webp"]}'  # Next's default negotiates WebP only


LOADER = {"image/avif": "heifload", "image/webp": "webpload"}


def print_table(columns: Sequence[tuple[str, int]], rows: Iterable[Sequence[object]]) -> None:
    """A header of column names, then the rows: each cell right-aligned to its column's width, or
    left-aligned where the width is negative."""

    def line(cells: Sequence[object]) -> str:
        return "".join(
            f"{cell!s:<{-width}}" if width < 0 else f"{cell!s:>{width}}"
            for cell, (_, width) in zip(cells, columns, strict=True)
        )

    print(line([name for name, _ in columns]))
    for row in rows:
        print(line(row))


# --- photos ---------------------------------------------------------------------------------------


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


def unique(data: bytes, tag: str) -> bytes:
    """The same picture with different bytes: a JPEG COM segment or a PNG tEXt chunk."""
    payload = tag.encode()
    if data[:2] == b"\xff\xd8":
        return data[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + data[2:]
    chunk = b"tEXt" + b"bench\0" + payload
    crc = struct.pack(">I", zlib.crc32(chunk))
    return data[:33] + struct.pack(">I", len(chunk) - 4) + chunk + crc + data[33:]


@dataclass(frozen=True)
class Photo:
    name: str
    data: bytes
    width: int
    height: int
    upscaled: bool


def prepare_photos(photos_dir: Path | None, cache: Path, upscale_width: int) -> list[Photo]:
    """The source set: picks from ``photos_dir`` (or ukui-wallpapers), every other one upscaled."""
    import pyvips

    folder = photos_dir or _ukui(cache / "ukui")
    if all((folder / name).exists() for name in UKUI_PICKS):
        paths = [folder / name for name in UKUI_PICKS]
    else:
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise SystemExit(f"no JPEG or PNG photos in {folder}")
    photos = []
    for i, path in enumerate(paths):
        image = pyvips.Image.new_from_file(str(path))
        if upscale_width and i % 2 == 1 and image.width < upscale_width:
            target = cache / f"upscaled-{upscale_width}" / path.name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                bigger = image.resize(upscale_width / image.width, kernel="lanczos3")
                options = {"Q": 90} if path.suffix.lower() != ".png" else {"compression": 6}
                bigger.write_to_file(str(target), **options)
            path = target
            image = pyvips.Image.new_from_file(str(path))
        photos.append(
            Photo(path.name, path.read_bytes(), image.width, image.height, path.parent != folder)
        )
    return photos


def _ukui(folder: Path) -> Path:
    if not all((folder / name).exists() for name in UKUI_PICKS):
        try:
            download_ukui(folder, UKUI_PICKS)
        except (OSError, subprocess.CalledProcessError, StopIteration) as exc:
            raise SystemExit(
                f"could not fetch ukui-wallpapers ({exc}); pass --photos DIR with JPEG/PNG photos"
            ) from None
    return folder


# --- next-image serve -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_answering(client: httpx.Client, probe: str, seconds: float, what: str) -> None:
    """Poll ``probe`` until it answers (any status); ``SystemExit`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            client.get(probe)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not start")


@dataclass(frozen=True)
class Target:
    label: str
    repo: Path
    cmd: tuple[str, ...]  # what ``serve ...`` is appended to
    env: tuple[tuple[str, str], ...]
    args: tuple[str, ...]


def server_env(target: Target) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target.repo), env.get("PYTHONPATH")]))
    env.update(target.env)
    return env


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    cmd: list[str] = field(default_factory=list)


def start_server(target: Target, public: Path, tmp: Path) -> Server:
    port = free_port()
    cmd = [
        *target.cmd,
        "serve",
        "--store",
        "memory",
        "--public-dir",
        str(public),
        "--port",
        str(port),
        "--config",
        FORMATS,
        *target.args,
    ]
    log = tmp / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd,
            cwd=target.repo,
            env=server_env(target),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(process, port, log, cmd)


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


async def wait_ready(client: httpx.AsyncClient, server: Server) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            await client.get("/_next/image")  # a 400 is an answer
            return
        except httpx.TransportError:
            await asyncio.sleep(0.1)
    tail = server.log.read_text(errors="replace")[-2000:]
    raise SystemExit(f"the server did not start: {server.cmd}\n{tail}")


# --- /proc sampling -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    t: float  # time.monotonic()
    rss: int  # bytes, summed over the process tree
    hwm: int
    threads: int
    cpu: float  # user + system seconds of the live processes


_TICK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return pids


def read_tree(pid: int) -> Sample | None:
    rss = hwm = threads = 0
    cpu = 0.0
    seen = False
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                status = f.read()
            with open(f"/proc/{p}/stat") as f:
                stat = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        fields = {k: v for k, _, v in (line.partition(":") for line in status.splitlines())}
        if "VmRSS" not in fields:  # a zombie
            continue
        seen = True
        rss += int(fields["VmRSS"].split()[0]) * 1024
        hwm += int(fields["VmHWM"].split()[0]) * 1024
        threads += int(fields["Threads"])
        cpu += (int(stat[11]) + int(stat[12])) / _TICK
    return Sample(time.monotonic(), rss, hwm, threads, cpu) if seen else None


# --- one request ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    file: str
    photo: Photo
    width: int
    accept: str


@dataclass
class Result:
    job: Job
    status: int  # 0: no HTTP answer (error says why)
    seconds: float
    size: int = 0
    retry_after: str | None = None
    cache_control: str | None = None
    x_cache: str | None = None
    content_type: str | None = None
    body: bytes = b""
    error: str | None = None
    verdict: str = ""
    got: str = ""  # what a 200 decoded as: loader (and AV1) and width


def params(file: str, width: int) -> dict[str, str | int]:
    return {"url": f"/{file}", "w": width, "q": 75}


async def request(client: httpx.AsyncClient, job: Job) -> Result:
    started = time.monotonic()
    try:
        response = await client.get(
            "/_next/image", params=params(job.file, job.width), headers={"accept": job.accept}
        )
    except httpx.HTTPError as exc:
        return Result(job, 0, time.monotonic() - started, error=type(exc).__name__)
    return Result(
        job,
        response.status_code,
        time.monotonic() - started,
        len(response.content),
        response.headers.get("retry-after"),
        response.headers.get("cache-control"),
        response.headers.get("x-nextjs-cache"),
        response.headers.get("content-type"),
        response.content,
    )


def verify(result: Result, fast: float) -> str:
    """The result's category: correct_200, bad_200, fast_503, slow_503, 504, error, other."""
    import pyvips

    if result.status == 0:
        return "error"
    if result.status == 503:
        return "fast_503" if result.seconds < fast else "slow_503"
    if result.status == 504:
        return "504"
    if result.status != 200:
        return "other"
    try:
        image: Any = pyvips.Image.new_from_buffer(result.body, "")
        loader = str(image.get("vips-loader"))
        width = int(image.width)
        if image.get_typeof("heif-compression"):
            loader += "/" + str(image.get("heif-compression"))
    except pyvips.Error:
        result.got = "undecodable"
        return "bad_200"
    result.got = f"{loader} {width}"
    job = result.job
    expected_width = min(job.width, job.photo.width)
    if job.accept == "image/avif":
        right_type = loader.startswith("heifload") and loader.endswith("/av1")
    else:
        right_type = loader.startswith(LOADER[job.accept])
    return "correct_200" if right_type and width == expected_width else "bad_200"


# --- a Lambda handler's S3 calls ------------------------------------------------------------------


def record_of(key: str) -> str:
    """Which kind of object an S3 call touched, from its key."""
    for kind in ("pointer", "variant", "source"):
        if f"_next/image-{kind}s/" in key:
            return kind
    return "asset"


@dataclass
class Recorder:
    """Every S3 call of the shared client (its operation, record and duration) and every
    request's stage times, as the request log reports them."""

    calls: list[tuple[str, float]] = field(default_factory=list)
    stages: list[dict[str, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, *clients: Any) -> None:
        """Record the calls of ``clients`` (the store's and the sources' S3 clients)."""
        for client in clients:
            client.meta.events.register("before-call.s3", self._before)
            for event in ("after-call.s3", "after-call-error.s3"):
                client.meta.events.register(event, self._after)
        from handler.http.observability import RequestObserver

        observe = RequestObserver.__call__

        def observed(observer: RequestObserver, request: Any, record: Any) -> None:
            self.stages.append(dict(record.get("stages_ms", {})))
            observe(observer, request, record)

        RequestObserver.__call__ = observed  # type: ignore[method-assign,assignment]

    def _before(self, model: Any, params: dict[str, Any], context: Any, **_: Any) -> None:
        context["bench"] = (model.name, params.get("url_path", ""), time.perf_counter())

    def _after(self, context: Any, **_: Any) -> None:
        name, path, started = context.pop("bench")
        with self._lock:
            self.calls.append((f"{name} {record_of(path)}", (time.perf_counter() - started) * 1e3))

    def take(self) -> tuple[list[tuple[str, float]], dict[str, float]]:
        """The calls and stage times of the request just answered; the recorder starts over."""
        calls, stages = list(self.calls), (self.stages[-1] if self.stages else {})
        self.calls.clear()
        self.stages.clear()
        return calls, stages


def summary(requests: list[tuple[list[tuple[str, float]], dict[str, float]]]) -> dict[str, Any]:
    """Per request: S3 calls by kind, their summed time, and each stage's mean time."""
    n = len(requests)
    calls = [call for request_calls, _ in requests for call in request_calls]
    kinds = Counter(kind for kind, _ in calls)
    stage_names = sorted({name for _, stages in requests for name in stages})
    return {
        "s3_calls_per_request": round(len(calls) / n, 2),
        "s3_calls": {kind: round(count / n, 2) for kind, count in sorted(kinds.items())},
        "s3_ms_per_request": round(sum(ms for _, ms in calls) / n, 1),
        "stages_ms": {
            name: round(sum(stages.get(name, 0.0) for _, stages in requests) / n, 1)
            for name in stage_names
        },
    }


# --- the Lambda init ------------------------------------------------------------------------------


BUDGET_MS = 400.0  # with FastAPI; SnapStart restores do not pay it


LAMBDA_ENV = {
    "NEXT_IMAGE_BUCKET": "next-image-variants",
    "NEXT_IMAGE_ASSETS_BUCKET": "next-image-assets",
    "NEXT_IMAGE_ASSETS_PREFIX": "_assets/",
    "AWS_DEFAULT_REGION": "us-east-1",
}


_TIMED = (
    "import time; t = time.perf_counter(); import handler.entry.lambda_handler; "
    "print((time.perf_counter() - t) * 1000)"
)


def lambda_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXT_IMAGE_")}
    return env | LAMBDA_ENV


def import_ms(runs: int) -> list[float]:
    """Wall-clock milliseconds of the import, one fresh process per run."""
    times = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", _TIMED],
            cwd=REPO,
            env=lambda_env(),
            check=True,
            capture_output=True,
        )
        times.append(float(out.stdout.decode().strip().splitlines()[-1]))
    return times
