"""Transforms in child processes (``serve``): a native crash, a runaway decode or a transform
over its memory fails its own request, not the worker with every request in flight on it.

One child per admission slot, forked from a forkserver that has pyvips loaded and replaced
before the next transform asks. Each transform runs under a resident-memory limit derived from
its plan, whose breach is a kill; a child that crashed or was killed answers 503. The limits,
the answers and why: docs/architecture.md, "Transforms in child processes".
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import multiprocessing
import os
import resource
import select
import signal
import socket
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal

import anyio
import pyvips

from handler.contract import errors
from handler.contract.config import ImagesConfig
from handler.contract.errors import ImageError
from handler.model import VariantKind
from handler.pipeline import allocator
from handler.pipeline.low_priority import NICENESS
from handler.pipeline.transform import Plan, Transformed, run_transform, setup_libvips

log = logging.getLogger(__name__)

POLL_SECONDS = 0.01  # how often a running child's resident memory is read
RESIDENT_FACTOR, RESIDENT_HEADROOM = 1.5, 64 << 20  # the enforced limit, over the plan
ADDRESS_FACTOR, ADDRESS_HEADROOM = 3, 256 << 20  # RLIMIT_AS, the backstop, over the plan
OVERDUE_GRACE_SECONDS = 1.0  # past libvips' own timeout before a child is killed
IDLE_TRIM_SECONDS = 1.0  # a child gives free heap pages back once idle this long
START_SECONDS = 60.0  # a child not ready by then is broken (only a hang gets there)
RETRY_AFTER = "1"  # a replacement child is ready in milliseconds
# The pipeline settings a child needs (the whole config holds compiled patterns: not picklable).
_CHILD_CONFIG = ("img_opt_timeout_seconds", "img_opt_max_input_pixels", "img_opt_mozjpeg")

_PAGE = os.sysconf("SC_PAGE_SIZE")
_CONTEXT = multiprocessing.get_context("forkserver")

FaultAction = Literal["hold", "segv", "hog", "grab", "hang"]
# Why a transform failed in its child: it died; it went over its memory; it ran on a second past
# libvips' own timeout; its request was cancelled (past its deadline: a 504); a bug (a 500).
Failure = Literal["crashed", "memory", "overdue", "cancelled", "error"]


@dataclass
class Fault:
    """A test hook (``IsolatedTransforms.inject``), never reachable over HTTP: the next
    transform's child receives its job, tells ``started``, waits for ``release``, then: ``hold``
    transforms as usual; instead of transforming, ``segv`` reads address 0 (a native crash),
    ``hog`` fills memory until it is stopped, ``grab`` asks for more address space than its
    limit at once, ``hang`` never answers."""

    action: FaultAction
    started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    pid: int = 0  # the child's, once started


@dataclass(frozen=True)
class _Job:
    """One transform, as sent to a child; ``source_bytes`` of source follow, unframed."""

    upstream: str
    content_type: str
    width: int
    quality: int
    memory: int
    seconds: float
    deadline: float | None  # time.monotonic(), the same clock in every process
    address_allowance: int  # bytes of address space over what the child holds now
    source_bytes: int
    header: _Header
    fault: FaultAction | None = None


@dataclass(frozen=True)
class _Header:
    """What ``run_transform`` reads of a plan's header (its orientation and colour handling:
    the interpretation, the EXIF orientation, whether there is an ICC profile), sent with the
    job so that the child need not read the header again: for a JPEG with Photoshop's extended
    XMP (5 MB of APP1 segments) that costs 10 ms of CPU. tests/system/test_isolation.py holds the
    child's bytes to the worker's."""

    interpretation: str
    orientation: Any  # the field's value, or None without one
    icc: bool

    @classmethod
    def of(cls, header: pyvips.Image) -> _Header:
        orientation = header.get("orientation") if header.get_typeof("orientation") else None
        return cls(header.interpretation, orientation, bool(header.get_typeof("icc-profile-data")))

    @functools.lru_cache(maxsize=64)  # noqa: B019 (a few dozen small images, for the process)
    def image(self) -> pyvips.Image:
        """A 1x1 image carrying these fields and no others (the ICC profile's presence only:
        the profile itself is read from the source by ``thumbnail``). Only read, so one per
        set of fields serves every transform (making one costs 0.3 ms)."""
        image = pyvips.Image.black(1, 1).copy(interpretation=self.interpretation)
        if self.orientation is not None:
            image.set_type(pyvips.GValue.gint_type, "orientation", self.orientation)
        if self.icc:
            image.set_type(pyvips.GValue.blob_type, "icc-profile-data", b"\0")
        return image


@dataclass(frozen=True)
class _Reply:
    """A child's answer; an optimized body follows on its own."""

    # original: the source served as it is (an animation, ``handler/pipeline/animated.py``)
    kind: Literal["optimized", "fallback", "original", "memory", "error"]
    transient: bool = False
    detail: str = ""


