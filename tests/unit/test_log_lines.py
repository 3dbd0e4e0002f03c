"""Every JSON record the handler writes is one whole line, whatever writes at the same time.

The Lambda handler's request log lines and EMF blobs share stdout; local-cdn runs several
handler instances as threads of one process, and a record split by another thread's write made
two records share a line. Here threads write both kinds at once into one file, through the
real Powertools ``Logger`` and ``Metrics`` the handler builds, and every line must parse.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from handler.http.observability import (
    RECORDS,
    SERVICE,
    RequestObserver,
    WholeLines,
    make_logger,
    make_metrics,
)

THREADS = 6
ROUNDS = 150


def request_record(thread: int, index: int) -> dict[str, Any]:
    """A miss's record, large enough that a split write would show."""
    return {
        "url": f"/photos/{thread}/{index}.jpg?" + "x" * 2000,
        "w": 640,
        "q": 75,
        "status": 200,
        "cache": "MISS",
        "stages_ms": {"fetch": 1.5, "transform": 30.25},
        "total_ms": 40.5,
        "output_bytes": 12_345,
    }


def run_threads(work: Any) -> None:
    """``work(n)`` on THREADS threads at once, taking turns as often as the interpreter allows."""
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def run(thread: int) -> None:
        try:
            start.wait(timeout=60)
            work(thread)
        except BaseException as exc:  # reported below, with the thread's traceback
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == [], errors


def test_request_records_and_emf_blobs_from_many_threads_are_whole_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = Request({"type": "http", "headers": []})
    output = tmp_path / "stdout"
    # Every write a system call, which lets other threads run (stdout on a pipe does that
    # whenever its buffer fills): Powertools' own print of an EMF blob broke lines here.
    with io.TextIOWrapper(output.open("wb", buffering=0), write_through=True) as sink:
        monkeypatch.setattr(sys, "stdout", sink)
        logger = make_logger()

        def invocations(thread: int) -> None:
            metrics = make_metrics()  # one handler instance per thread, as local-cdn runs them
            observer = RequestObserver(logger, metrics)
            for index in range(ROUNDS):
                observer(request, request_record(thread, index))  # the request's log line
                metrics.flush_metrics()  # the invocation's EMF blob, as log_metrics does

        run_threads(invocations)
        monkeypatch.undo()
    lines = output.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # each line one record, whole
    logs = [r for r in records if r.get("message") == "image request"]
    blobs = [r for r in records if "_aws" in r]
    assert len(logs) == len(blobs) == THREADS * ROUNDS
    assert len(records) == 2 * THREADS * ROUNDS
    assert all(blob["Requests"] == [1.0] for blob in blobs)  # each instance flushed its own


def test_a_record_written_in_pieces_is_still_one_line(tmp_path: Path) -> None:
    """``print`` writes a record and its newline apart: the pieces of one thread stay together."""
    read, write = os.pipe()
    with os.fdopen(write, "w") as pipe, os.fdopen(read) as reader:
        lines = WholeLines(lambda: pipe)
        collected: list[str] = []
        drain = threading.Thread(target=lambda: collected.extend(reader))
        drain.start()

        def pieces(thread: int) -> None:
            for index in range(ROUNDS):
                record = {"thread": thread, "index": index, "padding": "y" * 500}
                print(json.dumps(record), file=lines)
                lines.write(f'{{"thread": {thread},')
                lines.write(f' "index": {index}}}\n{{"second": true}}\n')

        run_threads(pieces)
        pipe.close()
        drain.join()
    records = [json.loads(line) for line in collected]
    assert len(records) == 3 * THREADS * ROUNDS
    for thread in range(THREADS):
        mine = [r["index"] for r in records if r.get("thread") == thread]
        assert mine == sorted(2 * list(range(ROUNDS)))  # in its order, none lost


def test_the_handler_writes_through_the_shared_stream() -> None:
    assert make_logger().logger_handler.stream is RECORDS  # type: ignore[attr-defined]


def test_a_handler_bound_to_another_stream_is_brought_back() -> None:
    """Powertools shares one handler among a service's Loggers: whoever set its stream, the
    handler's next Logger writes whole lines again."""
    make_logger()
    (handler,) = logging.getLogger(SERVICE).handlers
    handler.stream = io.StringIO()  # type: ignore[attr-defined]
    assert make_logger().logger_handler is handler
    assert handler.stream is RECORDS  # type: ignore[attr-defined]
