"""One warm process: its own optimizer, built as ``serve`` builds it, asked for one variant at a
time exactly as the route asks it (``validate_params``, then ``Coordinator.serve``), so the stored
keys, bytes and headers are the ones a request would have produced.

One variant at a time per process: admission control never queues it, so it never refuses it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from handler.commands.warm.images import Job
from handler.contract.errors import ImageError
from handler.contract.validate import validate_params
from handler.entry.settings import Settings
from handler.entry.wiring import build_coordinator
from handler.model import Served
from handler.request.coordinator import Coordinator

log = logging.getLogger(__name__)

Result = Literal["made", "skipped", "refreshed", "failed"]
# What a request's cache status means for warming: a HIT was already stored; a STALE variant
# was stored too, and its expired pointer has just been revalidated (inline).
_RESULTS: dict[str, Result] = {"MISS": "made", "HIT": "skipped", "STALE": "refreshed"}


@dataclass(frozen=True)
class Outcome:
    job: Job
    result: Result
    bytes: int = 0  # of the variant, when made
    error: str = ""
    note: str = ""  # warm --out: why a file written holds another format than its name says


_coordinator: Coordinator | None = None
_runner: asyncio.Runner | None = None
_broken = ""  # why this process has no optimizer: reported for every variant it is given


def start(settings: Settings) -> None:
    """Set up this worker process (``multiprocessing.Pool``'s initializer)."""
    global _coordinator, _runner, _broken
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _runner = asyncio.Runner()
    try:
        _coordinator = build_coordinator(settings, revalidation="inline")
    except Exception as exc:  # an initializer that raises would be restarted forever
        _broken = f"cannot build the optimizer: {exc!r}"


def warm(job: Job) -> Outcome:
    """Ask for one variant (``Pool.imap_unordered``'s function)."""
    if _coordinator is None or _runner is None:
        return Outcome(job, "failed", error=_broken or "worker not started")
    return _runner.run(warm_one(_coordinator, job))


def write_file(job: Job, target: str) -> Outcome:
    """``warm --out``: make one variant and write it to ``target``."""
    if _coordinator is None or _runner is None:
        return Outcome(job, "failed", error=_broken or "worker not started")
    return _runner.run(write_one(_coordinator, job, Path(target)))


async def write_one(coordinator: Coordinator, job: Job, target: Path) -> Outcome:
    """The variant as the route answers it, written whole or not at all (a temporary file
    renamed into place). An image libvips cannot transform is written as it is, as Next serves
    it, with a note: a static host labels it by the file's name, browsers by its bytes."""
    served = await ask(coordinator, job)
    if isinstance(served, Outcome):
        return served
    if served.transient:
        return Outcome(job, "failed", error="the transform timed out")
    body = served.variant.body
    note = ""
    if served.variant.content_type != job.accept:
        note = f"written as {served.variant.content_type}, as the optimizer answers it"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    partial.write_bytes(body)
    partial.replace(target)
    return Outcome(job, "made", len(body), note=note)


async def warm_one(coordinator: Coordinator, job: Job) -> Outcome:
    """Whether the variant was made, already stored, or could not be stored, and why."""
    served = await ask(coordinator, job)
    if isinstance(served, Outcome):
        return served
    if served.transient:
        return Outcome(job, "failed", error="the transform timed out; nothing was stored")
    if served.variant.kind == "fallback":
        return Outcome(job, "failed", error="libvips cannot transform it: Next serves it as is")
    if not await coordinator.ensure_stored(served):
        return Outcome(job, "failed", error="the store did not confirm the write")
    result = _RESULTS[served.cache]
    return Outcome(job, result, len(served.variant.body) if result == "made" else 0)


async def ask(coordinator: Coordinator, job: Job) -> Served | Outcome:
    """The route's answer to ``job``, or the failed outcome where the route would answer an
    error (Next's 4xx, or a 500 for anything unexpected)."""
    try:
        params = validate_params(job.query, job.accept, coordinator.config)
        return await coordinator.serve(params)
    except ImageError as exc:
        return Outcome(job, "failed", error=f"{exc.status} {exc.message}")
    except Exception as exc:  # the route would answer 500
        log.exception("unexpected failure for %s", job)
        return Outcome(job, "failed", error=f"500 {exc!r}")
