"""Bad days for S3, through the Lambda handler: a hung variants bucket, a slow S3.

moto's S3 server sits behind the tests' fault proxy (``devtools/fault_proxy.py``), which can
black-hole one bucket or answer every request late. Each scenario builds a fresh handler (a new
Lambda instance) and times its invocations as the client waits for them: the handler's return,
``finish_invocation`` included.

- ``hung-store``: the variants bucket accepts requests and never answers; the image comes from
  the public folder. Per request: status, seconds, and the S3 requests the variants bucket got
  while it ran (each one a store call that waited for its timeout), and the store calls still
  running when it answered.
- ``slow-s3``: every S3 answer comes ``--delay`` seconds late (alive, just slow); the image comes
  from the assets bucket.

    python bench/s3_faults.py [--budget 5] [--slow-budget 20] [--delay 3] [--json]
    python bench/s3_faults.py --checkout /path/to/another/checkout   # its handler/, same proxy
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo
from bench.common import REPO, free_port
from devtools.fault_proxy import fault_proxy

ASSETS_PREFIX = "_assets/"
WIDTHS = (640, 750, 828, 1080)  # in Next's default deviceSizes


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=5.0, help="hung-store request budget")
    parser.add_argument("--slow-budget", type=float, default=20.0, help="slow-s3 request budget")
    parser.add_argument("--delay", type=float, default=3.0, help="slow-s3: seconds late")
    parser.add_argument("--requests", type=int, default=2, help="hung-store: invocations")
    parser.add_argument("--checkout", type=Path, default=REPO, help="whose handler/ to run")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    sys.path.insert(0, str(args.checkout.resolve()))
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        POWERTOOLS_LOG_LEVEL="ERROR",
        POWERTOOLS_METRICS_DISABLED="true",
    )
    from moto.server import ThreadedMotoServer

    import handler
    from handler.commands.invoke import FakeContext, function_url_event
    from handler.entry.lambda_handler import build_handler, lambda_settings
    from handler.stores.s3_client import reset_s3_client, s3_client

    assert Path(handler.__file__).resolve().parent.parent == args.checkout.resolve()

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    results: dict[str, Any] = {}
    try:
        with fault_proxy(port) as proxy:
            os.environ["AWS_ENDPOINT_URL"] = proxy.url
            reset_s3_client()
            variants, assets = f"v-{uuid.uuid4().hex[:8]}", f"a-{uuid.uuid4().hex[:8]}"
            for bucket in (variants, assets):
                s3_client().create_bucket(Bucket=bucket)
            body = (REPO / "public" / "a.jpg").read_bytes()
            s3_client().put_object(Bucket=assets, Key=f"{ASSETS_PREFIX}photo.jpg", Body=body)

            def invoke(instance: Any, query: str) -> tuple[int, float]:
                event = function_url_event(query, "image/webp,*/*")
                started = time.monotonic()
                response = instance(event, FakeContext())
                return int(response["statusCode"]), round(time.monotonic() - started, 2)

            # A hung variants bucket; the source is the public folder.
            proxy.mode, proxy.bucket = "hang", variants
            instance = build_handler(
                lambda_settings(
                    {
                        "NEXT_IMAGE_BUCKET": variants,
                        "NEXT_IMAGE_PUBLIC_DIR": str(REPO / "public"),
                        "NEXT_IMAGE_TIMEOUT": str(args.budget),
                    }
                )
            )
            rows = []
            for n in range(args.requests):
                before = len(proxy.requests_to(variants))
                status, seconds = invoke(instance, f"url=%2Fa.jpg&w={WIDTHS[n % 4]}&q=75")
                store_requests = len(proxy.requests_to(variants)) - before
                rows.append(
                    {
                        "status": status,
                        "seconds": seconds,
                        "variants_bucket_requests": store_requests,
                        "store_calls_left_running": proxy.held_by_clients(),
                    }
                )
            results["hung_store"] = {"budget": args.budget, "requests": rows}
            proxy.mode = "pass"
            proxy.release()

            # A slow S3 (every bucket); the source is the assets bucket.
            reset_s3_client()
            proxy.mode, proxy.bucket, proxy.delay = "slow", None, args.delay
            instance = build_handler(
                lambda_settings(
                    {
                        "NEXT_IMAGE_BUCKET": variants,
                        "NEXT_IMAGE_ASSETS_BUCKET": assets,
                        "NEXT_IMAGE_ASSETS_PREFIX": ASSETS_PREFIX,
                        "NEXT_IMAGE_TIMEOUT": str(args.slow_budget),
                    }
                )
            )
            status, seconds = invoke(instance, "url=%2Fphoto.jpg&w=640&q=75")
            results["slow_s3"] = {
                "budget": args.slow_budget,
                "delay": args.delay,
                "status": status,
                "seconds": seconds,
            }
            proxy.mode = "pass"
    finally:
        server.stop()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        hung = results["hung_store"]
        print(f"hung variants bucket, budget {hung['budget']:g} s (public-folder source):")
        for n, row in enumerate(hung["requests"], 1):
            print(
                f"  request {n}: {row['status']} in {row['seconds']} s, "
                f"{row['variants_bucket_requests']} variants-bucket requests, "
                f"{row['store_calls_left_running']} store calls left running"
            )
        slow = results["slow_s3"]
        print(
            f"S3 {slow['delay']:g} s late, budget {slow['budget']:g} s (assets-bucket source): "
            f"{slow['status']} in {slow['seconds']} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
