"""``next-image``: serve the optimizer locally, print the resolved config, invoke the handler,
warm a store (or write a static export's variants as files), purge image URLs from it, write the
custom ``next/image`` loader."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from handler.entry.settings import SETTINGS, Setting, Settings

# serve flags about serving visitors: warm asks its workers for one variant at a time, and
# wants the variant itself (never a fast first view's stand-in).
SERVE_ONLY = frozenset(
    {"host", "port", "workers", "docs", "max_transforms", "max_queue", "memory_budget"}
    | {"fast_first_view"}
)
# purge's flags: where the store is, and the config (its basePath, for CloudFront's paths).
PURGE_SETTINGS = frozenset({"store", "cache_dir", "redis_url", "images_config"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="next-image", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve /_next/image over HTTP (uvicorn)")
    for setting in SETTINGS:
        if setting.flag:
            _add_flag(serve, setting)

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
        "--seed-public",
        type=Path,
        help="also upload this folder to the function's assets bucket, after the template's "
        "BucketDeployments (run from its cdk.out)",
    )
    local_cdn.add_argument(
        "--env-file", type=Path, help="KEY=VALUE lines over the function's environment"
    )
    local_cdn.add_argument(
        "--cloudfront-api-port",
        type=int,
        default=0,
        help="port of its CloudFront API (CreateInvalidation, for next-image purge) [any free one]",
    )

    warm = commands.add_parser(
        "warm", help="store the variants an app will ask for ahead of traffic (serve's settings)"
    )
    for setting in SETTINGS:
        if setting.flag and setting.name not in SERVE_ONLY:
            _add_flag(warm, setting)
    warm.add_argument(
        "--urls", type=Path, metavar="FILE", help="image URLs, one a line, instead of the folder"
    )
    warm.add_argument(
        "--widths", type=_numbers, metavar="W,W", help="[the config's deviceSizes and imageSizes]"
    )
    warm.add_argument(
        "--qualities", type=_numbers, metavar="Q,Q", help="[the config's qualities, else 75]"
    )
    warm.add_argument("--jobs", type=int, metavar="N", help="worker processes [one per CPU]")
    warm.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write the variants as files under DIR/_next/image-files/ for a static host (no "
        "function), with the loader module that links them; any store, memory by default",
    )
    warm.add_argument(
        "--format",
        choices=("webp", "avif"),
        help="with --out: the one format written (a static host cannot negotiate) [webp]",
    )
    warm.add_argument(
        "--pages",
        type=Path,
        metavar="DIR",
        help="with --out: the export's out/ folder, whose HTML names the variants to write "
        "[every image of --public-dir at every width]",
    )

    purge = commands.add_parser(
        "purge",
        help="remove image URLs' pointers from the store (the next request re-checks the "
        "source), and invalidate them at CloudFront",
    )
    for setting in SETTINGS:
        if setting.flag and setting.name in PURGE_SETTINGS:
            _add_flag(purge, setting)
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--url",
        action="append",
        dest="urls",
        metavar="URL",
        help="an image URL as the page's src spells it (/images/a.jpg, https://cdn.example.com/"
        "a.jpg); repeatable",
    )
    which.add_argument("--all", action="store_true", help="every pointer in the store")
    purge.add_argument(
        "--distribution-id",
        metavar="ID",
        help="also invalidate them at this CloudFront distribution "
        "(AWS_ENDPOINT_URL_CLOUDFRONT overrides the endpoint)",
    )

    loader = commands.add_parser(
        "loader",
        help="print or write the custom next/image loader (loaderFile) that builds this "
        "optimizer's URLs, for a static export or an app on another host",
    )
    loader.add_argument("--out", type=Path, metavar="FILE", help="write it here [stdout]")
    loader.add_argument(
        "--files",
        choices=("webp", "avif"),
        help="link the files `warm --out --format FORMAT` writes instead of the optimizer",
    )

    args = parser.parse_args(argv)
    if args.command == "loader":
        from handler.commands.loader import run as run_loader  # never shipped to Lambda

        return run_loader(args)
    if args.command == "config":
        return _print_config(args.images_config)
    if args.command == "openapi":
        return _print_openapi(args.images_config)
    if args.command == "invoke":
        from handler.commands.invoke import run
        from handler.commands.moto_extra import MissingExtra

        try:
            run(
                args.event, env_file=args.env_file, moto=args.moto, seed=args.seed, out_dir=args.out
            )
        except MissingExtra as exc:
            print(f"next-image invoke: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "warm":
        from handler.commands.warm.command import run as run_warm  # never shipped to Lambda

        return run_warm(args)
    if args.command == "purge":
        from handler.commands.purge.command import run as run_purge  # never shipped to Lambda

        return run_purge(args)
    if args.command == "local-cdn":
        from handler.commands.local_cdn.command import (
            run as run_local_cdn,  # never shipped to Lambda
        )

        return run_local_cdn(args)
    return _serve(args)


def _version() -> str:
    """This package's version and the libvips it runs on: what a bug report needs first."""
    import pyvips

    from handler import __version__

    libvips = ".".join(str(pyvips.version(part)) for part in range(3))
    return f"next-image {__version__} (libvips {libvips})"


def _numbers(text: str) -> list[int]:
    """``640,750,828``."""
    return [int(part) for part in text.split(",") if part.strip()]


def _add_config_flag(parser: argparse.ArgumentParser) -> None:
    (images_config,) = (setting for setting in SETTINGS if setting.name == "images_config")
    _add_flag(parser, images_config)


def _add_flag(parser: argparse.ArgumentParser, setting: Setting) -> None:
    """The flag as declared; its value lands on the setting's field name."""
    assert setting.flag is not None
    shown = "" if setting.shown_default == "none" else f", {setting.shown_default}"
    help = f"{setting.help} [{setting.env}{shown}]"
    if setting.is_switch:
        parser.add_argument(
            setting.flag, dest=setting.name, action="store_const", const=True, help=help
        )
    elif setting.choices:
        parser.add_argument(setting.flag, dest=setting.name, choices=setting.choices, help=help)
    else:
        metavar = setting.flag.removeprefix("--").replace("-", "_").upper()
        parser.add_argument(
            setting.flag, dest=setting.name, type=setting.parse, metavar=metavar, help=help
        )


def _print_config(source: str | None) -> int:
    from handler.contract.config import load_images_config

    settings = Settings.from_env(images_config=source)
    json.dump(load_images_config(settings.images_config).to_json(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _print_openapi(source: str | None) -> int:
    """The schema of the app as ``serve`` would build it (sizes and formats from the config)."""
    from handler.entry.wiring import build_app

    app = build_app(Settings.from_env(images_config=source), docs=True)
    json.dump(app.openapi(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from handler.entry import service

    os.environ.update(_flags_as_environment(args))  # what every worker will read
    return service.run(Settings.from_env())  # a bad value fails here, before any worker starts


def _flags_as_environment(args: argparse.Namespace) -> dict[str, str]:
    """The serve flags given, as the ``NEXT_IMAGE_*`` variables each worker reads."""
    environment: dict[str, str] = {}
    for setting in SETTINGS:
        value = getattr(args, setting.name, None) if setting.flag else None
        if value is not None:
            environment[setting.env] = "true" if value is True else str(value)
    return environment


if __name__ == "__main__":
    raise SystemExit(main())
