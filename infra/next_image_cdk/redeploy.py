"""A redeploy shows its new images on the next page load: the deploy generation and the
CloudFront invalidation that goes with it.

The generation is computed at synth: a short hash of the names and bytes of the files in the
app's ``public/`` and ``.next/static/media`` folders and of the images config bundled with the
function. It reaches the function as ``NEXT_IMAGE_DEPLOY_GENERATION``; the function records it in
every pointer it writes and revalidates (one conditional request) a pointer written under
another generation before trusting it. It changes when, and only when, something a deploy
uploads for the images changes.

When it changes, a custom resource (``AwsCustomResource``, CDK's provider calling the AWS SDK)
creates one CloudFront invalidation, ``{basePath}/_next/image*``, after the assets are uploaded
and the function's new version is live. Its construct id carries the generation, so
CloudFormation creates a new one (``onCreate``) exactly when the generation changes, and a deploy
that changes only the function's code updates the old one in place (no ``onUpdate``: nothing is
called). The ``CallerReference`` is the generation and the function version it was deployed
with: CloudFront refuses to run a reference twice, and a deploy that goes back to an earlier
generation publishes a new version, so it is invalidated again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import custom_resources as cr
from constructs import Construct, IConstruct

from next_image_cdk.bundled_config import BundledConfig

GENERATION_ENV = "NEXT_IMAGE_DEPLOY_GENERATION"
GENERATION_CHARS = 16  # hex: 64 bits, a short name that no two deploys share by chance
INVALIDATION_ID = "InvalidateImages"
# The provider CDK adds once per stack for every AwsCustomResource (its construct id).
PROVIDER_ID = "AWS679f53fac002430cb0da5b7982bd2287"
PROVIDER_FINDINGS = (
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
    "AWSLambdaBasicExecutionRole]",
    "AwsSolutions-L1",
)
_CHUNK = 1 << 20


def _files(folder: Path) -> Iterator[tuple[str, Path]]:
    """Every file under ``folder`` by its relative POSIX path, in a stable order."""
    found = [(p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file()]
    yield from sorted(found)


def deploy_generation(
    config: BundledConfig, public_dir: Path | None = None, media_dir: Path | None = None
) -> str:
    """The hash of what a deploy gives the function to make images from (names and bytes)."""
    digest = hashlib.sha256(b"next-image deploy generation 1\0")
    bundled = json.dumps(config.content, sort_keys=True, separators=(",", ":"))
    digest.update(f"config\0{config.filename}\0{len(bundled)}\0{bundled}\0".encode())
    for label, folder in (("public", public_dir), ("media", media_dir)):
        if folder is None or not folder.is_dir():
            continue
        for name, path in _files(folder):
            digest.update(f"{label}\0{name}\0{path.stat().st_size}\0".encode())
            with path.open("rb") as data:
                while chunk := data.read(_CHUNK):
                    digest.update(chunk)
    return digest.hexdigest()[:GENERATION_CHARS]


def invalidation_paths(base_path: str) -> list[str]:
    """Every cached answer of the image route (one wildcard path: billed as one path)."""
    return [f"{base_path}/_next/image*"]


def invalidate_on_deploy(
    scope: Construct,
    *,
    generation: str,
    distribution: cloudfront.IDistribution,
    base_path: str,
    version: lambda_.IVersion,
    after: Sequence[IConstruct] = (),
) -> cr.AwsCustomResource:
    """The invalidation a deploy that changed the generation makes, once ``after`` (the asset
    uploads, the alias on the new version) is done."""
    stack = Stack.of(scope)
    arn = stack.format_arn(
        service="cloudfront",
        region="",
        resource="distribution",
        resource_name=distribution.distribution_id,
    )
    paths = invalidation_paths(base_path)
    invalidation = cr.AwsCustomResource(
        scope,
        f"{INVALIDATION_ID}{generation}",
        on_create=cr.AwsSdkCall(
            service="CloudFront",
            action="createInvalidation",
            parameters={
                "DistributionId": distribution.distribution_id,
                "InvalidationBatch": {
                    "CallerReference": f"{generation}-v{version.version}",
                    "Paths": {"Quantity": len(paths), "Items": paths},
                },
            },
            physical_resource_id=cr.PhysicalResourceId.from_response("Invalidation.Id"),
        ),
        policy=cr.AwsCustomResourcePolicy.from_statements(
            [iam.PolicyStatement(actions=["cloudfront:CreateInvalidation"], resources=[arn])]
        ),
        install_latest_aws_sdk=False,
    )
    for dependency in after:
        invalidation.node.add_dependency(dependency)
    provider = stack.node.try_find_child(PROVIDER_ID)
    if provider is not None:
        reason = (
            "CDK's AwsCustomResource provider: a deploy-time function that calls "
            "cloudfront:CreateInvalidation on this distribution only; its runtime and execution "
            "role are managed by aws-cdk-lib."
        )
        for rule in PROVIDER_FINDINGS:
            Validations.of(provider).acknowledge(Acknowledgment(id=rule, reason=reason))
    return invalidation
