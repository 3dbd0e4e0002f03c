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

    python bench/bench_lambda.py [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: this checkout's handler, not the installed one
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


def record_of(key: str) -> str:
    """Which kind of object an S3 call touched, from its key."""
    for kind in ("pointer", "variant", "source"):
        if f"_next/image-{kind}s/" in key:
            return kind
    return "asset"


@dataclass
class Recorder:
    """Every S3 call of the shared client (its operation, record and duration) and every
    request's stage times, as the request log reports them."""

    calls: list[tuple[str, float]] = field(default_factory=list)
    stages: list[dict[str, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, *clients: Any) -> None:
        """Record the calls of ``clients`` (the store's and the sources' S3 clients)."""
        for client in clients:
            client.meta.events.register("before-call.s3", self._before)
            for event in ("after-call.s3", "after-call-error.s3"):
                client.meta.events.register(event, self._after)
        from handler.http.observability import RequestObserver

        observe = RequestObserver.__call__

        def observed(observer: RequestObserver, request: Any, record: Any) -> None:
            self.stages.append(dict(record.get("stages_ms", {})))
            observe(observer, request, record)

        RequestObserver.__call__ = observed  # type: ignore[method-assign,assignment]

    def _before(self, model: Any, params: dict[str, Any], context: Any, **_: Any) -> None:
        context["bench"] = (model.name, params.get("url_path", ""), time.perf_counter())

    def _after(self, context: Any, **_: Any) -> None:
        name, path, started = context.pop("bench")
        with self._lock:
            self.calls.append((f"{name} {record_of(path)}", (time.perf_counter() - started) * 1e3))

    def take(self) -> tuple[list[tuple[str, float]], dict[str, float]]:
        """The calls and stage times of the request just answered; the recorder starts over."""
        calls, stages = list(self.calls), (self.stages[-1] if self.stages else {})
        self.calls.clear()
        self.stages.clear()
        return calls, stages


def summary(requests: list[tuple[list[tuple[str, float]], dict[str, float]]]) -> dict[str, Any]:
    """Per request: S3 calls by kind, their summed time, and each stage's mean time."""
    n = len(requests)
    calls = [call for request_calls, _ in requests for call in request_calls]
    kinds = Counter(kind for kind, _ in calls)
    stage_names = sorted({name for _, stages in requests for name in stages})
    return {
        "s3_calls_per_request": round(len(calls) / n, 2),
        "s3_calls": {kind: round(count / n, 2) for kind, count in sorted(kinds.items())},
        "s3_ms_per_request": round(sum(ms for _, ms in calls) / n, 1),
        "stages_ms": {
            name: round(sum(stages.get(name, 0.0) for _, stages in requests) / n, 1)
            for name in stage_names
        },
    }


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

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
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
            body = (ROOT / "public" / name).read_bytes()
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
