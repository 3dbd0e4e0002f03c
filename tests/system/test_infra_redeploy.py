"""The construct's redeploy story: the deploy generation the function is given, and the
CloudFront invalidation a deploy makes when (and only when) the generation changed.

Synthesized with stand-in layer zips (the template, not the layers, is under test), cdk-nag
included; cfn-lint checks the template.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk import Acknowledgment, App, Stack, Validations
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from cdk_nag import AwsSolutionsChecks

from kit.local_cdn_process import stand_in_layers
from kit.synth import cdk_synth, cfn_lint
from next_image_cdk import NextImageOptimizer
from next_image_cdk.bundled_config import bundle_images_config
from next_image_cdk.redeploy import GENERATION_ENV, deploy_generation

ORIGIN = "app.example.com"


@dataclass
class Synthesized:
    raw: dict[str, Any]
    outdir: Path

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.raw["Resources"].items() if v["Type"] == kind}

    @property
    def generation(self) -> str:
        [function] = [
            f
            for f in self.of_type("AWS::Lambda::Function").values()
            if f["Properties"].get("Handler") == "handler.entry.lambda_handler.handler"
        ]
        return str(function["Properties"]["Environment"]["Variables"][GENERATION_ENV])

    @property
    def invalidation(self) -> tuple[str, dict[str, Any]]:
        [(logical_id, resource)] = self.of_type("Custom::AWS").items()
        return logical_id, resource


def synthesize(root: Path, name: str, public: Path, layers: Path) -> Synthesized:
    """The repository's CDK app, as ``cdk synth -c publicDir=...`` runs it (cdk-nag included)."""
    outdir = root / name
    template = cdk_synth(
        root,
        "Redeploy",
        outdir=outdir,
        appOrigin=ORIGIN,
        publicDir=str(public),
        layersDir=str(layers),
    )
    return Synthesized(json.loads(template.read_text()), outdir)


@pytest.fixture(scope="module")
def deploys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Synthesized]:
    """The app synthesized three times: as first deployed, again with nothing changed but the
    files' times, and after one public image's bytes changed."""
    root = tmp_path_factory.mktemp("redeploy")
    layers = stand_in_layers(root)
    public = root / "public"
    (public / "images").mkdir(parents=True)
    (public / "images" / "a.jpg").write_bytes(b"\xff\xd8 first bytes")
    (public / "robots.txt").write_text("User-agent: *\n")
    first = synthesize(root, "first", public, layers)
    os.utime(public / "images" / "a.jpg", (1, 1))  # touched, the same bytes
    again = synthesize(root, "again", public, layers)
    (public / "images" / "a.jpg").write_bytes(b"\xff\xd8 other bytes")
    changed = synthesize(root, "changed", public, layers)
    return {"first": first, "again": again, "changed": changed}


def test_the_function_is_given_the_generation(deploys: dict[str, Synthesized]) -> None:
    first = deploys["first"]
    assert len(first.generation) == 16 and int(first.generation, 16) >= 0
    assert deploys["again"].generation == first.generation  # same names and bytes
    assert deploys["changed"].generation != first.generation  # one image's bytes changed


def test_the_invalidation_runs_on_create_only_after_the_uploads_and_the_new_version(
    deploys: dict[str, Synthesized],
) -> None:
    synth = deploys["first"]
    logical_id, resource = synth.invalidation
    props = resource["Properties"]
    assert set(props) == {"ServiceToken", "Create", "InstallLatestAwsSdk"}  # no Update, Delete
    parts = props["Create"]["Fn::Join"][1]
    [distribution] = synth.of_type("AWS::CloudFront::Distribution")
    [version] = synth.of_type("AWS::Lambda::Version")
    template = "".join(p if isinstance(p, str) else json.dumps(p) for p in parts)
    call = json.loads(
        template.replace(json.dumps({"Ref": distribution}), "DIST").replace(
            json.dumps({"Fn::GetAtt": [version, "Version"]}), "7"
        )
    )
    assert (call["service"], call["action"]) == ("CloudFront", "createInvalidation")
    assert call["parameters"] == {
        "DistributionId": "DIST",
        "InvalidationBatch": {
            "CallerReference": f"{synth.generation}-v7",  # unique even for a reverted deploy
            "Paths": {"Quantity": 1, "Items": ["/_next/image*"]},
        },
    }
    [alias] = synth.of_type("AWS::Lambda::Alias")
    uploads = set(synth.of_type("Custom::CDKBucketDeployment"))
    assert {alias, *uploads} <= set(resource["DependsOn"])
    assert uploads  # public/ is uploaded, and invalidated only after

    [policy] = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for k, p in synth.of_type("AWS::IAM::Policy").items()
        if k.startswith(logical_id.removesuffix(logical_id[-8:]))
    ]
    [statement] = policy
    assert statement["Action"] == "cloudfront:CreateInvalidation"
    assert "distribution/" in json.dumps(statement["Resource"])
    assert distribution in json.dumps(statement["Resource"])  # this distribution only


