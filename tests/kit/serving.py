"""Servers as a user runs them: a command started as a process, used once it answers, stopped
after; ``next-image serve`` on a free port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from kit.paths import REPO
from kit.support import HANG_SECONDS, free_port


@contextmanager
def answering(
    command: list[str],
    port: int,
    probe: str,
    env: dict[str, str] | None = None,
    stdout: int = subprocess.DEVNULL,
) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    """Start ``command`` (a server on ``port``), wait until ``probe`` answers, stop it after."""
    process = subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        stdout=stdout,
        stderr=subprocess.PIPE,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + HANG_SECONDS  # a start that long is a hang
            while True:
                try:
                    client.get(probe)
                    break
                except httpx.TransportError:
                    assert process.poll() is None, process.stderr.read() if process.stderr else ""
                    assert time.monotonic() < deadline, "server did not start"
                    time.sleep(0.1)
            yield client, process
    finally:
        process.terminate()
        process.wait(timeout=HANG_SECONDS)


@contextmanager
def serving(*args: str, env: dict[str, str] | None = None) -> Iterator[httpx.Client]:
    port = free_port()
    command = [sys.executable, "-m", "handler.commands.cli", "serve", "--port", str(port), *args]
    with answering(command, port, "/_next/image", env) as (client, _):
        yield client
