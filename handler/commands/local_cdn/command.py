"""``next-image local-cdn``: the synthesized stack, set up on this machine and served
(docs/local-cdn.md).

It configures the process as Lambda would the function (the template's environment,
``--app-origin``, ``--env-file``), creates the buckets (in moto or at ``AWS_ENDPOINT_URL``), runs
the BucketDeployments and ``--seed-public``, starts the Node.js child for the CloudFront Functions
and serves until SIGINT or SIGTERM, cleaning up after. SIGHUP redeploys (``redeploy.py``);
``handler/commands/cloudfront_api.py`` takes ``next-image purge``'s invalidations."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from handler.commands.cloudfront_api import cloudfront_api
from handler.commands.invoke import load_env_file
from handler.commands.local_cdn.edge import Edge
from handler.commands.local_cdn.functions import NodeFunctions
from handler.commands.local_cdn.intrinsics import Unsupported
from handler.commands.local_cdn.lambda_url import LambdaHandler, LambdaUrlFetcher
from handler.commands.local_cdn.origins import AppFetcher, Fetcher
from handler.commands.local_cdn.redeploy import Redeployer, invalidate
from handler.commands.local_cdn.s3 import S3Fetcher, create_buckets, deploy, seed
from handler.commands.local_cdn.server import EdgeApp, bind, serve
from handler.commands.local_cdn.template import (
    CustomOrigin,
    Deployment,
    Distribution,
    LambdaFunction,
    LambdaUrlOrigin,
    S3Origin,
    read_template,
)
from handler.commands.moto_extra import MissingExtra, mock_aws
from handler.stores.s3_client import reset_s3_client, s3_client

log = logging.getLogger("local_cdn")


class UsageError(Exception):
    """A command line that cannot work, whatever the template."""


def run(args: argparse.Namespace) -> int:
    """Serve ``args.template`` until stopped; 2 when the template or the flags are refused."""
    if not log.handlers:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("local-cdn: %(message)s"))
        log.addHandler(stream)
        log.setLevel(logging.INFO)
        log.propagate = False
    try:
        _serve(args)
    except Unsupported as exc:
        log.error("cannot emulate this template faithfully: %s", exc)
        return 2
    except UsageError as exc:
        log.error("%s", exc)
        return 2
    return 0


def function_environment(
    function: LambdaFunction,
    app: CustomOrigin | None,
    app_origin: str | None,
    overrides: Mapping[str, str],
    region: str,
) -> dict[str, str]:
    """What the function's process sees: the template's variables with the app's domain
    pointing at ``app_origin``, the runtime's own variables, then ``overrides``."""
    environment = dict(function.environment)
    if app is not None and app_origin:
        for key, value in environment.items():
            for prefix in (f"https://{app.domain}", f"http://{app.domain}"):
                if value == prefix or value.startswith(prefix + "/"):
                    environment[key] = app_origin.rstrip("/") + value.removeprefix(prefix)
                    log.info("%s=%s (the template says %s)", key, environment[key], value)
    environment.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": function.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mib),
            "AWS_LAMBDA_FUNCTION_VERSION": "1",
            "AWS_REGION": region,
        }
    )
    if not os.environ.get("AWS_DEFAULT_REGION"):
        environment["AWS_DEFAULT_REGION"] = region
    environment.update(overrides)
    return environment


def upload_assets(
    client: Any,
    distribution: Distribution,
    environment: Mapping[str, str],
    seed_public: Path | None,
    deployments: Sequence[Deployment] | None = None,
) -> int:
    """What a deploy puts in the buckets: the template's BucketDeployments (``deployments``:
    those of them a redeploy changed), run from the cloud assembly (the app's ``public/`` and
    ``.next/static/media`` as synthesized), then the ``--seed-public`` folder over the
    function's assets bucket. How many files were uploaded."""
    total = 0
    for deployment in distribution.deployments if deployments is None else deployments:
        count = deploy(client, deployment)
        total += count
        log.info(
            "%s: uploaded %d files to s3://%s/%s",
            deployment.logical_id,
            count,
            deployment.bucket,
            deployment.prefix,
        )
    if seed_public is None:
        return total
    assets = environment.get("NEXT_IMAGE_ASSETS_BUCKET")
    if not assets:
        log.warning(
            "--seed-public ignored: the function has no assets bucket, so relative images "
            "come from the app's origin, as deployed (synthesize with -c publicDir=... for one)"
        )
        return total
    prefix = environment.get("NEXT_IMAGE_ASSETS_PREFIX", "")
    count = seed(client, assets, prefix, seed_public)
    log.info("uploaded %d files from %s to s3://%s/%s", count, seed_public, assets, prefix)
    return total + count