def test_a_new_generation_is_a_new_resource_and_an_unchanged_one_the_same(
    deploys: dict[str, Synthesized],
) -> None:
    """CloudFormation creates (so invalidates) exactly when the generation changed."""
    first, again, changed = deploys["first"], deploys["again"], deploys["changed"]
    assert again.invalidation[0] == first.invalidation[0]
    assert again.invalidation[1] == first.invalidation[1]
    assert changed.invalidation[0] != first.invalidation[0]
    assert changed.generation in changed.invalidation[0]


def test_cdk_nag_and_cfn_lint_pass(deploys: dict[str, Synthesized]) -> None:
    synth = deploys["first"]
    report = json.loads((synth.outdir / "validation-report.json").read_text())
    assert report["pluginReports"] == []
    findings = cfn_lint(synth.outdir / "Redeploy.template.json")
    assert {f["Rule"]["Id"] for f in findings} <= {"W3005"}, findings


def test_the_generation_hashes_names_bytes_and_the_bundled_config(tmp_path: Path) -> None:
    public, media = tmp_path / "public", tmp_path / "media"
    (public / "img").mkdir(parents=True)
    media.mkdir()
    (public / "img" / "a.png").write_bytes(b"png bytes")
    (media / "photo.0a1b.jpg").write_bytes(b"jpg bytes")
    config = bundle_images_config({"formats": ["image/webp"]})
    base = deploy_generation(config, public, media)
    assert deploy_generation(config, public, media) == base

    copy = tmp_path / "copy"
    shutil.copytree(public, copy)  # the same names and bytes elsewhere, other times
    assert deploy_generation(config, copy, media) == base

    (copy / "img" / "a.png").rename(copy / "img" / "b.png")
    assert deploy_generation(config, copy, media) != base  # a name
    (media / "photo.0a1b.jpg").write_bytes(b"jpg bytes, edited")
    assert deploy_generation(config, public, media) != base  # a static import's bytes
    (media / "photo.0a1b.jpg").write_bytes(b"jpg bytes")
    assert deploy_generation(config, public, media) == base
    avif = bundle_images_config({"formats": ["image/avif", "image/webp"]})
    assert deploy_generation(avif, public, media) != base  # the images config
    assert deploy_generation(config, None, None) != base  # no assets: the config alone


def test_a_users_distribution_with_a_base_path_is_invalidated_under_it(tmp_path: Path) -> None:
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "UserSite")
    distribution = cloudfront.Distribution(
        stack,
        "Site",
        default_behavior=cloudfront.BehaviorOptions(origin=origins.HttpOrigin(ORIGIN)),
    )
    for rule in ("CFR1", "CFR2", "CFR3", "CFR4"):
        Validations.of(distribution).acknowledge(
            Acknowledgment(id=f"AwsSolutions-{rule}", reason="test stand-in")
        )
    layers = stand_in_layers(tmp_path)
    NextImageOptimizer(
        stack,
        "Images",
        distribution=distribution,
        app_origin_domain=ORIGIN,
        images_config={"path": "/shop/_next/image"},
        layers_dir=str(layers),
    )
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()
    raw = json.loads((tmp_path / "UserSite.template.json").read_text())
    [resource] = [r for r in raw["Resources"].values() if r["Type"] == "Custom::AWS"]
    assert '\\"Items\\":[\\"/shop/_next/image*\\"]' in json.dumps(resource["Properties"]["Create"])
