"""Liveness and readiness probes: only on the service, never cached, readiness follows the store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from handler.commands.invoke import response_body
from handler.entry.settings import Settings
from handler.entry.wiring import build_app
from kit.lambda_events import function_url, invoke


def test_healthz_and_readyz_on_the_service(public_dir: Path) -> None:
    client = TestClient(build_app(Settings(public_dir=str(public_dir)), service=True))
    for path, body in (("/healthz", "ok"), ("/readyz", "ready")):
        response = client.get(path)
        assert (response.status_code, response.text) == (200, body)
        assert response.headers["cache-control"] == "no-store"


def test_readyz_is_503_while_the_store_cannot_answer(public_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    settings = Settings(public_dir=str(public_dir), store="filesystem", cache_dir=str(cache))
    client = TestClient(build_app(settings, service=True))
    assert client.get("/readyz").status_code == 200
    shutil.rmtree(cache)  # the volume went away
    response = client.get("/readyz")
    assert (response.status_code, response.text) == (503, "store unavailable")
    assert response.headers["cache-control"] == "no-store"
    assert client.get("/healthz").status_code == 200  # alive, just not ready


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_exist_only_on_the_service(public_dir: Path, path: str) -> None:
    local = TestClient(build_app(Settings(public_dir=str(public_dir))))
    assert local.get(path).status_code == 404
    event = function_url("GET", "", {})
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    response = invoke(Settings(public_dir=str(public_dir)), event)
    assert (response["statusCode"], response_body(response)) == (404, b"Not Found")
