"""The whole deployment on one machine: a real Next.js app, the synthesized stack, local-cdn.

``make e2e`` runs this folder (``make test`` leaves it out: pyproject's ``addopts`` ignores it).
Session fixtures, in order: the app's npm packages installed (``npm ci``, skipped while
``node_modules`` matches the lockfile), its images drawn (``pictures``), ``next build``; a loopback
"remote" image server; ``next start`` behind a logging proxy; the CDK app synthesized in-process
against the build's ``.next`` and ``public/``; ``next-image local-cdn`` in front of the proxy; and
headless Chromium. Timings and what the test observed are printed at the end of the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from harness import APP, ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, NEXT, REPORT, TIMINGS, timed
from processes import LocalCdn, Proxy, local_cdn, logging_proxy, next_start

from devtools.moto_server import moto_server
from devtools.pictures import MOUNTAIN, Picture, draw, remote
from kit.synth import cdk_synth
from kit.upstream_server import Handler, Server, serve

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

STACK = "NextImageE2E"
STARTED = time.monotonic()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TIMINGS and not REPORT:
        return
    TIMINGS["whole run"] = round(time.monotonic() - STARTED, 1)
    terminalreporter.section("e2e")
    for name, seconds in TIMINGS.items():
        unit = "" if isinstance(seconds, str) else " s"
        terminalreporter.write_line(f"{name}: {seconds}{unit}")
    for line in REPORT:
        terminalreporter.write_line(line)
    if ARTIFACTS.is_dir():
        report = {"timings": TIMINGS, "observed": REPORT}
        (ARTIFACTS / "report.json").write_text(json.dumps(report, indent=2) + "\n")


def _run(command: list[str], log: Path, timeout: float) -> None:
    env = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1"}
    with log.open("wb") as out:
        done = subprocess.run(
            command, cwd=APP, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{tail}")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def app_packages(artifacts: Path) -> Path:
    """The app's npm packages installed (next 16.4.6 among them); its ``node_modules``."""
    lock = hashlib.sha256((APP / "package-lock.json").read_bytes()).hexdigest()
    stamp = APP / "node_modules" / ".e2e-package-lock.sha256"
    if stamp.is_file() and stamp.read_text() == lock:
        TIMINGS["npm ci"] = "cached (node_modules matches package-lock.json)"
    else:
        with timed("npm ci"):
            _run(["npm", "ci", "--no-audit", "--no-fund"], artifacts / "npm-ci.log", 300)
        stamp.write_text(lock)
    return APP / "node_modules"


@pytest.fixture(scope="session")
def built_app(app_packages: Path, artifacts: Path) -> dict[str, Picture]:
    """The app's images drawn, its packages installed, ``next build`` run; the pictures by path."""
    with timed("draw images"):
        pictures = draw(APP)
    with timed("next build"):
        _run([*NEXT, "build"], artifacts / "next-build.log", 480)
    return pictures


@pytest.fixture(scope="session")
def remote_server() -> Iterator[Server]:
    """The "remote" image host: a loopback server, allowed by the app's remotePatterns."""
    body = remote()

    def image(handler: Handler) -> None:
        handler.reply(200, body, Content_Type="image/jpeg", Cache_Control="public, max-age=3600")

    with serve() as server:
        server.routes[MOUNTAIN.path] = image
        yield server


@pytest.fixture(scope="session")
def app_proxy(
    built_app: dict[str, Picture], remote_server: Server, artifacts: Path
) -> Iterator[Proxy]:
    """``next start``, and the logging proxy in front of it that stands for the app's origin."""
    env = {"E2E_REMOTE_ORIGIN": remote_server.url("")}
    with ExitStack() as stack:
        with timed("next start (until it answers)"):
            url = stack.enter_context(next_start(APP, env, artifacts / "next-start.log"))
        yield stack.enter_context(logging_proxy(url))


@pytest.fixture(scope="session")
def synthesized(built_app: dict[str, Picture], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CDK app ``cdk synth`` runs (cdk-nag included), against the app's build; the template.

    The context is a deploy's: ``nextDir`` (the images config and basePath come from the build)
    and ``publicDir``. ``appOrigin`` is a host name, as for CloudFront; local-cdn's
    ``--app-origin`` gives the port. The two Lambda layers are stand-in zips: opaque assets to the
    template, and local-cdn runs the handler from this checkout.
    """
    root = tmp_path_factory.mktemp("e2e-stack")
    with timed("cdk synth (in-process)"):
        return cdk_synth(
            root,
            STACK,
            appOrigin="127.0.0.1",
            nextDir=str(APP / ".next"),
            publicDir=str(APP / "public"),
        )


@pytest.fixture(scope="session")
def seed_folder(built_app: dict[str, Picture], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``cdk deploy`` puts in the assets bucket: ``public/``, and the build's
    ``static/media`` under ``_next/static/media/`` (the stack's two BucketDeployments, which
    local-cdn does not run)."""
    seed = tmp_path_factory.mktemp("assets")
    shutil.copytree(APP / "public", seed, dirs_exist_ok=True)
    shutil.copytree(APP / ".next" / "static" / "media", seed / "_next" / "static" / "media")
    return seed


@pytest.fixture(scope="session")
def cdn(
    synthesized: Path, seed_folder: Path, app_proxy: Proxy, artifacts: Path
) -> Iterator[LocalCdn]:
    """``next-image local-cdn --moto --seed-public`` in front of the app's proxy."""
    with ExitStack() as stack:
        with timed("local-cdn start"):
            running = stack.enter_context(
                local_cdn(synthesized, app_proxy.url, seed_folder, artifacts / "local-cdn.log")
            )
        yield running


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[str]:
    """moto's S3 server on a free loopback port, for a module whose local-cdn reaches S3 over
    real HTTP (through a fault proxy, or to watch its requests)."""
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, for a module's pages (Playwright drives it; its own
    browsers are never installed)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
