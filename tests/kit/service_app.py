"""The service's app in this process, counting what reaches its image route."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from handler.contract.config import load_images_config
from handler.entry.settings import Settings
from handler.entry.wiring import build_coordinator
from handler.http import app as app_module
from handler.http.app import create_app
from handler.http.replay import RecentHits
from handler.model import RequestRecord, Served
from handler.stores.memory import MemoryStore
from kit.support import Clock

IMAGE = "/_next/image?url=%2Ftest.jpg&w=640&q=75"
WEBP = {"accept": "image/webp,*/*"}
AVIF = {"accept": "image/avif,image/webp,*/*"}


class Service:
    """The service's app (or Lambda's: ``service=False``) on a memory store, counting the route's
    serves, with a settable clock: the variants' and the replayed answers' (their expiry is counted
    on it too, so no test waits for real time to pass)."""

    def __init__(self, public_dir: Path, *, service: bool = True) -> None:
        self.clock = Clock()
        self.coordinator = build_coordinator(
            Settings(public_dir=str(public_dir)),
            config=load_images_config(json.dumps({"formats": ["image/avif", "image/webp"]})),
            store=MemoryStore(),
            clock=self.clock,
        )
        self.serves = 0
        serve = self.coordinator.serve

        def counting(*args: Any, **kwargs: Any) -> Awaitable[Served]:
            self.serves += 1
            return serve(*args, **kwargs)

        self.coordinator.serve = counting  # type: ignore[method-assign]
        self.records: list[RequestRecord] = []
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(app_module, "RecentHits", lambda: RecentHits(clock=self.clock))
            self.app = create_app(self.coordinator, observer=self._observe, service=service)
        self.client = TestClient(self.app)

    def _observe(self, request: object, record: RequestRecord) -> None:
        self.records.append(record)
