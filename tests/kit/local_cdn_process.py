"""``next-image local-cdn`` as a user runs it, for the stack test and the browser test alike."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.paths import REPO

READY = re.compile(r"local-cdn: serving .* on (http://\S+)")


def stand_in_layers(root: Path) -> Path:
    """Layer zips the synth accepts (``-c layersDir``): the template, not the layers, is tested."""
    layers = root / "layers"
    layers.mkdir()
    for name in ("pyvips", "deps"):
        with zipfile.ZipFile(layers / f"{name}-arm64.zip", "w") as layer:
            layer.writestr("python/README", "stand-in layer")
    (layers / "layers-arm64.json").write_text(
        json.dumps({"arch": "arm64", "python_version": "3.13"})
    )
    return layers


@dataclass
class LocalCdn:
    url: str = ""
    output: list[str] = field(default_factory=list)
    pid: int = 0
    returncode: int | None = None

    def image_records(self, start: int = 0) -> list[dict[str, Any]]:
        """The function's request log records among the output lines from ``start`` on."""
        lines = (line for line in self.output[start:] if line.startswith("{"))
        records = (json.loads(line) for line in lines)
        return [record for record in records if record.get("message") == "image request"]

    def wait_for_line(self, text: str, start: int, timeout: float) -> str:
        """The first output line from ``start`` on that holds ``text``; waiting ``timeout``
        seconds for it fails the test (only a hang gets there)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.output[start:]:
                if text in line:
                    return line
            assert time.monotonic() < deadline, f"no {text!r} in:\n" + "".join(self.output[start:])
            time.sleep(0.05)

    def redeploy(self, timeout: float) -> str:
        """A redeploy in place (SIGHUP to this child process of the test's); the line that
        says it is done."""
        start = len(self.output)
        os.kill(self.pid, signal.SIGHUP)
        return self.wait_for_line("local-cdn: redeployed ", start, timeout)


@contextmanager
def local_cdn(
    *args: str,
    start_timeout: float = 90,
    moto: bool = True,
    environment: Mapping[str, str] | None = None,
) -> Iterator[LocalCdn]:
    """``next-image local-cdn --moto --port 0 ARGS``; SIGTERM and a wait for its exit after.

    Its output is drained as it comes (the function logs every request) into ``output``.
    Without ``moto``, ``environment`` names the S3 endpoint (``AWS_ENDPOINT_URL``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["AWS_DEFAULT_REGION"] = "us-east-1"
    env.update(environment or {})
    flags = ["--moto"] if moto else []
    command = [
        sys.executable,
        "-m",
        "handler.commands.cli",
        "local-cdn",
        *flags,
        "--port",
        "0",
        *args,
    ]
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    running = LocalCdn(pid=process.pid)
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.output.append(line)
            match = READY.search(line)
            if match:
                running.url = match.group(1)
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ready.wait(timeout=start_timeout)
        if not running.url:
            raise RuntimeError("local-cdn did not start:\n" + "".join(running.output)[-4000:])
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            running.returncode = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            running.returncode = process.wait()
        reader.join(timeout=5)
