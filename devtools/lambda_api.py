"""Lambda's Invoke API on loopback, recording each call: fast first view's asynchronous
invocations (``handler/entry/self_invoke.py``) made here, by a real boto3 client over a real socket,
for the tests and ``bench/opennext.py`` to feed back to the handler as Lambda would.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Invocation:
    path: str  # /2015-03-31/functions/<name>/invocations[?Qualifier=<version>]
    kind: str  # X-Amz-Invocation-Type: Event for an asynchronous call
    payload: Any


class _Recorder(BaseHTTPRequestHandler):
    calls: list[Invocation]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        kind = self.headers.get("x-amz-invocation-type", "")
        self.calls.append(Invocation(self.path, kind, json.loads(body)))
        self.send_response(202)  # accepted, as Lambda answers an Event
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@contextmanager
def recording_lambda_api() -> Iterator[tuple[str, list[Invocation]]]:
    """Yields the API's URL (for ``AWS_ENDPOINT_URL_LAMBDA``) and the calls it has taken."""
    calls: list[Invocation] = []
    handler = type("Recorder", (_Recorder,), {"calls": calls})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        server.shutdown()
        server.server_close()