@dataclass(frozen=True)
class _Outcome:
    reply: _Reply | None  # None: the child failed (``failure``)
    body: bytes = b""
    failure: Failure | None = None
    detail: str = ""


class _Child:
    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.sock = _raw(conn)
        self.transforms = 0
        self.healthy = True
        self._poller = select.poll()  # one for its life: cheaper than Connection.poll's own
        self._poller.register(conn.fileno(), select.POLLIN)
        try:  # open for the child's life: read 100 times a second while it transforms
            self._statm = os.open(f"/proc/{self.pid}/statm", os.O_RDONLY)
        except OSError:  # already gone: its pipe says so
            self._statm = -1

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def answered(self, seconds: float) -> bool:
        """Whether it answered (or hung up) within ``seconds``."""
        return bool(self._poller.poll(seconds * 1000))

    def anon_bytes(self) -> int:
        """Resident anonymous memory (heap, not the libraries' pages); 0 once gone."""
        try:
            fields = os.pread(self._statm, 128, 0).split()
            return (int(fields[1]) - int(fields[2])) * _PAGE
        except (OSError, ValueError, IndexError):
            return 0

    def kill(self) -> None:
        self.healthy = False
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Close its pipe (an idle child exits on it), kill it if busy, reap it."""
        self.healthy = False
        self.sock.close()
        self.conn.close()
        if self._statm >= 0:
            os.close(self._statm)
            self._statm = -1
        self.process.join(START_SECONDS)
        if self.process.exitcode is None:
            self.kill()
            self.process.join(START_SECONDS)


class IsolatedTransforms:
    """``run(plan, deadline=…)`` in one of ``children`` child processes.

    The caller guarantees at most ``children`` transforms at once (an admission slot each).
    """

    def __init__(self, config: ImagesConfig, *, children: int, transforms_per_child: int) -> None:
        self.children = max(1, children)
        self.transforms_per_child = max(1, transforms_per_child)
        self.failures: Counter[Failure] = Counter()  # transforms failed in their child, by why
        self.started = 0  # children started, replacements included
        self.retired = 0  # children replaced after ``transforms_per_child`` transforms
        self._config = {name: getattr(config, name) for name in _CHILD_CONFIG}
        self._fault: Fault | None = None
        self._closed = False
        _CONTEXT.set_forkserver_preload([__name__])  # pyvips loaded once, in the forkserver
        self._starter = ThreadPoolExecutor(1, thread_name_prefix="isolation-start")
        self._waiting = ThreadPoolExecutor(self.children, thread_name_prefix="isolation")
        self._free: deque[Future[_Child]] = deque(self._start() for _ in range(self.children))
        self._freed: asyncio.Event | None = None

    def inject(self, fault: Fault) -> None:
        """Test hook: the next transform does ``fault`` in its child (see ``Fault``)."""
        self._fault = fault

    def pids(self) -> list[int]:
        """The children started and ready now (tests, the benchmark)."""
        return [
            future.result().pid
            for future in list(self._free)  # a copy: tests call this from other threads
            if future.done() and not future.cancelled() and future.exception() is None
        ]

    async def run(self, plan: Plan, *, deadline: float) -> Transformed:
        slot = await self._checkout()
        while True:
            try:  # shielded: a cancelled caller must not cancel the child's start
                child = await asyncio.shield(asyncio.wrap_future(slot))
            except asyncio.CancelledError:
                self._checkin(slot)  # still starting: the next transform takes it
                raise
            except Exception as exc:
                log.error("a transform child could not start: %r", exc)
                self._checkin(self._start())
                raise self._failed() from exc
            if not child.answered(0):  # an idle child says nothing, unless it is gone
                break
            exit_text = _exit_text(child.process.exitcode)
            log.warning("transform child %d died while idle (%s): replaced", child.pid, exit_text)
            child.healthy = False
            slot = self._replace(child)
        fault, self._fault = self._fault, None
        try:
            outcome = await self._exchange_in_thread(child, plan, deadline, fault)
        finally:
            child.transforms += 1
            self._checkin(slot if self._keep(child) else self._replace(child))
        return self._result(plan, outcome, child)

    def close(self) -> None:
        """Stop every child (the app's shutdown); a transform still running is killed."""
        self._closed = True
        while self._free:
            self._free.popleft().add_done_callback(_stop_started)
        self._starter.shutdown(wait=True)
        self._waiting.shutdown(wait=False)

    async def _checkout(self) -> Future[_Child]:
        """A free slot, one whose child is ready if any (a replacement may still be starting)."""
        while not self._free:  # only if the caller broke its promise of one slot each
            self._freed = self._freed or asyncio.Event()
            self._freed.clear()
            await self._freed.wait()
        ready = [future for future in self._free if future.done()]
        slot = ready[0] if ready else self._free[0]
        self._free.remove(slot)
        return slot

    def _checkin(self, slot: Future[_Child]) -> None:
        self._free.append(slot)
        if self._freed is not None:
            self._freed.set()

    def _keep(self, child: _Child) -> bool:
        return child.healthy and child.transforms < self.transforms_per_child

    def _replace(self, child: _Child) -> Future[_Child]:
        """Stop ``child`` (in the background) and start its successor at once."""
        if child.healthy:
            self.retired += 1
        try:
            self._starter.submit(child.stop)
        except RuntimeError:  # closed meanwhile (a transform outlived the app): no more starts
            child.kill()
        return self._start()

    def _start(self) -> Future[_Child]:
        with contextlib.suppress(RuntimeError):  # the starter shut down by ``close`` meanwhile
            if not self._closed:
                return self._starter.submit(self._start_child)
        failed: Future[_Child] = Future()
        failed.set_exception(RuntimeError("the transform children are closed"))
        return failed

    def _start_child(self) -> _Child:
        ours, theirs = _CONTEXT.Pipe()
        process = _CONTEXT.Process(
            target=_child_main,
            args=(theirs, self._config),
            name="next-image-transform",
            daemon=True,
        )
        process.start()
        theirs.close()
        child = _Child(process, ours)
        try:
            if not ours.poll(START_SECONDS) or ours.recv_bytes() != b"ready":
                raise RuntimeError("no ready message")
        except BaseException:
            child.kill()
            child.stop()
            raise
        self.started += 1
        return child

    async def _exchange_in_thread(
        self, child: _Child, plan: Plan, deadline: float, fault: Fault | None
    ) -> _Outcome:
        """The exchange on a thread of its own; a cancelled caller kills the child at once and
        waits only for the thread to see it die."""
        work = asyncio.get_running_loop().run_in_executor(
            self._waiting, self._exchange, child, plan, deadline, fault
        )
        try:
            return await asyncio.shield(work)
        except BaseException:
            child.kill()
            self.failures["cancelled"] += 1
            with anyio.CancelScope(shield=True):
                await asyncio.wait([work])
            raise

    def _exchange(
        self, child: _Child, plan: Plan, deadline: float, fault: Fault | None
    ) -> _Outcome:
        """Send the job, then wait for the answer while watching memory and time."""
        timeout = self._config["img_opt_timeout_seconds"]
        own = time.monotonic() + timeout if timeout > 0 else None
        stop = min(deadline, own) if own is not None else deadline
        kill_at = stop + OVERDUE_GRACE_SECONDS
        allowance = int(plan.memory * ADDRESS_FACTOR) + ADDRESS_HEADROOM
        job = _Job(
            plan.upstream,
            plan.content_type,
            plan.width,
            plan.quality,
            plan.memory,
            plan.seconds,
            deadline,
            allowance,
            len(plan.source),
            _Header.of(plan.header),
            fault.action if fault else None,
        )
        resident_limit = child.anon_bytes() + int(plan.memory * RESIDENT_FACTOR)
        resident_limit += RESIDENT_HEADROOM
        try:
            child.conn.send(job)
            child.sock.sendall(plan.source)
            if fault is not None:
                fault.pid = child.pid
                fault.started.set()
            released = fault is None
            while not child.answered(POLL_SECONDS):
                if fault is not None and not released and fault.release.is_set():
                    child.conn.send_bytes(b"go")
                    released = True
                resident = child.anon_bytes()
                if resident > resident_limit:
                    child.kill()
                    detail = f"{resident >> 20} MiB resident, limit {resident_limit >> 20} MiB"
                    return _Outcome(None, failure="memory", detail=detail)
                if time.monotonic() > kill_at:
                    child.kill()
                    return _Outcome(None, failure="overdue")
            reply: _Reply = child.conn.recv()
            body = child.conn.recv_bytes() if reply.kind == "optimized" else b""
            if reply.kind in ("memory", "error"):
                child.healthy = False  # it survived, but is not trusted with another
        except (EOFError, OSError):
            child.healthy = False
            child.process.join(START_SECONDS)
            return _Outcome(None, failure="crashed", detail=_exit_text(child.process.exitcode))
        return _Outcome(reply, body)

    def _result(self, plan: Plan, outcome: _Outcome, child: _Child) -> Transformed:
        reply = outcome.reply
        if reply is not None and reply.kind == "optimized":
            return Transformed(outcome.body, plan.content_type, "optimized")
        if reply is not None and reply.kind in ("fallback", "original"):
            kind: VariantKind = "original" if reply.kind == "original" else "fallback"
            return Transformed(plan.source, plan.upstream, kind, transient=reply.transient)
        failure: Failure = outcome.failure or (
            "memory" if reply and reply.kind == "memory" else "error"
        )
        detail = outcome.detail or (reply.detail if reply else "")
        self.failures[failure] += 1
        if failure == "overdue":  # libvips did not stop at its timeout: the timeout's answer
            log.warning("transform child %d overran its timeout: killed", child.pid)
            return Transformed(plan.source, plan.upstream, "fallback", transient=True)
        if failure == "error":  # a bug of ours in the child: a 500, as in-process
            raise RuntimeError(f"transform child {child.pid} failed: {detail}")
        log.warning("transform child %d %s (%s): 503, not stored", child.pid, failure, detail)
        raise self._failed()

    @staticmethod
    def _failed() -> ImageError:
        headers = {"Retry-After": RETRY_AFTER, "Cache-Control": "no-store"}
        return ImageError(503, errors.TRANSFORM_FAILED, category="pipeline", headers=headers)


def _raw(conn: Connection) -> socket.socket:
    """The connection's socket, for source bytes: read whole in one call (``MSG_WAITALL``)
    rather than by ``recv_bytes``, which allocates the full size for every chunk it reads (an
    8.9 MB source: 10.6 ms against 2.1 ms)."""
    return socket.socket(fileno=os.dup(conn.fileno()))


def can_have_children() -> bool:
    """Whether this process may start children: not a daemonic one (``multiprocessing.Pool``'s
    workers, as ``next-image warm`` runs)."""
    return not multiprocessing.current_process().daemon


def _stop_started(started: Future[_Child]) -> None:
    if not started.cancelled() and started.exception() is None:
        started.result().stop()


def _exit_text(exitcode: int | None) -> str:
    if exitcode is None:
        return "gone"
    if exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"


# --- In the child ---------------------------------------------------------------------------


def _child_main(conn: Connection, config_fields: dict[str, Any]) -> None:
    """Serve jobs until the parent closes the pipe (or dies)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the parent decides
    with contextlib.suppress(OSError):
        os.nice(NICENESS)  # below the worker's event loop, as its transform threads were
    setup_libvips()
    allocator.limit_arenas()
    config = replace(ImagesConfig(), **config_fields)
    sock = _raw(conn)
    conn.send_bytes(b"ready")
    trim_due = False
    while True:
        try:
            if not conn.poll(IDLE_TRIM_SECONDS if trim_due else None):
                allocator.release_free_memory()  # idle for a while: not after each transform
                trim_due = False
                continue
            job: _Job = conn.recv()
            source = sock.recv(job.source_bytes, socket.MSG_WAITALL)
            if len(source) < job.source_bytes:
                return  # the parent went away mid-send
            reply, body = _transform(job, source, config, conn)
            conn.send(reply)
            if reply.kind == "optimized":
                conn.send_bytes(body)
        except (EOFError, OSError):
            return
        trim_due = True


def _transform(
    job: _Job, source: bytes, config: ImagesConfig, conn: Connection
) -> tuple[_Reply, bytes]:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _own_status("VmSize") + job.address_allowance
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        if job.fault is not None:
            _fault(job.fault, conn, job.address_allowance)
        plan = Plan(
            source,
            job.upstream,
            job.content_type,
            job.width,
            job.quality,
            job.header.image(),
            job.memory,
            job.seconds,
        )
        result = run_transform(plan, config, deadline=job.deadline)
    except MemoryError:
        return _Reply("memory", detail=f"address space limit {limit >> 20} MiB"), b""
    except Exception as exc:
        return _Reply("error", detail=repr(exc)), b""
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    if result.kind == "optimized":
        return _Reply("optimized"), result.body
    if result.kind == "original":
        return _Reply("original"), b""
    return _Reply("fallback", transient=result.transient), b""


def _fault(action: FaultAction, conn: Connection, allowance: int) -> None:
    """The test hooks' misbehaviour (``Fault``), once the parent says go."""
    conn.recv_bytes()
    if action == "hold":
        return
    if action == "segv":
        ctypes.string_at(0)  # a NULL read in native code: SIGSEGV
    elif action == "hog":
        hoard = []
        while True:  # until the parent kills it (or the backstop refuses: MemoryError)
            hoard.append(b"\1" * (16 << 20))
    elif action == "grab":
        bytearray(2 * allowance)  # more than the limit leaves (not the machine): MemoryError
    elif action == "hang":
        threading.Event().wait()


def _own_status(name: str) -> int:
    """A ``/proc/self/status`` figure in bytes (``VmSize``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    return 0
