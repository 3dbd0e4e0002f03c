"""Every sample event in events/, through ``next-image invoke``, gives its documented response."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from handler.commands.cli import main
from handler.commands.invoke import load_env_file
from kit import imagegen
from kit.paths import REPO

EVENTS = REPO / "events"
SOURCES = ("function-url", "http-api", "rest-api", "alb")
# The remote host the *-remote events and events/local.env's remotePatterns name; the tests serve
# it on a free port and give the events and the env that port instead.
REMOTE_HOST = "127.0.0.1:8765"

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
def remote_events(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``public/`` served on a free loopback port, standing in for the remote image host of the
    *-remote events; a copy of events/ whose events and local.env name that port. The copies'
    folder."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(REPO / "public"))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    folder = tmp_path_factory.mktemp("events")
    for path in (*EVENTS.glob("*.json"), EVENTS / "local.env"):
        text = path.read_text()
        text = text.replace(REMOTE_HOST, host).replace(quote(REMOTE_HOST, safe=""), quote(host))
        text = text.replace('"port":"8765"', f'"port":"{server.server_address[1]}"')
        (folder / path.name).write_text(text)
    copies = "".join(path.read_text() for path in folder.iterdir())
    for old in (REMOTE_HOST, quote(REMOTE_HOST, safe=""), '"port":"8765"'):
        assert old not in copies  # every mention rewritten
    yield folder
    server.shutdown()
    server.server_close()


def invoke(
    events: Path,
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, dict[str, str], bytes]:
    env_file = events / "local.env"
    for key, value in load_env_file(env_file).items():
        monkeypatch.setenv(key, value)  # undone after the test; invoke sets the same values
    args = [str(events / f"{name}.json"), "--env-file", str(env_file), "--moto"]
    assert main(["invoke", *args, "--seed", str(REPO / "public"), "--out", str(tmp_path)]) == 0
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
    remote_events: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, headers, body = invoke(remote_events, f"{source}-{case}", tmp_path, monkeypatch, capsys)
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
    remote_events: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, _, body = invoke(remote_events, f"{source}-bad-param", tmp_path, monkeypatch, capsys)
    assert (status, body.decode()) == (400, BAD_PARAM[source])