def _lambda_handler() -> LambdaHandler:
    """A new instance's init phase, from the environment ``_serve`` set."""
    from handler.entry.lambda_handler import build_handler, lambda_settings

    return build_handler(lambda_settings())


def _fetchers(distribution: Distribution, app_origin: str, client: Any) -> dict[str, Fetcher]:
    fetchers: dict[str, Fetcher] = {}
    for behaviour in distribution.behaviours:
        origin = behaviour.origin
        if origin.id in fetchers:
            continue
        if isinstance(origin, LambdaUrlOrigin):
            fetchers[origin.id] = LambdaUrlFetcher(origin, _lambda_handler, os.cpu_count() or 1)
        elif isinstance(origin, S3Origin):
            fetchers[origin.id] = S3Fetcher(origin, client)
        else:
            fetchers[origin.id] = AppFetcher(origin, app_origin)
    return fetchers


def _serve(args: argparse.Namespace) -> None:
    template: Path = args.template
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if args.moto and endpoint:
        raise UsageError("--moto and AWS_ENDPOINT_URL(_S3) are exclusive")
    if not args.moto and not endpoint:
        raise UsageError(
            "give --moto, or an S3-compatible endpoint in AWS_ENDPOINT_URL: local-cdn never "
            "creates buckets in a real AWS account"
        )
    try:
        moto = mock_aws() if args.moto else None
    except MissingExtra as exc:
        raise UsageError(str(exc)) from exc
    distribution = read_template(template, region)
    if distribution.app_origin is not None and not args.app_origin:
        raise UsageError(
            f"the default behaviour goes to {distribution.app_origin.domain}: give --app-origin"
        )
    for note in distribution.notes:
        log.warning("note: %s", note)
    overrides = load_env_file(args.env_file) if args.env_file else {}

    def environment_of(distribution: Distribution) -> dict[str, str]:
        function = distribution.lambda_function
        if function is None:
            return dict(overrides)
        app = distribution.app_origin
        return function_environment(function, app, args.app_origin, overrides, region)

    environment = environment_of(distribution)
    os.environ.update(environment)
    buckets = {b.name for b in distribution.buckets}
    buckets |= {d.bucket for d in distribution.deployments}
    buckets |= {
        environment[k]
        for k in ("NEXT_IMAGE_BUCKET", "NEXT_IMAGE_ASSETS_BUCKET")
        if k in environment
    }
    with ExitStack() as stack:
        if moto is not None:
            stack.enter_context(moto)
        reset_s3_client()
        stack.callback(reset_s3_client)
        client = s3_client()
        create_buckets(client, sorted(buckets))
        upload_assets(client, distribution, environment, args.seed_public)
        functions = None
        if distribution.functions:
            functions = stack.enter_context(NodeFunctions(distribution.functions))
        try:
            sock = stack.enter_context(bind(args.host, args.port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
        host, port = sock.getsockname()[:2]
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        edge = Edge(
            distribution,
            _fetchers(distribution, args.app_origin, client),
            functions,
            domain=authority,
        )

        def upload(new: Distribution, changed: Sequence[Deployment]) -> int:
            return upload_assets(client, new, environment_of(new), args.seed_public, changed)

        redeployer = Redeployer(template, region, edge, environment, environment_of, upload)

        def purge(distribution_id: str, paths: tuple[str, ...]) -> None:
            count = invalidate(edge, paths)
            log.info("CreateInvalidation %s: %d cached answers removed", ", ".join(paths), count)

        try:
            api = stack.enter_context(
                cloudfront_api(
                    [distribution.logical_id], purge, args.host, args.cloudfront_api_port or 0
                )
            )
        except OSError as exc:
            port = args.cloudfront_api_port
            raise UsageError(f"cannot listen on {args.host}:{port}: {exc}") from exc

        def announce() -> None:
            behaviours = ", ".join(b.path_pattern for b in distribution.behaviours)
            print(
                f"local-cdn: CloudFront API for distribution {distribution.logical_id} at "
                f"{api.url} (AWS_ENDPOINT_URL_CLOUDFRONT; CreateInvalidation); SIGHUP (pid "
                f"{os.getpid()}) redeploys {template}",
                flush=True,
            )
            print(
                f"local-cdn: serving {distribution.logical_id} from {template} on "
                f"http://{authority} (behaviours: {behaviours}); Ctrl-C to stop",
                flush=True,
            )

        serve(EdgeApp(edge), sock, announce, on_hangup=redeployer.redeploy)
    log.info("stopped")
