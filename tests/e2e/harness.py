"""What the e2e fixtures and tests share: paths, the browser's command line, timings, a report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
APP = HERE / "app"
ARTIFACTS = HERE / "artifacts"  # git-ignored: logs, screenshots, report.json
NEXT = ["node", "node_modules/next/dist/bin/next"]  # the app's own next, run from APP
CHROMIUM = "/usr/bin/chromium"  # Debian's package; make e2e installs it when missing
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

TIMINGS: dict[str, float | str] = {}  # seconds (or why not measured), printed after the run
REPORT: list[str] = []  # what the tests observed, printed after the run


@contextmanager
def timed(name: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        TIMINGS[name] = round(time.monotonic() - start, 1)
