"""``next-image serve --workers N`` as an operator runs it: real processes, real sockets, signals.

The supervisor's workers are found as its children in ``/proc`` (``multiprocessing`` spawns them
with ``spawn_main`` on their command line, which tells them from its resource tracker), and the
work each one did is read from its CPU time there, so no response is changed for the tests.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kit import imagegen
from kit.paths import REPO
from kit.support import HANG_SECONDS, Route, free_port, wait_for
from kit.upstream_server import serve

STARTUP_SECONDS = HANG_SECONDS
CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith("NEXT_IMAGE_") and k != "PROMETHEUS_MULTIPROC_DIR"
}


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> set[int]:
        """The live worker processes under the supervisor."""
        found: set[int] = set()
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            try:
                children = (task / "children").read_text().split()
            except FileNotFoundError:  # a thread that just ended
                continue
            found.update(int(pid) for pid in children if _is_worker(int(pid)))
        return found

    def wait_for_new_worker(self, known: set[int]) -> int:
        new: set[int] = set()
        wait_for(lambda: new.update(self.workers() - known) or new, "a new worker")
        return new.pop()

    def wait_until_serving(self, workers: int) -> None:
        """Until ``workers`` workers in all (replacements included) have started serving."""
        wait_for(
            lambda: self.log.read_text().count("Application startup complete.") >= workers,
            f"{workers} workers started:\n{self.log.read_text()}",
        )


def _is_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def serving(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``next-image serve`` on a free port, answering; stopped, with all its workers, at the end."""
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    with log.open("wb") as sink:  # a file, not a pipe: a full pipe would block the server
        process = subprocess.Popen(
            [sys.executable, "-m", "handler.commands.cli", "serve", "--port", str(port), *args],
            env=CLEAN_ENV | (env or {}),
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, port, log)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _answers(server):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        seen = server.workers()
        yield server
    finally:
        if process.poll() is None:
            seen |= server.workers()
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in seen:  # workers outliving a supervisor that failed to stop them
            if _is_worker(pid):
                os.kill(pid, signal.SIGKILL)


def _answers(server: Server) -> bool:
    try:
        return httpx.get(server.url + "/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_finishes_the_request_in_flight_refuses_new_ones_and_exits_0(
    tmp_path: Path, workers: str
) -> None:
    """The request in flight is held at the upstream until the test has seen new connections
    refused and the server still running: the drain waits for it, however long that takes."""
    timeout = 120  # the request budget, and so the drain's: only a hang reaches it
    with serve() as upstream:
        photo = imagegen.jpeg(800, 600)
        held = threading.Event()
        upstream.routes["/slow.jpg"] = Route(
            body=photo, headers={"Content-Type": "image/jpeg"}, gate=held
        )
        args = ("--workers", workers, "--origin", upstream.url(""), "--timeout", str(timeout))
        env = {"NEXT_IMAGE_FETCH_TIMEOUT": str(timeout)}
        with serving(tmp_path, *args, env=env) as server:
            answered: list[httpx.Response] = []
            slow = threading.Thread(
                target=lambda: answered.append(
                    httpx.get(server.url + "/_next/image?url=/slow.jpg&w=640&q=75", timeout=timeout)
                )
            )
            slow.start()
            try:
                wait_for(lambda: upstream.hits.get("/slow.jpg"), "the worker fetching it")
                server.process.send_signal(signal.SIGTERM)
                wait_for(lambda: refuses_connections(server.port), "new connections refused")
                assert slow.is_alive()  # refused while the slow request is still in flight
                assert server.process.poll() is None  # the drain waits for it
            finally:
                held.set()
                slow.join(timeout=HANG_SECONDS)
            # Exits once it is answered, not at the end of the drain's budget.
            assert server.process.wait(timeout=HANG_SECONDS) == 0
            assert refuses_connections(server.port)
    assert len(answered) == 1
    response = answered[0]
    assert response.status_code == 200
    assert imagegen.decode(response.content)[:3] == ("jpeg", 640, 480)


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None  # None: the connection failed


