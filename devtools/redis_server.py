"""A throwaway ``redis-server`` on loopback, for the Redis store's tests and benchmarks."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    url: str


def start_redis(binary: str, folder: Path, *flags: str) -> RedisServer:
    """A redis-server on a free loopback port that persists nothing, answering when returned.

    Raises RuntimeError with its log's tail if it does not start.
    """
    for _ in range(3):  # another process may take the free port before redis binds it
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        log = folder / f"redis-{port}.log"
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
        command += ["--save", "", "--appendonly", "no", "--logfile", str(log), *flags]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        server = RedisServer(process, f"redis://127.0.0.1:{port}/0")
        if _answers(process, port):
            return server
        stop_redis(server)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"redis-server did not start: {tail}")


def stop_redis(server: RedisServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def _answers(process: subprocess.Popen[bytes], port: int) -> bool:
    """Wait until the server replies to PING (NOAUTH counts: it is up); False if it exited."""
    deadline = time.monotonic() + 10
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False
