"""``next-image serve`` as a service: one process, or N uvicorn workers sharing one port.

``next-image serve`` turns its flags into ``NEXT_IMAGE_*`` variables before uvicorn starts, and
uvicorn spawns its workers as fresh interpreters, so each worker builds its app (``worker_app``)
from its environment alone, the way the Lambda function does.
"""

from __future__ import annotations

import copy
import http
import importlib.util
import logging
import math
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn import logging as logging_
from uvicorn.config import LOGGING_CONFIG, STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from handler.entry import machine
from handler.entry.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

APP = "handler.entry.service:worker_app"

log = logging.getLogger(__name__)


def run(settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT, then stop accepting, let the requests in flight finish
    (within the request budget, ``settings.timeout``) and return 0."""
    workers = machine.worker_count(settings.workers)
    options: dict[str, Any] = {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "timeout_graceful_shutdown": math.ceil(settings.timeout),
        "server_header": False,
        "date_header": True,
        "log_config": log_config(),
        "access_log": settings.access_log,
        **fast_stack(),
    }
    signal.signal(signal.SIGTERM, _exit_cleanly)
    if workers == 1:
        uvicorn.run(APP, **options)
        return 0
    from handler.http import metrics

    metrics.prepare_for_workers()
    config = uvicorn.Config(APP, workers=workers, **options)
    supervisor = Supervisor(config, sockets=[config.bind_socket()])
    supervisor.run()
    return STARTUP_FAILURE if supervisor.failed_to_start else 0


def log_config() -> dict[str, Any]:
    """uvicorn's logging, with the access log's lines formatted by ``AccessFormatter``."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["access"]["()"] = f"{__name__}.AccessFormatter"
    return config


class AccessFormatter(logging_.AccessFormatter):
    """uvicorn's access log line, the same text, made in one f-string: uvicorn's copies the
    record and formats it twice over, about 9 of the 17 microseconds each request spends on its
    line. Colours (a terminal), another format or an exception go uvicorn's way."""

    def format(self, record: logging.LogRecord) -> str:
        if (
            self.use_colors
            or self._fmt != LOGGING_CONFIG["formatters"]["access"]["fmt"]
            or record.exc_info
            or record.stack_info
            or not isinstance(record.args, tuple)
            or len(record.args) != 5
        ):
            return super().format(record)
        client_addr, method, full_path, http_version, code = record.args
        status = _STATUS_LINES.get(code) if isinstance(code, int) else None
        if status is None:
            return super().format(record)
        level = record.levelname
        prefix = level + ":" + " " * (8 - len(level))
        return f'{prefix} {client_addr} - "{method} {full_path} HTTP/{http_version}" {status}'


_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in http.HTTPStatus}


def fast_stack() -> dict[str, str]:
    """uvloop and httptools where installed (they are dependencies, but uvloop has no Windows
    build): a cache hit is mostly event-loop and HTTP-parsing work, which they do in C."""
    options: dict[str, str] = {}
    if importlib.util.find_spec("uvloop") is not None:
        options["loop"] = "uvloop"
    if importlib.util.find_spec("httptools") is not None:
        options["http"] = "httptools"
    return options


def worker_app() -> FastAPI:
    """A worker's app, from the environment.

    A failure to build it (a bad config, a store that cannot open) exits with uvicorn's startup
    failure code: the supervisor then stops, where any other exit would make it start a
    replacement that fails the same way, forever.
    """
    from handler.entry.wiring import build_app

    try:
        settings = Settings.from_env()
        # Transforms in child processes unless NEXT_IMAGE_ISOLATE_TRANSFORMS says otherwise.
        return build_app(settings, docs=settings.docs, service=True, isolate=True)
    except Exception:
        log.exception("cannot build the app")
        sys.exit(STARTUP_FAILURE)


class Supervisor(Multiprocess):
    """uvicorn's supervisor, which checks its workers every half second and replaces a dead one,
    with three changes.

    It closes its copy of each started worker's end of the healthcheck pipe, so a worker that
    dies during a healthcheck is seen at once (the pipe reads end-of-file) rather than after the
    healthcheck timeout (5 s). Before it tells the workers to drain, it closes its own copy of the
    listening socket; the workers close theirs as they start draining, so new connections are
    refused at once, where uvicorn's would wait in the backlog until the supervisor exits and then
    be reset. And it remembers a worker that failed to start, so that ``serve`` does not exit 0
    on a bad config.
    """

    def keep_subprocess_alive(self) -> None:
        for process in self.processes:  # all started: each worker holds its own end now
            process.child_conn.close()
        super().keep_subprocess_alive()

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()

    @property
    def failed_to_start(self) -> bool:
        return any(process.exitcode == STARTUP_FAILURE for process in self.processes)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """uvicorn re-raises SIGTERM once it has drained: that is a clean stop, not a crash."""
    raise SystemExit(0)
