"""``next-image local-cdn`` runs the stack's BucketDeployments, as a deploy does.

The stack (``infra.app.build``, as ``cdk synth`` runs it) is synthesized with a ``.next`` build
and a ``public/`` folder: its ``DeployPublic`` and ``DeployMedia`` copy them into the assets
bucket, ``public/`` under the assets prefix and ``.next/static/media`` under
``_next/static/media/``. local-cdn reads their sources from the cloud assembly (the
``asset.<hash>`` folders the synth staged, named in ``<stack>.assets.json``), so a static import
is in the bucket without ``--seed-public``. A deployment it cannot run as deployed is logged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from handler.commands.local_cdn.command import upload_assets
from handler.commands.local_cdn.s3 import create_buckets
from handler.commands.local_cdn.template import Distribution, read_template
from handler.contract.config import load_images_config
from handler.sources.s3_assets import S3AssetsSource
from kit import imagegen
from kit.synth import cdk_synth

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

STACK = "DeployTest"
MEDIA = "hero.4f1c2a.jpg"
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthesized stack's template, its cloud assembly beside it."""
    root = tmp_path_factory.mktemp("deploy-stack")
    public = root / "public"
    public.mkdir()
    (public / "a.png").write_bytes(imagegen.png(64, 48))
    build_dir = root / ".next"
    (build_dir / "static" / "media").mkdir(parents=True)
    (build_dir / "static" / "media" / MEDIA).write_bytes(imagegen.jpeg(64, 48))
    (build_dir / "required-server-files.json").write_text(
        json.dumps({"version": 1, "config": {"images": {}, "basePath": ""}})
    )
    return cdk_synth(
        root,
        STACK,
        appOrigin="app.example.com",
        nextDir=str(build_dir),
        publicDir=str(public),
        assetsPrefix="site/",
    )


def assets_bucket(distribution: Distribution) -> tuple[str, str]:
    function = distribution.lambda_function
    assert function is not None
    environment = function.environment
    return environment["NEXT_IMAGE_ASSETS_BUCKET"], environment.get("NEXT_IMAGE_ASSETS_PREFIX", "")


def test_the_deployments_are_read_from_the_cloud_assembly(synthesized: Path) -> None:
    distribution = read_template(synthesized)
    bucket, prefix = assets_bucket(distribution)
    assert prefix == "site/"
    found = {d.prefix: d for d in distribution.deployments}
    assert set(found) == {"site/", "site/_next/static/media/"}
    for deployment in found.values():
        assert deployment.bucket == bucket
        (folder,) = deployment.folders
        assert folder.parent == synthesized.parent and folder.name.startswith("asset.")
    files = {
        key: sorted(p.name for p in d.folders[0].rglob("*") if p.is_file())
        for key, d in found.items()
    }
    assert files == {"site/": ["a.png"], "site/_next/static/media/": [MEDIA]}
    assert not [note for note in distribution.notes if "BucketDeployment" in note]


def test_a_static_import_is_in_the_assets_bucket_as_deployed(synthesized: Path) -> None:
    import boto3
    from moto import mock_aws

    distribution = read_template(synthesized)
    bucket, prefix = assets_bucket(distribution)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        create_buckets(client, sorted({b.name for b in distribution.buckets}))
        upload_assets(client, distribution, {}, None)
        listed = client.list_objects_v2(Bucket=bucket)["Contents"]
        assert sorted(o["Key"] for o in listed) == [
            "site/_next/static/media/" + MEDIA,
            "site/a.png",
        ]
        # Read as the function reads a relative URL.
        source = S3AssetsSource(bucket, prefix, load_images_config(None), client=client)
        found = anyio.run(source.fetch, f"/_next/static/media/{MEDIA}")
    assert imagegen.decode(found.body)[:2] == ("jpeg", 64)


def deployment_template(tmp_path: Path, **properties: Any) -> Path:
    """A distribution and one BucketDeployment whose source is a folder asset in ``tmp_path``."""
    (tmp_path / "asset.abc" / "img").mkdir(parents=True)
    (tmp_path / "asset.abc" / "img" / "a.png").write_bytes(b"png")
    manifest = {"files": {"abc": {"source": {"path": "asset.abc", "packaging": "zip"}}}}
    (tmp_path / "T.assets.json").write_text(json.dumps(manifest))
    distribution = {
        "Origins": [
            {
                "Id": "app",
                "DomainName": "app.example.com",
                "CustomOriginConfig": {"OriginProtocolPolicy": "https-only"},
            }
        ],
        "DefaultCacheBehavior": {"TargetOriginId": "app", "CachePolicyId": CACHING_DISABLED},
    }
    deployment = {
        "ServiceToken": "arn:aws:lambda:us-east-1:1:function:deployer",
        "SourceBucketNames": [{"Fn::Sub": "cdk-assets-${AWS::AccountId}-${AWS::Region}"}],
        "SourceObjectKeys": ["abc.zip"],
        "DestinationBucketName": {"Ref": "Assets"},
        "Prune": False,
        **properties,
    }
    resources = {
        "Dist": {
            "Type": "AWS::CloudFront::Distribution",
            "Properties": {"DistributionConfig": distribution},
        },
        "Assets": {"Type": "AWS::S3::Bucket"},
        "Deploy": {"Type": "Custom::CDKBucketDeployment", "Properties": deployment},
    }
    path = tmp_path / "T.template.json"
    path.write_text(json.dumps({"Resources": resources}))
    return path


def test_a_plain_deployment_is_run_under_its_prefix(tmp_path: Path) -> None:
    distribution = read_template(deployment_template(tmp_path, DestinationBucketKeyPrefix="p/"))
    (deployment,) = distribution.deployments
    assert (deployment.bucket, deployment.prefix) == ("t-assets", "p/")
    assert deployment.folders == (tmp_path / "asset.abc",)


@pytest.mark.parametrize(
    ("properties", "named"),
    [
        ({"Exclude": ["*.png"]}, "Exclude not emulated"),
        ({"SystemMetadata": {"cache-control": "max-age=60"}}, "SystemMetadata not emulated"),
        ({"Extract": False}, "Extract false"),
        ({"SourceObjectKeys": ["elsewhere.zip"]}, "elsewhere.zip is not a folder asset"),
    ],
    ids=["filters", "metadata", "zip-as-is", "not-an-asset"],
)
def test_a_deployment_that_cannot_be_run_as_deployed_is_left_out_with_a_note(
    tmp_path: Path, properties: dict[str, Any], named: str
) -> None:
    distribution = read_template(deployment_template(tmp_path, **properties))
    assert distribution.deployments == ()
    (note,) = [n for n in distribution.notes if "BucketDeployment Deploy" in n]
    assert named in note and "--seed-public" in note
