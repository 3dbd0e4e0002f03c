"""Fast first view's asynchronous work: every failure is logged with its category.

Nobody waits for the deferred AVIF, so its failures are reported as structured records
(``handler/request/first_view.py``): under ``serve`` a warning of ``handler.request.first_view``
whose fields are the record's attributes; on Lambda a JSON line of the handler's logger, for the
produce event (the invocation that makes the AVIF) and for the request that could not queue it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from handler.commands.invoke import FakeContext, function_url_event, response_headers
from handler.contract.errors import ImageError
from handler.contract.validate import validate_params
from handler.entry.lambda_handler import build_handler
from handler.entry.self_invoke import produce_event
from handler.entry.settings import Settings
from handler.model import Variant
from handler.pipeline.transform import Plan, Transformed, run_transform
from handler.request.first_view import FAILURE_CATEGORIES, category_of
from handler.stores.filesystem import FilesystemStore
from handler.stores.memory import MemoryStore
from kit.avif_first import AVIF_ACCEPT, AVIF_FIRST, FORMATS, QUERY
from kit.support import MakeApp

FIELDS = ("first_view", "category", "url", "w", "q", "format", "detail")


class ThrottledError(Exception):
    """Shaped like botocore's ClientError for a throttled Invoke."""

    def __init__(self) -> None:
        super().__init__("Rate Exceeded.")
        self.response = {"Error": {"Code": "TooManyRequestsException"}}


class ReadTimeoutError(Exception):
    """Named like botocore's: the category is read from the class name (botocore is lazy)."""


@pytest.mark.parametrize(
    ("stage", "exc", "category"),
    [
        ("produce", ImageError(504, "late", category="timeout"), "timeout"),
        ("produce", TimeoutError(), "timeout"),
        ("produce", ImageError(503, "busy", category="overload"), "overload"),
        ("produce", ImageError(400, "not an image", category="pipeline"), "transform"),
        ("produce", ImageError(502, "bad", category="upstream"), "upstream"),
        ("produce", ImageError(503, "unconfirmed", category="store"), "store"),
        ("produce", RuntimeError("bug"), "internal"),
        ("defer", ThrottledError(), "overload"),
        ("defer", ReadTimeoutError(), "timeout"),
        ("defer", OSError("connection refused"), "invoke"),
    ],
)
def test_each_failure_has_its_category(stage: Any, exc: BaseException, category: str) -> None:
    assert category_of(stage, exc) == category
    assert category in FAILURE_CATEGORIES


class FailingAvifWrites(MemoryStore):
    """A store that takes every write but the AVIF variants'."""

    def put_variant(self, key: str, variant: Variant) -> None:
        if variant.content_type == "image/avif":
            raise OSError("disk full")
        super().put_variant(key, variant)


def first_view_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        {name: getattr(record, name) for name in FIELDS}
        for record in caplog.records
        if record.name == "handler.request.first_view"
    ]


def test_serve_logs_an_avif_the_store_did_not_take(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(AVIF_FIRST, store=FailingAvifWrites(), fast_first_view=0.01)
    assert app.get(QUERY, accept=AVIF_ACCEPT).headers["content-type"] == "image/webp"
    app.drain()
    assert first_view_records(caplog) == [
        {
            "first_view": "produce",
            "category": "store",
            "url": "/test.jpg",
            "w": 640,
            "q": 75,
            "format": "image/avif",
            "detail": "the store did not confirm the write",
        }
    ]
    # Nothing stored: the next request defers it again, and it is logged again.
    assert app.get(QUERY, accept=AVIF_ACCEPT).headers["content-type"] == "image/webp"
    app.drain()
    assert [r["category"] for r in first_view_records(caplog)] == ["store", "store"]


def test_serve_logs_a_timed_out_transform_and_stores_nothing(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def avif_times_out(plan: Plan, *args: Any, **kwargs: Any) -> Transformed:
        if plan.content_type == "image/avif":
            return Transformed(plan.source, "image/jpeg", "fallback", transient=True)
        return run_transform(plan, *args, **kwargs)

    monkeypatch.setattr("handler.request.transforms.run_transform", avif_times_out)
    store = MemoryStore()
    app = make_app(AVIF_FIRST, store=store, fast_first_view=0.01)
    app.get(QUERY, accept=AVIF_ACCEPT)
    app.drain()
    [record] = first_view_records(caplog)
    assert (record["first_view"], record["category"]) == ("produce", "timeout")
    assert record["detail"] == "the transform timed out; nothing was stored"
    assert app.get(QUERY, accept=AVIF_ACCEPT).headers["content-type"] == "image/webp"


def test_serve_logs_a_transform_that_raised(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def avif_raises(plan: Plan, *args: Any, **kwargs: Any) -> Transformed:
        if plan.content_type == "image/avif":
            raise RuntimeError("encoder crashed")
        return run_transform(plan, *args, **kwargs)

    monkeypatch.setattr("handler.request.transforms.run_transform", avif_raises)
    app = make_app(AVIF_FIRST, fast_first_view=0.01)
    app.get(QUERY, accept=AVIF_ACCEPT)
    app.drain()
    [record] = first_view_records(caplog)
    assert (record["category"], record["detail"]) == (
        "internal",
        "RuntimeError('encoder crashed')",
    )


class _Throttling(BaseHTTPRequestHandler):
    """Lambda's Invoke API, throttled: 429 TooManyRequestsException to every call."""

    calls = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        type(self).calls += 1
        body = b'{"Reason":"ReservedFunctionConcurrentInvocationLimitExceeded","message":"Rate"}'
        self.send_response(429)
        self.send_header("x-amzn-errortype", "TooManyRequestsException")
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def throttled_lambda(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Throttling]]:
    import threading

    handler = type("Throttling", (_Throttling,), {"calls": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "next-image")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_on_lambda_a_throttled_self_invocation_is_a_json_line_with_its_category(
    public_dir: Path,
    tmp_path: Path,
    throttled_lambda: type[_Throttling],
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(
        public_dir=str(public_dir),
        store="filesystem",
        cache_dir=str(tmp_path / "cache"),
        fast_first_view=0.01,
        images_config=FORMATS,
    )
    answer = build_handler(settings)(function_url_event(QUERY, AVIF_ACCEPT), FakeContext())
    assert response_headers(answer)["content-type"] == "image/webp"  # the visitor is served
    assert throttled_lambda.calls >= 1
    [line] = [r for r in json_lines(capsys.readouterr().out) if r.get("first_view")]
    assert line["level"] == "WARNING"
    assert (line["first_view"], line["category"], line["url"]) == ("defer", "overload", "/test.jpg")
    assert (line["w"], line["q"], line["format"]) == (640, 75, "image/avif")


def test_on_lambda_a_produce_event_that_stored_nothing_is_a_json_line_with_its_category(
    public_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(self: FilesystemStore, key: str, variant: Variant) -> None:
        raise OSError("read-only file system")

    monkeypatch.setattr(FilesystemStore, "put_variant", refuse)
    settings = Settings(
        public_dir=str(public_dir),
        store="filesystem",
        cache_dir=str(tmp_path / "cache"),
        images_config=FORMATS,
    )
    params = validate_params(QUERY, AVIF_ACCEPT, AVIF_FIRST)
    produced = build_handler(settings)(produce_event(params), FakeContext())
    assert produced["produced"] is False
    [line] = [r for r in json_lines(capsys.readouterr().out) if r.get("first_view")]
    assert (line["first_view"], line["category"]) == ("produce", "store")
    assert line["message"].startswith("fast first view did not produce the AVIF of /test.jpg")
