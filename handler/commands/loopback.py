"""An ``http.server`` served on a thread for the length of a ``with`` block: ``local-cdn``'s
CloudFront API, and the loopback servers of the tests and dev tools."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer


def url(server: ThreadingHTTPServer) -> str:
    """``http://host:port`` of the bound socket (an IPv6 host in brackets)."""
    host, port = str(server.server_address[0]), int(server.server_address[1])
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


@contextmanager
def serving(server: ThreadingHTTPServer, poll: float = 0.1) -> Iterator[str]:
    """Serve ``server`` on a daemon thread (each request on a daemon thread too) and yield its
    URL; after the block, stop it, close its socket and wait for the thread. ``poll`` is how
    often ``serve_forever`` looks for the stop: ``shutdown`` waits up to that long."""
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(poll,), daemon=True)
    thread.start()
    try:
        yield url(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
