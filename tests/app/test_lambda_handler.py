"""The Lambda handler on every event source: same status, headers and bytes as the local app."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from handler.commands.invoke import FakeContext, response_body, response_headers
from handler.contract import errors
from handler.entry.lambda_handler import LAMBDA_MAX_INLINE_BYTES, build_handler, lambda_settings
from handler.entry.settings import Settings
from handler.entry.wiring import build_app
from handler.request.keys import variant_key
from kit import imagegen
from kit.lambda_events import SOURCES, function_url, invoke
from kit.paths import REPO

CHROME_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
QUERY = "url=%2Ftest.jpg&w=640&q=75"


@pytest.fixture
def settings(public_dir: Path) -> Settings:
    return Settings(public_dir=str(public_dir))


@pytest.mark.parametrize("source", SOURCES)
def test_same_response_as_the_local_app(source: str, settings: Settings) -> None:
    headers = {"accept": CHROME_ACCEPT}
    local = TestClient(build_app(settings)).get(f"/_next/image?{QUERY}", headers=headers)
    response = invoke(settings, SOURCES[source]("GET", QUERY, headers))

    assert response["statusCode"] == local.status_code == 200
    assert response["isBase64Encoded"] is True
    assert response_headers(response) == dict(local.headers)
    body = response_body(response)
    assert body == local.content
    decoded = imagegen.decode(body)
    assert (decoded.format, decoded.width, decoded.height) == ("webp", 640, 480)


@pytest.mark.parametrize("source", SOURCES)
def test_head_and_if_none_match(source: str, settings: Settings) -> None:
    build = SOURCES[source]
    handle = build_handler(settings)
    got = handle(build("GET", QUERY, {"accept": "image/webp"}), FakeContext())
    etag = response_headers(got)["etag"]

    head = handle(build("HEAD", QUERY, {"accept": "image/webp"}), FakeContext())
    assert head["statusCode"] == 200
    assert response_body(head) == b""
    assert response_headers(head)["content-length"] == str(len(response_body(got)))
    assert response_headers(head)["x-nextjs-cache"] == "HIT"

    revalidate = build("GET", QUERY, {"accept": "image/webp", "if-none-match": etag})
    not_modified = handle(revalidate, FakeContext())
    assert not_modified["statusCode"] == 304
    assert response_body(not_modified) == b""
    assert response_headers(not_modified)["etag"] == etag
    # Labelled, so no event source's default (JSON) can relabel the cached image.
    assert response_headers(not_modified)["content-type"] == "image/webp"


@pytest.mark.parametrize("source", SOURCES)
def test_repeated_url_is_an_array_error(source: str, settings: Settings) -> None:
    query = "url=%2Ftest.jpg&url=%2Ftest.png&w=640&q=75"
    response = invoke(settings, SOURCES[source]("GET", query, {"accept": "image/webp"}))
    assert response["statusCode"] == 400
    assert response_body(response) == errors.URL_ARRAY.encode()
    assert response_headers(response)["content-type"] == "text/plain; charset=utf-8"


def test_oversize_body_is_a_redirect_to_the_stored_variant(public_dir: Path) -> None:
    settings = Settings(public_dir=str(public_dir), max_inline_bytes=100)
    response = invoke(settings, function_url("GET", QUERY, {"accept": "image/webp"}))

    assert response["statusCode"] == 302
    headers = response_headers(response)
    source_hash = hashlib.sha256((public_dir / "test.jpg").read_bytes()).hexdigest()
    key = variant_key(source_hash, 640, 75, "image/webp")
    assert headers["location"] == "/_next/image-variants/" + key
    assert headers["cache-control"] == "public, max-age=14400, must-revalidate"
    assert headers["vary"] == "Accept"
    assert response_body(response) == b""


def test_one_json_log_line_and_emf_metrics_per_request(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    handle = build_handler(settings)  # its records go to sys.stdout as it is now (capsys's)
    context = FakeContext()
    handle(function_url("GET", QUERY, {"accept": "image/webp"}), context)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]

    logs = [line for line in lines if line.get("message") == "image request"]
    assert len(logs) == 1
    log = logs[0]
    assert log["function_request_id"] == context.aws_request_id
    assert (log["url"], log["w"], log["q"], log["cache"], log["status"]) == (
        "/test.jpg",
        640,
        75,
        "MISS",
        200,
    )
    assert log["format"] == "image/webp" and log["source_bytes"] > 0 and log["output_bytes"] > 0
    assert set(log["stages_ms"]) >= {"fetch", "transform"}

    emf = [line for line in lines if "_aws" in line and "Requests" in line]
    assert len(emf) == 1
    names = {m["Name"] for m in emf[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"Requests", "Misses", "TransformMs", "TotalMs", "OutputBytes"} <= names
    assert emf[0]["Misses"] == [1.0] or emf[0]["Misses"] == 1.0


def test_lambda_settings_default_to_s3_and_the_inline_cap() -> None:
    settings = lambda_settings({"NEXT_IMAGE_BUCKET": "b", "NEXT_IMAGE_PREFIX": "p/"})
    assert (settings.store, settings.bucket, settings.prefix) == ("s3", "b", "p/")
    assert settings.max_inline_bytes == LAMBDA_MAX_INLINE_BYTES
    assert LAMBDA_MAX_INLINE_BYTES * 4 / 3 < 6 * 1024 * 1024 - 64 * 1024  # base64 + headers
    explicit = lambda_settings({"NEXT_IMAGE_BUCKET": "b", "NEXT_IMAGE_STORE": "memory"})
    assert (explicit.store, explicit.max_inline_bytes) == ("memory", None)


# What the Lambda init must not import: each is loaded when first needed (or, under SnapStart,
# before the snapshot), or never on Lambda. How long the import takes is bench/budgets.py's
# (``make bench-budgets``): a wall-clock budget a loaded machine can miss is no test.
LEFT_OUT_OF_INIT = (
    "boto3",  # the first S3 call (handler.stores.s3_client)
    "botocore.session",
    "botocore.client",
    "s3transfer",
    "httpx",  # the first fetch (handler.sources.http_fetch)
    "httpcore",
    "prometheus_client",  # serve's /metrics only
    "redis",  # the Redis store, which Lambda does not use
    "uvicorn",  # serve
    "tqdm",  # warm
    "handler.commands",  # the CLI, never shipped to Lambda
    "handler.entry.service",
    "handler.stores.redis",
    "handler.stores.filesystem",
    "devtools",  # the tests' and benches' tools
)


def test_the_lambda_init_leaves_heavy_modules_out() -> None:
    """Importing ``handler.entry.lambda_handler`` as Lambda does (S3 store and assets bucket named)
    builds the app without the modules that only some requests, or only serve, need."""
    from bench.common import LAMBDA_ENV  # the environment the bench times it in

    script = (
        "import json, sys, handler.entry.lambda_handler; "
        f"print(json.dumps([m for m in {LEFT_OUT_OF_INIT!r} if m in sys.modules]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXT_IMAGE_")} | LAMBDA_ENV
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert json.loads(out.stdout.splitlines()[-1]) == []


def test_snapstart_hooks(tmp_path: Path) -> None:
    """Before the snapshot boto3 is loaded; after a restore the S3 client and seed are new."""
    (tmp_path / "snapshot_restore_py.py").write_text(
        "hooks = {}\n"
        "def register_before_snapshot(f): hooks['before'] = f\n"
        "def register_after_restore(f): hooks['after'] = f\n"
    )
    script = (
        "import sys, snapshot_restore_py as s, handler.entry.lambda_handler\n"
        "from handler.stores import s3_client as s3\n"
        "assert 'boto3' not in sys.modules and s3._client is None\n"
        "s.hooks['before'](); assert 'boto3' in sys.modules and s3._client is not None\n"
        "import random; random.seed(7); a = random.random(); random.seed(7)\n"
        "s.hooks['after'](); assert s3._client is None and random.random() != a\n"
    )
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    env = os.environ | {"PYTHONPATH": path, "AWS_DEFAULT_REGION": "us-east-1"}
    subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, check=True)
