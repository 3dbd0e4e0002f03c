"""Cold vs warm: the same 20 requests through the Lambda handler in one process, S3 over HTTP.

moto's S3 server stands in for S3 (boto3 reaches it through ``AWS_ENDPOINT_URL``); relative URLs
come from an assets bucket seeded with ``public/``. Three passes:
- cold: empty variant bucket, every request a MISS (fetch, transform, two writes);
- warm: a new handler instance (nothing in memory), variants in S3: every request a HIT;
- warm, same instance: pointers also in memory, one S3 GET per request.

    python bench/bench_lambda.py [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ("a.jpg", "b.png")
WIDTHS = (384, 640, 828, 1080, 1920)
ACCEPTS = {
    "webp": "image/webp,image/apng,image/*,*/*;q=0.8",
    "avif": "image/avif,image/webp,image/apng,image/*,*/*;q=0.8",
}
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


def timed_pass(handle: Any, batch: list[dict[str, Any]]) -> tuple[float, dict[str, int]]:
    from handler.invoke import FakeContext, response_headers

    caches: dict[str, int] = {}
    started = time.perf_counter()
    for event in batch:
        response = handle(event, FakeContext())
        assert response["statusCode"] == 200, response
        cache = response_headers(response)["x-nextjs-cache"]
        caches[cache] = caches.get(cache, 0) + 1
    return round((time.perf_counter() - started) * 1000, 1), caches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(ENV, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    try:
        from handler.lambda_handler import build_handler, lambda_settings
        from handler.stores.s3 import s3_client

        client = s3_client()
        for bucket in (ENV["NEXT_IMAGE_BUCKET"], ENV["NEXT_IMAGE_ASSETS_BUCKET"]):
            client.create_bucket(Bucket=bucket)
        for name in IMAGES:
            body = (ROOT / "public" / name).read_bytes()
            key = ENV["NEXT_IMAGE_ASSETS_PREFIX"] + name
            client.put_object(Bucket=ENV["NEXT_IMAGE_ASSETS_BUCKET"], Key=key, Body=body)

        batch = events()
        cold_ms, cold = timed_pass(build_handler(lambda_settings()), batch)
        instance = build_handler(lambda_settings())
        warm_ms, warm = timed_pass(instance, batch)
        again_ms, again = timed_pass(instance, batch)
    finally:
        server.stop()

    result = {
        "requests": len(batch),
        "cold_ms": cold_ms,
        "cold_cache": cold,
        "warm_ms": warm_ms,
        "warm_cache": warm,
        "warm_same_instance_ms": again_ms,
        "warm_same_instance_cache": again,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>26}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