def test_a_killed_worker_is_replaced_and_only_its_requests_in_flight_fail(
    tmp_path: Path,
) -> None:
    public = tmp_path / "public"
    public.mkdir()
    (public / "a.png").write_bytes(imagegen.png(300, 200))
    with serving(tmp_path, "--workers", "2", "--public-dir", str(public), "--docs") as server:
        assert httpx.get(server.url + "/openapi.json").status_code == 200  # --docs reached them
        first, second = sorted(server.workers())
        outcomes: list[Outcome] = []
        stop = threading.Event()

        def stream() -> None:
            limits = httpx.Limits(max_keepalive_connections=0)  # a new connection per request
            with httpx.Client(base_url=server.url, timeout=10, limits=limits) as client:
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        status: int | None = client.get(
                            "/_next/image?url=/a.png&w=640&q=75"
                        ).status_code
                    except httpx.TransportError:
                        status = None
                    outcomes.append(Outcome(started, time.monotonic(), status))

        clients = [threading.Thread(target=stream) for _ in range(3)]
        for thread in clients:
            thread.start()

        def answered_since(moment: float) -> int:
            return sum(o.status == 200 for o in list(outcomes) if o.started > moment)

        try:
            wait_for(lambda: answered_since(0) >= 3, "the clients answered")
            os.kill(first, signal.SIGKILL)
            first_killed = time.monotonic()
            # The supervisor checks every half second, and sees a death at once.
            replacement = server.wait_for_new_worker({first, second})
            server.wait_until_serving(3)  # the two first workers and the replacement
            os.kill(second, signal.SIGKILL)  # now only replacements can answer
            second_killed = time.monotonic()
            server.wait_for_new_worker({first, second, replacement})
            wait_for(lambda: answered_since(second_killed) >= 10, "answers from replacements")
        finally:
            stop.set()
            for thread in clients:
                thread.join(timeout=15)
    failed = [o for o in outcomes if o.status is None]
    assert {o.status for o in outcomes} <= {200, None}  # never a 5xx
    # A request fails only if it was in flight on a worker when that worker was killed: at most
    # one per client and kill, and none that started after the last kill.
    assert len(failed) <= 2 * len(clients)
    for outcome in failed:
        assert outcome.started < first_killed or outcome.ended >= second_killed
        assert outcome.started < second_killed
    after = [o for o in outcomes if o.started > second_killed]
    assert len(after) >= 10  # answered by the replacements alone
    assert all(o.status == 200 for o in after)


def test_concurrent_requests_are_spread_over_the_workers(tmp_path: Path) -> None:
    """Both workers take a real share of a stream of transforms, by their own CPU time.

    The kernel hands each new connection to whichever worker accepts it first: two requests sent
    together can land on one worker, and so can every request of a few keep-alive connections.
    Over a stream of new connections, both work.
    """
    public = tmp_path / "public"
    public.mkdir()
    for seed in range(2):
        (public / f"photo{seed}.jpg").write_bytes(imagegen.noise_jpeg(1200, 900, seed=seed))
    jobs = iter(
        itertools.product(range(2), (640, 750, 828, 1080), ("image/webp", "image/jpeg"))
    )  # sixteen distinct variants: every request is a transform
    lock = threading.Lock()
    statuses: list[int] = []
    with serving(tmp_path, "--workers", "2", "--public-dir", str(public)) as server:
        workers = sorted(server.workers())
        before = [cpu_seconds(pid) for pid in workers]

        def client() -> None:
            limits = httpx.Limits(max_keepalive_connections=0)  # each request a new connection
            with httpx.Client(base_url=server.url, timeout=30, limits=limits) as http:
                while True:
                    with lock:
                        job = next(jobs, None)
                    if job is None:
                        return
                    seed, width, accept = job
                    url = f"/_next/image?url=/photo{seed}.jpg&w={width}&q=75"
                    statuses.append(http.get(url, headers={"accept": accept}).status_code)

        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(timeout=60)
        used = [cpu_seconds(pid) - cpu for pid, cpu in zip(workers, before, strict=True)]
    assert statuses == [200] * 16
    assert min(used) > 0.1 * sum(used), used


def test_a_worker_that_cannot_start_stops_the_service_with_an_error(tmp_path: Path) -> None:
    """A bad config fails every worker the same way: the supervisor stops instead of replacing
    them forever, and ``serve`` exits with uvicorn's startup-failure code."""
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "handler.commands.cli", "serve", "--port", str(free_port())]
    command += ["--workers", "2", "--config", '{"images": {"bogus": true}}']
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            env=CLEAN_ENV,
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        assert process.wait(timeout=STARTUP_SECONDS) == 3
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "cannot build the app" in log.read_text()
