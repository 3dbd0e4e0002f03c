"""``next-image``: serve the optimizer locally, print the resolved config, invoke the handler."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from handler.settings import ENV_PREFIX, Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="next-image", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve /_next/image over HTTP (uvicorn)")
    serve.add_argument("--host", help="bind address [NEXT_IMAGE_HOST, 127.0.0.1]")
    serve.add_argument("--port", type=int, help="port [NEXT_IMAGE_PORT, 3000]")
    serve.add_argument("--public-dir", help="the app's public/ folder [NEXT_IMAGE_PUBLIC_DIR]")
    serve.add_argument("--origin", help="the app's origin for relative URLs [NEXT_IMAGE_ORIGIN]")
    _add_config_flag(serve)
    serve.add_argument(
        "--store",
        choices=["memory", "filesystem", "s3", "redis"],
        help="variant store [NEXT_IMAGE_STORE, memory]",
    )
    serve.add_argument(
        "--redis-url",
        help="redis store: redis://[[user]:password@]host:port/db, or rediss:// for TLS "
        "[NEXT_IMAGE_REDIS_URL]",
    )
    serve.add_argument(
        "--variant-ttl",
        type=int,
        help="seconds a variant lives in the redis store [NEXT_IMAGE_VARIANT_TTL, 2592000]",
    )
    serve.add_argument(
        "--cache-dir", help="filesystem store folder [NEXT_IMAGE_CACHE_DIR, ./.next-image-cache]"
    )
    serve.add_argument(
        "--cache-max-bytes", type=int, help="filesystem store bound [NEXT_IMAGE_CACHE_MAX_BYTES]"
    )
    serve.add_argument(
        "--hot-cache-bytes",
        type=int,
        help="filesystem store: bytes of recent records each process keeps in memory, 0 for "
        "none [NEXT_IMAGE_HOT_CACHE_BYTES, 64000000]",
    )
    serve.add_argument(
        "--timeout",
        type=float,
        help="seconds per request, fetch + transform [NEXT_IMAGE_TIMEOUT, 30]",
    )
    serve.add_argument(
        "--max-attempts",
        type=int,
        help="tries of a transient upstream failure [NEXT_IMAGE_MAX_ATTEMPTS, 3]",
    )

    serve.add_argument(
        "--max-transforms",
        type=int,
        help="transforms running at once [NEXT_IMAGE_MAX_TRANSFORMS, one per CPU]",
    )
    serve.add_argument(
        "--max-queue",
        type=int,
        help="requests waiting for a transform; more get 503 [NEXT_IMAGE_MAX_QUEUE, 32]",
    )
    serve.add_argument(
        "--memory-budget",
        type=int,
        help="bytes running transforms may reserve [NEXT_IMAGE_MEMORY_BUDGET, "
        "half the memory limit]",
    )
    serve.add_argument(
        "--store-timeout",
        type=float,
        help="seconds per store call before it counts as failed [NEXT_IMAGE_STORE_TIMEOUT, 3]",
    )
    serve.add_argument(
        "--strict-redirects",
        action="store_const",
        const=True,
        help="re-apply remotePatterns on every redirect hop [NEXT_IMAGE_STRICT_REDIRECTS, off]",
    )

    serve.add_argument(
        "--docs",
        action="store_const",
        const=True,
        help="also serve the OpenAPI schema (/openapi.json) and interactive docs (/docs) "
        "[NEXT_IMAGE_DOCS, off]",
    )
    serve.add_argument(
        "--workers",
        help="worker processes on the one port, a number or auto (one per CPU); a worker that "
        "dies is replaced [NEXT_IMAGE_WORKERS, 1]",
    )

    config = commands.add_parser("config", help="print the resolved Next images config as JSON")
    _add_config_flag(config)

    openapi = commands.add_parser("openapi", help="print the OpenAPI schema of /_next/image")
    _add_config_flag(openapi)

    invoke = commands.add_parser("invoke", help="run the Lambda handler on a sample event")
    invoke.add_argument("event", type=Path, help="an event JSON file, e.g. events/*.json")
    invoke.add_argument("--env-file", type=Path, help="KEY=VALUE lines added to the environment")
    invoke.add_argument(
        "--moto", action="store_true", help="S3 in-process (moto), buckets created on the fly"
    )
    invoke.add_argument("--seed", type=Path, help="with --moto: upload this folder as assets")
    invoke.add_argument(
        "--out", type=Path, default=Path("invoke-out"), help="folder for response bodies"
    )

    local_cdn = commands.add_parser(
        "local-cdn", help="serve a synthesized stack's CloudFront distribution on this machine"
    )
    local_cdn.add_argument(
        "--template", type=Path, required=True, help="cdk.out/<stack>.template.json"
    )
    local_cdn.add_argument(
        "--app-origin", help="the app standing in for the default behaviour's origin"
    )
    local_cdn.add_argument("--host", default="127.0.0.1", help="bind address [127.0.0.1]")
    local_cdn.add_argument("--port", type=int, default=8080, help="port, 0 for any free one")
    local_cdn.add_argument(
        "--moto", action="store_true", help="S3 in-process (moto) with the template's buckets"
    )
    local_cdn.add_argument(
        "--seed-public", type=Path, help="upload this folder to the function's assets bucket"
    )
    local_cdn.add_argument(
        "--env-file", type=Path, help="KEY=VALUE lines over the function's environment"
    )

    args = parser.parse_args(argv)
    if args.command == "config":
        return _print_config(args.config)
    if args.command == "openapi":
        return _print_openapi(args.config)
    if args.command == "invoke":
        from devtools.invoke import run

        run(args.event, env_file=args.env_file, moto=args.moto, seed=args.seed, out_dir=args.out)
        return 0
    if args.command == "local-cdn":
        from devtools.local_cdn.command import run as run_local_cdn  # never shipped to Lambda

        return run_local_cdn(args)
    return _serve(args)


def _add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help="a .next folder, required-server-files.json, images-manifest.json, "
        "a JSON file with the images config, or inline JSON [NEXT_IMAGE_CONFIG]",
    )


def _print_config(source: str | None) -> int:
    from handler.config import load_images_config

    settings = Settings.from_env(config=source)
    json.dump(load_images_config(settings.config).to_json(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _print_openapi(source: str | None) -> int:
    """The schema of the app as ``serve`` would build it (sizes and formats from the config)."""
    from handler.wiring import build_app

    app = build_app(Settings.from_env(config=source), docs=True)
    json.dump(app.openapi(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from handler import service

    os.environ.update(_flags_as_environment(args))  # what every worker will read
    return service.run(Settings.from_env())  # a bad value fails here, before any worker starts


def _flags_as_environment(args: argparse.Namespace) -> dict[str, str]:
    """The serve flags given, as the ``NEXT_IMAGE_*`` variables each worker reads.

    Every flag is named after its ``Settings`` field: one that is not fails every start.
    """
    known = {field.name for field in fields(Settings)}
    environment: dict[str, str] = {}
    for name, value in vars(args).items():
        if name == "command":
            continue
        if name not in known:
            raise TypeError(f"serve flag {name!r} has no Settings field")
        if value is not None:
            environment[ENV_PREFIX + name.upper()] = "true" if value is True else str(value)
    return environment


if __name__ == "__main__":
    raise SystemExit(main())
