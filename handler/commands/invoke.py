"""``next-image invoke``: run the Lambda handler on a sample event, like a console test invoke.

The event goes through ``build_handler`` (what ``handler.entry.lambda_handler`` runs at init), so
this is the deployed code path with a fake Lambda context. S3 is either moto in-process (``--moto``,
buckets created, a folder optionally uploaded as assets) or whatever endpoint boto3 is given by
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from handler.commands.moto_extra import mock_aws
from handler.entry.settings import Settings
from handler.pipeline.sniff import detect_content_type
from handler.stores.s3_client import reset_s3_client, s3_client


@dataclass
class FakeContext:
    """The attributes of a Lambda context that Mangum and Powertools read."""

    function_name: str = "next-image"
    memory_limit_in_mb: int = 2048
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:next-image"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def load_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines; blank lines, ``#`` comments and surrounding quotes are ignored."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep:
            raise ValueError(f"{path}: not KEY=VALUE: {line!r}")
        values[key.strip()] = value.strip().strip("'\"")
    return values


@contextmanager
def mocked_s3(settings: Settings, seed: Path | None = None) -> Iterator[Any]:
    """moto's in-process S3 with the settings' buckets created; ``seed`` is uploaded as assets.

    ``MissingExtra`` when moto is not installed.
    """
    with mock_aws():
        reset_s3_client()
        client = s3_client()
        try:
            for bucket in {settings.bucket, settings.assets_bucket} - {None}:
                client.create_bucket(Bucket=bucket)
            if seed is not None and settings.assets_bucket:
                for path in sorted(p for p in seed.rglob("*") if p.is_file()):
                    key = settings.assets_prefix + path.relative_to(seed).as_posix()
                    client.put_object(
                        Bucket=settings.assets_bucket, Key=key, Body=path.read_bytes()
                    )
            yield client
        finally:
            reset_s3_client()


def run(
    event_path: Path,
    *,
    env_file: Path | None = None,
    moto: bool = False,
    seed: Path | None = None,
    out_dir: Path = Path("invoke-out"),
    stdout: TextIO | None = None,
) -> dict[str, Any]:
    """Invoke the handler on one event file, print the response, and return it."""
    if env_file is not None:
        os.environ.update(load_env_file(env_file))
    from handler.entry.lambda_handler import (  # its init reads the env
        build_handler,
        lambda_settings,
    )

    if moto and (os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")):
        raise ValueError("--moto and AWS_ENDPOINT_URL(_S3) are exclusive")
    settings = lambda_settings()
    event = json.loads(event_path.read_text())
    s3: AbstractContextManager[Any] = mocked_s3(settings, seed) if moto else nullcontext()
    with s3:
        response = build_handler(settings)(event, FakeContext())
    report(response, out_dir / event_path.stem, stdout or sys.stdout)
    return response


def function_url_event(
    query: str, accept: str, host: str = "abc.lambda-url.us-east-1.on.aws"
) -> dict[str, Any]:
    """A Function URL (payload 2.0) GET of ``/_next/image``, as CloudFront forwards it."""
    return {
        "version": "2.0",
        "rawPath": "/_next/image",
        "rawQueryString": query,
        "headers": {"accept": accept, "host": host},
        "requestContext": {
            "http": {"method": "GET", "path": "/_next/image", "sourceIp": "203.0.113.9"}
        },
        "isBase64Encoded": False,
    }


def response_headers(response: Mapping[str, Any]) -> dict[str, str]:
    """Single- and multi-value headers of any event source's response, one comma-joined value."""
    headers = {k.lower(): str(v) for k, v in (response.get("headers") or {}).items()}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers[name.lower()] = ", ".join(str(v) for v in values)
    return headers


def response_body(response: Mapping[str, Any]) -> bytes:
    body = response.get("body") or ""
    return base64.b64decode(body) if response.get("isBase64Encoded") else str(body).encode()


def report(response: Mapping[str, Any], out_stem: Path, stdout: TextIO) -> None:
    """Status and headers; the body goes to a file named after the event, described by its bytes."""
    print(f"status: {response.get('statusCode')}", file=stdout)
    for name, value in response_headers(response).items():
        print(f"{name}: {value}", file=stdout)
    body = response_body(response)
    if not body:
        print("body: (empty)", file=stdout)
        return
    kind = detect_content_type(body)
    out = out_stem.with_suffix("." + (kind.rpartition("/")[2].split("+")[0] if kind else "txt"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(body)
    described = kind or f"text: {body[:200].decode(errors='replace')!r}"
    print(f"body: {out} ({described}, {len(body)} bytes)", file=stdout)
