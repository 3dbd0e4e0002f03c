"""A TCP proxy on loopback in front of a real server, told to pass, hang or slow the traffic.

``hang`` accepts connections and reads requests but never answers (a hung S3); ``slow`` delays
each answer by ``delay`` seconds. ``hung_connections`` counts the hung ones a client still holds
open, i.e. requests it is still waiting for.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Literal

Mode = Literal["pass", "hang", "slow"]


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self.mode: Mode = "pass"
        self.delay = 0.0
        self.connections = 0
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._hung: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hung_connections(self) -> int:
        with self._lock:
            return len(self._hung)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for conn in self._hung:
                with suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            if self.mode == "hang":
                with self._lock:
                    self._hung.add(client)
                while client.recv(65536):
                    pass  # read everything, answer nothing, until the client gives up
                return
            upstream = socket.create_connection(self._target)
            threading.Thread(target=self._pump, args=(client, upstream, 0.0), daemon=True).start()
            self._pump(upstream, client, self.delay if self.mode == "slow" else 0.0)
        except OSError:
            pass
        finally:
            with self._lock:
                self._hung.discard(client)
            with suppress(OSError):
                client.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, delay: float) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                time.sleep(delay)
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@contextmanager
def fault_proxy(target_port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(target_port)
    try:
        yield proxy
    finally:
        proxy.close()
