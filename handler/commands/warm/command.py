"""``next-image warm``: every variant of every image, made by worker processes into the store.

The settings are ``serve``'s (flags and ``NEXT_IMAGE_*`` variables), so the variants land where
the service or the Lambda function will look for them. A variant already stored is a cache hit
and only counted, so a run that was interrupted continues where it stopped when run again.
Exit code: 0, 1 if any variant failed, 2 for a command line that cannot work, 130 if interrupted.
With ``--out DIR`` the variants are written as files for a static host instead (``out``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from handler.commands.warm import out, worker
from handler.commands.warm.images import Job, disallowed, jobs, listed_urls, public_urls, s3_urls
from handler.contract.config import load_images_config
from handler.entry import machine
from handler.entry.settings import SETTINGS, Settings
from handler.entry.wiring import build_store
from handler.stores import registry

FAILURES_LISTED = 20  # more are counted, not listed


class UsageError(Exception):
    """Nothing could be warmed as asked."""


@dataclass
class Tally:
    variants: int
    images: int
    processes: int
    made: int = 0
    skipped: int = 0
    refreshed: int = 0
    bytes: int = 0
    failures: list[worker.Outcome] = field(default_factory=list)
    stopped: str = ""  # why the run ended before its last variant

    def add(self, outcome: worker.Outcome) -> None:
        if outcome.result == "failed":
            self.failures.append(outcome)
        else:
            setattr(self, outcome.result, getattr(self, outcome.result) + 1)
        self.bytes += outcome.bytes

    @property
    def progress(self) -> str:
        return f"made {self.made}, skipped {self.skipped}, failed {len(self.failures)}"

    def summary(self, seconds: float) -> str:
        done = self.made + self.skipped + self.refreshed + len(self.failures)
        return (
            f"warm: {done} of {self.variants} variants of {self.images} images in {seconds:.1f} s"
            f" on {_processes(self.processes)}: {self.made} made ({self.bytes:,} bytes),"
            f" {self.skipped} skipped (already stored), {self.refreshed} refreshed,"
            f" {len(self.failures)} failed; {done / max(seconds, 1e-9):.1f} variants/s"
        )


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env(**{s.name: getattr(args, s.name, None) for s in SETTINGS})
        if getattr(args, "out", None) is not None:
            return out.run(args, settings)
        if getattr(args, "format", None) or getattr(args, "pages", None):
            raise UsageError("--format and --pages go with --out (files for a static host)")
        urls, todo = _plan(args, settings)
    except (UsageError, ValueError, OSError) as exc:
        print(f"next-image warm: {exc}", file=sys.stderr)
        return 2
    if not todo:
        print("warm: no image to warm", file=sys.stderr)
        return 0
    processes = max(1, min(args.jobs or machine.cpu_count(), len(todo)))
    print(
        f"warm: {len(todo)} variants of {len(urls)} images into the {settings.store} store,"
        f" {_processes(processes)}",
        file=sys.stderr,
    )
    tally = Tally(len(todo), len(urls), processes)
    started = time.perf_counter()
    _warm(todo, settings, tally)
    print(tally.summary(time.perf_counter() - started))
    for outcome in tally.failures[:FAILURES_LISTED]:
        print(f"warm: failed: {outcome.job}: {outcome.error}", file=sys.stderr)
    if len(tally.failures) > FAILURES_LISTED:
        print(f"warm: … and {len(tally.failures) - FAILURES_LISTED} more", file=sys.stderr)
    if tally.stopped:
        print(f"warm: {tally.stopped}; run it again to continue", file=sys.stderr)
        return 130 if tally.stopped == "interrupted" else 1
    return 1 if tally.failures else 0


def _processes(count: int) -> str:
    return f"{count} process" + ("es" if count != 1 else "")


def _plan(args: argparse.Namespace, settings: Settings) -> tuple[list[str], list[Job]]:
    """The images and their variants; refuses what could not work before any process starts."""
    if settings.store == "memory":
        others = ", ".join(name for name in registry.NAMES if name != "memory")
        raise UsageError(f"the memory store ends with the run: use --store one of {others}")
    config = load_images_config(settings.images_config)
    widths: Sequence[int] = args.widths or ()
    qualities: Sequence[int] = args.qualities or ()
    problem = disallowed(config, widths=widths, qualities=qualities)
    if problem:
        raise UsageError(problem)
    if args.urls:
        urls = listed_urls(args.urls)
    elif settings.public_dir or settings.assets_bucket:
        urls = public_urls(Path(settings.public_dir), config) if settings.public_dir else []
        if settings.assets_bucket:
            bucket, prefix = settings.assets_bucket, settings.assets_prefix
            try:
                urls += s3_urls(bucket, prefix, config)
            except Exception as exc:  # botocore's errors: denied, no such bucket, unreachable
                raise UsageError(f"cannot list s3://{bucket}/{prefix}: {exc!r}") from exc
        urls = list(dict.fromkeys(urls))  # the public folder wins, as in the sources' chain
    else:
        raise UsageError("nothing to warm: give --public-dir, --urls or NEXT_IMAGE_ASSETS_BUCKET")
    try:
        build_store(settings).ping()
    except Exception as exc:
        raise UsageError(f"the {settings.store} store does not answer: {exc!r}") from exc
    return urls, jobs(urls, config, widths=widths, qualities=qualities)


def _warm(todo: list[Job], settings: Settings, tally: Tally) -> None:
    """Hand the variants to the worker processes, one at a time each, and count the outcomes.

    On Ctrl-C the variants in hand are finished (nothing is left half written) and the rest are
    dropped. A worker that dies (killed for memory) stops the run instead of hanging it.
    Spawned, not forked: this process has imported libvips and may hold S3 connections.
    """
    spawn = multiprocessing.get_context("spawn")
    bar = tqdm(total=len(todo), unit="variant", disable=None, file=sys.stderr)  # on a terminal
    with ProcessPoolExecutor(
        tally.processes, mp_context=spawn, initializer=worker.start, initargs=(settings,)
    ) as pool:
        try:
            for future in as_completed([pool.submit(worker.warm, job) for job in todo]):
                tally.add(future.result())
                bar.set_postfix_str(tally.progress, refresh=False)
                bar.update()
        except KeyboardInterrupt:
            tally.stopped = "interrupted"
            pool.shutdown(wait=False, cancel_futures=True)
            tqdm.write("warm: interrupted; finishing the variants in hand", file=sys.stderr)
        except BrokenProcessPool:
            tally.stopped = "a worker process died (out of memory?)"
        finally:
            bar.close()
