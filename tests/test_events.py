"""Every sample event in events/, through ``next-image invoke``, gives its documented response."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import imagegen
import pytest

from devtools.invoke import load_env_file
from handler.cli import main

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
SOURCES = ("function-url", "http-api", "rest-api", "alb")
REMOTE_PORT = 8765  # the host allowed by events/local.env's remotePatterns

# case: (status, content type, x-nextjs-cache, (format, width, height) or error body)
EXPECTED: dict[str, tuple[int, str | None, str | None, Any]] = {
    "relative": (200, "image/webp", "MISS", ("webp", 640, 427)),
    "remote": (200, "image/webp", "MISS", ("webp", 384, 288)),
    "avif": (200, "image/avif", "MISS", ("avif", 640, 427)),
    "revalidate-304": (304, None, None, None),
}
BAD_PARAM = {
    "function-url": '"w" parameter (width) of 123 is not allowed',
    "http-api": '"w" parameter (width) of 123 is not allowed',
    "rest-api": '"url" parameter cannot be an array',
    "alb": '"url" parameter cannot be an array',
}


@pytest.fixture(scope="module")
def remote_host() -> Iterator[None]:
    """``public/`` on 127.0.0.1:8765, standing in for the remote image host of *-remote events."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(ROOT / "public"))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    try:
        server = ThreadingHTTPServer(("127.0.0.1", REMOTE_PORT), handler)
    except OSError:
        pytest.skip(f"port {REMOTE_PORT} is busy")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield
    server.shutdown()
    server.server_close()


def invoke(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, str], bytes]:
    env_file = EVENTS / "local.env"
    for key, value in load_env_file(env_file).items():
        monkeypatch.setenv(key, value)  # undone after the test; invoke sets the same values
    args = [str(EVENTS / f"{name}.json"), "--env-file", str(env_file), "--moto"]
    assert main(["invoke", *args, "--seed", str(ROOT / "public"), "--out", str(tmp_path)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("{")]
    status = int(lines[0].removeprefix("status: "))
    headers = dict(line.split(": ", 1) for line in lines[1:-1])
    written = sorted(tmp_path.glob(f"{name}.*"))
    return status, headers, written[0].read_bytes() if written else b""


def test_every_event_file_is_covered() -> None:
    cases = [*EXPECTED, "bad-param"]
    expected = {f"{source}-{case}.json" for source in SOURCES for case in cases}
    assert {path.name for path in EVENTS.glob("*.json")} == expected


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("case", EXPECTED)
def test_image_events(
    source: str,
    case: str,
    remote_host: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, headers, body = invoke(f"{source}-{case}", tmp_path, monkeypatch, capsys)
    want_status, content_type, cache, image = EXPECTED[case]
    assert status == want_status
    if image is None:
        assert body == b""
        assert headers["etag"] == "IVsn9w_ksYSEw5KDv6bDgVaptCEUkNfyIPUvmLFkgZg"
        return
    assert headers["content-type"] == content_type
    assert headers["x-nextjs-cache"] == cache
    assert headers["vary"] == "Accept"
    decoded = imagegen.decode(body)
    assert (decoded.format, decoded.width, decoded.height) == image


@pytest.mark.parametrize("source", SOURCES)
def test_bad_parameter_events(
    source: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, _, body = invoke(f"{source}-bad-param", tmp_path, monkeypatch, capsys)
    assert (status, body.decode()) == (400, BAD_PARAM[source])
