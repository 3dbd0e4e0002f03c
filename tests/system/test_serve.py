"""`next-image serve` and `next-image config` as a user runs them: real processes, real sockets."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import uvicorn.logging

from handler.entry import service
from kit import imagegen
from kit.paths import REPO
from kit.serving import answering, serving
from kit.support import free_port


def test_readme_curl_example_and_restart(tmp_path: Path) -> None:
    args = ("--public-dir", str(REPO / "public"), "--store", "filesystem")
    args += ("--cache-dir", str(tmp_path / "cache"))
    url = "/_next/image?url=%2Fa.jpg&w=640&q=75"
    with serving(*args) as client:
        response = client.get(url, headers={"accept": "image/webp"})
        assert response.status_code == 200
        assert imagegen.decode(response.content).format == "webp"
        assert imagegen.decode(response.content).width == 640
        assert response.headers["content-type"] == "image/webp"
        assert response.headers["cache-control"] == "public, max-age=14400, must-revalidate"
        assert response.headers["vary"] == "Accept"
        assert response.headers["x-nextjs-cache"] == "MISS"
        assert "server" not in response.headers
    with serving(*args) as client:  # the filesystem store survives a restart
        again = client.get(url, headers={"accept": "image/webp"})
        assert again.headers["x-nextjs-cache"] == "HIT"
        assert again.content == response.content


@pytest.mark.parametrize("access_log", ["true", "false"])
def test_the_access_log_is_a_line_per_request_unless_turned_off(access_log: str) -> None:
    port = free_port()
    command = [sys.executable, "-m", "handler.commands.cli", "serve", "--port", str(port)]
    env = {"NEXT_IMAGE_ACCESS_LOG": access_log}
    with answering(command, port, "/_next/image", env, subprocess.PIPE) as (client, process):
        assert client.get("/_next/image?url=/nowhere.png&w=640&q=75").status_code == 404
    assert process.stdout is not None  # uvicorn's access log goes to stdout
    lines = process.stdout.read().decode().splitlines()
    logged = [line for line in lines if '"GET /_next/image?url=/nowhere.png' in line]
    assert len(logged) == (1 if access_log == "true" else 0), lines


def test_settings_from_environment(tmp_path: Path) -> None:
    public = tmp_path / "pub"
    public.mkdir()
    (public / "x.png").write_bytes(imagegen.png(300, 200))
    env = {
        "NEXT_IMAGE_PUBLIC_DIR": str(public),
        "NEXT_IMAGE_CONFIG": json.dumps({"qualities": [50], "minimumCacheTTL": 60}),
    }
    with serving(env=env) as client:
        response = client.get("/_next/image?url=/x.png&w=640&q=50")
        assert response.status_code == 200
        assert imagegen.decode(response.content)[:3] == ("png", 300, 200)
        assert response.headers["cache-control"] == "public, max-age=60, must-revalidate"
        assert client.get("/_next/image?url=/x.png&w=640&q=75").text == (
            '"q" parameter (quality) of 75 is not allowed'
        )


def test_config_command_prints_resolved_defaults(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "handler.commands.cli", "config"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("NEXT_IMAGE_")},
    )
    images = json.loads(out.stdout)
    assert images["deviceSizes"] == [640, 750, 828, 1080, 1200, 1920, 2048, 3840]
    assert images["qualities"] == [75]
    assert images["minimumCacheTTL"] == 14400
    assert images["localPatterns"] == [{"pathname": "**", "search": ""}]
    custom = tmp_path / "images.json"
    custom.write_text(json.dumps({"images": {"formats": ["image/avif", "image/webp"]}}))
    out = subprocess.run(
        [sys.executable, "-m", "handler.commands.cli", "config", "--config", str(custom)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert json.loads(out.stdout)["formats"] == ["image/avif", "image/webp"]


def access_record(status: int, level: int = logging.INFO) -> logging.LogRecord:
    """A record as uvicorn's protocol logs a request on ``uvicorn.access``."""
    path = "/_next/image?url=%2Fa.jpg&w=640&q=75"
    args = ("127.0.0.1:50000", "GET", path, "1.1", status)
    return logging.LogRecord("uvicorn.access", level, "", 0, '%s - "%s %s HTTP/%s" %d', args, None)


@pytest.mark.parametrize("colours", [False, True])
def test_the_access_log_lines_are_uvicorns(colours: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """serve formats its access log with ``service.AccessFormatter``: the text uvicorn's own
    formatter writes, made without copying the record (about half the line's cost)."""
    config = service.log_config()["formatters"]["access"]
    assert config["()"] == "handler.entry.service.AccessFormatter"
    ours = service.AccessFormatter(config["fmt"], use_colors=colours)
    theirs = uvicorn.logging.AccessFormatter(config["fmt"], use_colors=colours)
    known = [access_record(code) for code in (200, 304, 404, 500, 503)]
    known.append(access_record(200, logging.WARNING))
    unknown = access_record(599)  # no phrase: uvicorn's way
    expected = [theirs.format(record) for record in [*known, unknown]]
    plain = 'INFO:     127.0.0.1:50000 - "GET /_next/image?url=%2Fa.jpg&w=640&q=75 HTTP/1.1" 200 OK'
    assert (expected[0] == plain) is not colours
    assert [ours.format(record) for record in [*known, unknown]] == expected
    if not colours:
        monkeypatch.setattr(uvicorn.logging, "copy", None)  # its lines never copy a record
        assert [ours.format(record) for record in known] == expected[:-1]
