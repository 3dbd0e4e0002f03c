"""Cold vs warm: the same 20 requests through the Lambda handler in one process, S3 over HTTP.

moto's S3 server stands in for S3 (boto3 reaches it through ``AWS_ENDPOINT_URL``); relative URLs
come from an assets bucket seeded with ``public/``. Three passes:
- cold: empty variant bucket, every request a MISS (fetch, transform, two writes);
- warm: a new handler instance (nothing in memory), variants in S3: every request a HIT;
- warm, same instance: pointers also in memory, one S3 GET per request.

Each pass also reports the S3 calls per request (by operation and record: pointer, variant,
source, asset), the time spent in them, and the mean per-stage times of the request log (``store``
is the time a request waited on the store: the S3 calls on its critical path). The cold pass
reports them apart for the first request of each image (a new URL) and the others (a new width
of an image already seen).

    python bench/lambda_cold_warm.py [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from moto.server import ThreadedMotoServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo
from bench.common import ACCEPTS, REPO, Recorder, free_port, summary

IMAGES = ("a.jpg", "b.png")
WIDTHS = (384, 640, 828, 1080, 1920)
ENV = {
    "NEXT_IMAGE_BUCKET": "bench-variants",
    "NEXT_IMAGE_ASSETS_BUCKET": "bench-assets",
    "NEXT_IMAGE_ASSETS_PREFIX": "_assets/",
    "NEXT_IMAGE_CONFIG": '{"formats": ["image/avif", "image/webp"]}',
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_METRICS_DISABLED": "true",
}


def events() -> list[dict[str, Any]]:
    """20 Function URL events: two images, five widths, WebP and AVIF browsers."""
    return [
        {
            "version": "2.0",
            "rawPath": "/_next/image",
            "rawQueryString": f"url=%2F{name}&w={width}&q=75",
            "headers": {"accept": accept, "host": "bench.lambda-url.us-east-1.on.aws"},
            "requestContext": {
                "http": {"method": "GET", "path": "/_next/image", "sourceIp": "203.0.113.9"}
            },
            "isBase64Encoded": False,
        }
        for name in IMAGES
        for width in WIDTHS
        for accept in ACCEPTS.values()
    ]


def timed_pass(handle: Any, batch: list[dict[str, Any]], recorder: Recorder) -> dict[str, Any]:
    from handler.commands.invoke import FakeContext, response_headers

    recorder.take()
    caches: dict[str, int] = {}
    seen: set[str] = set()
    by_url: dict[str, list[tuple[list[tuple[str, float]], dict[str, float]]]] = {}
    total_ms = 0.0
    for event in batch:
        started = time.perf_counter()
        response = handle(event, FakeContext())
        total_ms += (time.perf_counter() - started) * 1000
        assert response["statusCode"] == 200, response
        cache = response_headers(response)["x-nextjs-cache"]
        caches[cache] = caches.get(cache, 0) + 1
        url = event["rawQueryString"].split("&", 1)[0]
        group = "new_width" if url in seen else "new_url"
        seen.add(url)
        by_url.setdefault(group, []).append(recorder.take())
    result = {
        "ms": round(total_ms, 1),
        "ms_per_request": round(total_ms / len(batch), 1),
        "cache": caches,
    } | summary([request for group in by_url.values() for request in group])
    if caches.get("MISS"):
        result |= {group: summary(requests) for group, requests in by_url.items()}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    port = free_port()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(ENV, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    try:
        from handler.entry.lambda_handler import build_handler, lambda_settings
        from handler.stores.s3_client import s3_client, s3_source_client

        client = s3_client()
        for bucket in (ENV["NEXT_IMAGE_BUCKET"], ENV["NEXT_IMAGE_ASSETS_BUCKET"]):
            client.create_bucket(Bucket=bucket)
        for name in IMAGES:
            body = (REPO / "public" / name).read_bytes()
            key = ENV["NEXT_IMAGE_ASSETS_PREFIX"] + name
            client.put_object(Bucket=ENV["NEXT_IMAGE_ASSETS_BUCKET"], Key=key, Body=body)

        recorder = Recorder()
        recorder.install(client, s3_source_client())
        batch = events()
        result: dict[str, Any] = {"requests": len(batch)}
        result["cold"] = timed_pass(build_handler(lambda_settings()), batch, recorder)
        instance = build_handler(lambda_settings())
        result["warm"] = timed_pass(instance, batch, recorder)
        result["warm_same_instance"] = timed_pass(instance, batch, recorder)
    finally:
        server.stop()

    if args.json:
        print(json.dumps(result))
    else:
        print(f"requests: {result.pop('requests')}")
        for name, figures in result.items():
            print(f"{name}:")
            for key, value in figures.items():
                print(f"  {key:>22}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
