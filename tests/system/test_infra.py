"""The CDK app: synthesized once per session, then checked with Template assertions, cfn-lint
and cdk-nag (AwsSolutions). Layers are the real arm64/python3.13 ones (built once, reused)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk import Acknowledgment, App, Stack, Validations
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

from handler.entry.self_invoke import SelfInvoker
from handler.http import metrics as handler_metrics
from handler.http import observability
from infra.app import build, props_from_context
from kit.synth import cdk_synth, cfn_lint
from layers.build_layer import ROOT, ensure_layers
from next_image_cdk import NextImageOptimizer, NextImageOptimizerProps, layer_zips
from next_image_cdk.construct import validate
from next_image_cdk.layer_zips import CACHE_ENV, LayerBuildError, read_manifest

LAYERS = ROOT / "layers" / "build" / "test-dist"
IMAGES = {"formats": ["image/avif", "image/webp"], "qualities": [50, 75]}


@dataclass
class Synth:
    template: Template
    raw: dict[str, Any]
    outdir: Path

    def resources(self, kind: str) -> dict[str, Any]:
        return {k: v for k, v in self.raw["Resources"].items() if v["Type"] == kind}

    def one(self, kind: str) -> dict[str, Any]:
        found = list(self.resources(kind).values())
        assert len(found) == 1, f"{len(found)} {kind}"
        props: dict[str, Any] = found[0]["Properties"]
        return props


def loaded(template: Path) -> Synth:
    raw = json.loads(template.read_text())
    return Synth(Template.from_json(raw), raw, template.parent)


def synthesize(app: App, stack_name: str, outdir: Path) -> Synth:
    app.synth()  # raises ValidationFailed on any unacknowledged cdk-nag finding
    return loaded(outdir / f"{stack_name}.template.json")


@pytest.fixture(scope="session")
def layers() -> Path:
    ensure_layers("arm64", "3.13", LAYERS)
    return LAYERS


@pytest.fixture(scope="session")
def full(layers: Path, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The CDK app as ``cdk synth`` runs it, with every option a deployer can set."""
    outdir = tmp_path_factory.mktemp("cdk-full")
    images = outdir.parent / "images.json"
    images.write_text(json.dumps(IMAGES))
    context = {
        "appOrigin": "app.example.com",
        "imagesConfig": str(images),
        "publicDir": str(ROOT / "public"),
        "variantsPrefix": "site/",
        "assetsPrefix": "assets/",
        "fastFirstView": "0.5",
        "animated": "webp",
        "originShieldRegion": "eu-west-1",
        "layersDir": str(layers),
    }
    # raises ValidationFailed on any unacknowledged cdk-nag finding
    return loaded(cdk_synth(outdir, "NextImageTest", outdir=outdir, **context))


@pytest.fixture(scope="session")
def attached(layers: Path, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """A user's own stack and distribution with the optimizer added to it."""
    outdir = tmp_path_factory.mktemp("cdk-attached")
    app = App(outdir=str(outdir))
    stack = Stack(app, "UserSite")
    distribution = cloudfront.Distribution(
        stack,
        "Site",
        default_behavior=cloudfront.BehaviorOptions(origin=origins.HttpOrigin("app.example.com")),
    )
    for rule in ("CFR1", "CFR2", "CFR3", "CFR4"):
        Validations.of(distribution).acknowledge(
            Acknowledgment(id=f"AwsSolutions-{rule}", reason="test stand-in")
        )
    # As a user's app writes it: keyword arguments, paths as strings.
    NextImageOptimizer(
        stack,
        "Images",
        distribution=distribution,
        app_origin_domain="app.example.com",
        layers_dir=str(layers),
    )
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return synthesize(app, "UserSite", outdir)


@pytest.fixture(scope="session")
def both(full: Synth, attached: Synth) -> list[Synth]:
    return [full, attached]


def behaviours(synth: Synth) -> dict[str, dict[str, Any]]:
    config = synth.one("AWS::CloudFront::Distribution")["DistributionConfig"]
    return {b["PathPattern"]: b for b in config["CacheBehaviors"]}


def origin_of(synth: Synth, behaviour: dict[str, Any]) -> dict[str, Any]:
    config = synth.one("AWS::CloudFront::Distribution")["DistributionConfig"]
    origin: dict[str, Any] = next(
        o for o in config["Origins"] if o["Id"] == behaviour["TargetOriginId"]
    )
    return origin


def test_behaviours_route_only_images_to_the_function(full: Synth) -> None:
    found = behaviours(full)
    assert set(found) == {"/_next/image", "/_next/image-variants/*"}
    for behaviour in found.values():
        assert behaviour["AllowedMethods"] == ["GET", "HEAD"]
        assert behaviour["ViewerProtocolPolicy"] == "redirect-to-https"
        assert behaviour["Compress"] is False
    image = found["/_next/image"]
    assert "Fn::Select" in origin_of(full, image)["DomainName"]  # the Function URL's host
    association = image["FunctionAssociations"][0]
    assert association["EventType"] == "viewer-request"
    default = full.one("AWS::CloudFront::Distribution")["DistributionConfig"]
    assert default["DefaultCacheBehavior"]["TargetOriginId"] != image["TargetOriginId"]
    app_origin = origin_of(full, default["DefaultCacheBehavior"])
    assert app_origin["DomainName"] == "app.example.com"


def test_image_cache_key_is_url_w_q_dpl_and_normalised_accept(full: Synth) -> None:
    full.template.has_resource_properties(
        "AWS::CloudFront::CachePolicy",
        {
            "CachePolicyConfig": Match.object_like(
                {
                    "ParametersInCacheKeyAndForwardedToOrigin": {
                        "QueryStringsConfig": {
                            "QueryStringBehavior": "whitelist",
                            "QueryStrings": ["url", "w", "q", "dpl"],
                        },
                        "HeadersConfig": {"HeaderBehavior": "whitelist", "Headers": ["Accept"]},
                        "CookiesConfig": {"CookieBehavior": "none"},
                        "EnableAcceptEncodingGzip": False,
                        "EnableAcceptEncodingBrotli": False,
                    }
                }
            )
        },
    )
    code = full.one("AWS::CloudFront::Function")
    assert code["FunctionConfig"]["Runtime"] == "cloudfront-js-2.0"
    assert 'var FORMATS = ["image/avif", "image/webp"];' in code["FunctionCode"]


def test_animated_webp_is_opt_in(full: Synth, attached: Synth) -> None:
    """``animated="webp"`` (context ``animated``) sets the function's NEXT_IMAGE_ANIMATED, and the
    edge then forwards whether a browser that gets AVIF takes WebP too; by default neither: Next's
    pass-through, and the templates of deployments that leave it off are unchanged."""

    def function_env(synth: Synth) -> dict[str, str]:
        env: dict[str, str] = next(
            f["Properties"]["Environment"]["Variables"]
            for f in synth.resources("AWS::Lambda::Function").values()
            if f["Properties"].get("Handler") == "handler.entry.lambda_handler.handler"
        )
        return env

    def accept_code(synth: Synth) -> str:
        code: str = next(
            f["Properties"]["FunctionCode"]
            for f in synth.resources("AWS::CloudFront::Function").values()
            if "var FORMATS" in f["Properties"]["FunctionCode"]
        )
        return code

    assert function_env(full)["NEXT_IMAGE_ANIMATED"] == "webp"
    assert "var ALSO_WEBP = true;" in accept_code(full)  # AVIF and WebP configured
    assert "NEXT_IMAGE_ANIMATED" not in function_env(attached)
    assert "var ALSO_WEBP = false;" in accept_code(attached)
    with pytest.raises(ValueError, match="animated"):
        validate(NextImageOptimizerProps(app_origin_domain="a.ex", animated="gif"))  # type: ignore[arg-type]


def test_variants_are_served_from_s3_by_path_under_the_prefix(full: Synth) -> None:
    variants = behaviours(full)["/_next/image-variants/*"]
    origin = origin_of(full, variants)
    assert origin["OriginPath"] == "/site"
    assert "OriginAccessControlId" in origin
    policies = full.resources("AWS::CloudFront::CachePolicy")
    policy = policies[variants["CachePolicyId"]["Ref"]]["Properties"]["CachePolicyConfig"]
    params = policy["ParametersInCacheKeyAndForwardedToOrigin"]
    assert params["QueryStringsConfig"] == {"QueryStringBehavior": "none"}
    assert params["HeadersConfig"] == {"HeaderBehavior": "none"}
    assert params["CookiesConfig"] == {"CookieBehavior": "none"}


def test_oac_signs_for_the_function_url_which_requires_iam(both: list[Synth]) -> None:
    for synth in both:
        synth.template.has_resource_properties(
            "AWS::CloudFront::OriginAccessControl",
            {
                "OriginAccessControlConfig": Match.object_like(
                    {
                        "OriginAccessControlOriginType": "lambda",
                        "SigningBehavior": "always",
                        "SigningProtocol": "sigv4",
                    }
                )
            },
        )
        synth.template.has_resource_properties(
            "AWS::CloudFront::OriginAccessControl",
            {
                "OriginAccessControlConfig": Match.object_like(
                    {"OriginAccessControlOriginType": "s3"}
                )
            },
        )
        url = synth.one("AWS::Lambda::Url")
        assert url["AuthType"] == "AWS_IAM"
        assert url["Qualifier"] == "live"


def test_invoke_permissions_are_both_present_and_scoped_to_the_distribution(
    both: list[Synth],
) -> None:
    for synth in both:
        distribution_id = next(iter(synth.resources("AWS::CloudFront::Distribution")))
        url_id = next(iter(synth.resources("AWS::Lambda::Url")))
        permissions = list(synth.resources("AWS::Lambda::Permission").values())
        actions = sorted(p["Properties"]["Action"] for p in permissions)
        assert actions == ["lambda:InvokeFunction", "lambda:InvokeFunctionUrl"]
        for permission in permissions:
            props = permission["Properties"]
            assert props["Principal"] == "cloudfront.amazonaws.com"
            assert {"Ref": distribution_id} in props["SourceArn"]["Fn::Join"][1]
            assert props["FunctionName"] == {"Fn::GetAtt": [url_id, "FunctionArn"]}


def test_variants_bucket_is_private_encrypted_ssl_only_and_expires(full: Synth) -> None:
    full.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like(
                            {"Prefix": "site/_next/image-variants/", "ExpirationInDays": 30}
                        ),
                        Match.object_like(
                            {"Prefix": "site/_next/image-pointers/", "ExpirationInDays": 30}
                        ),
                        Match.object_like(
                            {"Prefix": "site/_next/image-sources/", "ExpirationInDays": 30}
                        ),
                    ]
                )
            },
        },
    )
    variants_id = next(
        k
        for k, v in full.resources("AWS::S3::Bucket").items()
        if "LifecycleConfiguration" in v["Properties"]
    )
    policy = next(
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in full.resources("AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": variants_id}
    )
    deny = next(s for s in policy if s["Effect"] == "Deny")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    allow = next(s for s in policy if s["Effect"] == "Allow")
    assert allow["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert allow["Action"] == "s3:GetObject"
    assert allow["Resource"]["Fn::Join"][1][1] == "/site/_next/image-variants/*"
    assert "AWS:SourceArn" in allow["Condition"]["StringEquals"]


def test_function_runtime_layers_snapstart_alias_and_environment(full: Synth) -> None:
    functions = {
        k: v["Properties"]
        for k, v in full.resources("AWS::Lambda::Function").items()
        if v["Properties"].get("Handler") == "handler.entry.lambda_handler.handler"
    }
    assert len(functions) == 1
    function_id, function = next(iter(functions.items()))
    assert function["Runtime"] == "python3.13"
    assert function["Architectures"] == ["arm64"]
    assert function["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    layers = full.resources("AWS::Lambda::LayerVersion")
    attached = [layers[layer["Ref"]] for layer in function["Layers"]]
    assert sorted(a["Properties"]["Description"].split()[0] for a in attached) == ["deps", "pyvips"]
    for layer in attached:
        assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
        assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    env = function["Environment"]["Variables"]
    assert env["NEXT_IMAGE_PREFIX"] == "site/"
    assert env["NEXT_IMAGE_ORIGIN"] == "https://app.example.com"
    assert env["NEXT_IMAGE_ASSETS_PREFIX"] == "assets/"
    assert env["NEXT_IMAGE_CONFIG"] == "/var/task/next-image-config/images-config.json"
    assert {"Ref": function_id} == full.one("AWS::Lambda::Alias")["FunctionName"]
    assert full.one("AWS::Lambda::Alias")["Name"] == "live"
    assert "Fn::GetAtt" in full.one("AWS::Lambda::Alias")["FunctionVersion"]


def test_fast_first_view_lets_the_function_invoke_its_own_versions_once(
    full: Synth, attached: Synth
) -> None:
    function_id, function = next(
        (k, v["Properties"])
        for k, v in full.resources("AWS::Lambda::Function").items()
        if v["Properties"].get("Handler") == "handler.entry.lambda_handler.handler"
    )
    assert function["Environment"]["Variables"]["NEXT_IMAGE_FAST_FIRST_VIEW"] == "0.5"
    arn = {"Fn::GetAtt": [function_id, "Arn"]}
    invoke = [
        s
        for p in full.resources("AWS::IAM::Policy").values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Action"] == "lambda:InvokeFunction"
    ]
    assert invoke == [
        {
            "Action": "lambda:InvokeFunction",
            "Effect": "Allow",
            "Resource": [arn, {"Fn::Join": ["", [arn, ":*"]]}],
        }
    ]
    # Off unless asked for: Next's behaviour, no self-invoke grant.
    assert not attached.resources("AWS::Lambda::EventInvokeConfig")
    assert "lambda:InvokeFunction" not in json.dumps(attached.resources("AWS::IAM::Policy"))


def test_self_invocations_are_never_retried_on_the_version_the_function_invokes(
    full: Synth, attached: Synth
) -> None:
    """The handler invokes the version it runs as (AWS_LAMBDA_FUNCTION_VERSION), which is the
    one the ``live`` alias points at: the event-invoke config must be on that qualifier, or
    Lambda's default (two retries, six hours) applies to every deferred AVIF."""
    assert SelfInvoker("fn", "7").qualifier == {"Qualifier": "7"}  # a version, not the alias
    function_id = full.one("AWS::Lambda::Alias")["FunctionName"]["Ref"]
    live_version = full.one("AWS::Lambda::Alias")["FunctionVersion"]
    configs = {
        json.dumps(c["Properties"]["Qualifier"]): c["Properties"]
        for c in full.resources("AWS::Lambda::EventInvokeConfig").values()
    }
    assert set(configs) == {json.dumps(live_version), json.dumps("$LATEST")}
    for config in configs.values():
        assert config["FunctionName"] == {"Ref": function_id}
        assert config["MaximumRetryAttempts"] == 0
        assert config["MaximumEventAgeInSeconds"] == 300
    assert not attached.resources("AWS::Lambda::EventInvokeConfig")


def test_origin_shield_is_in_front_of_the_function_only_when_asked(
    full: Synth, attached: Synth
) -> None:
    found = behaviours(full)
    image = origin_of(full, found["/_next/image"])
    assert image["OriginShield"] == {"Enabled": True, "OriginShieldRegion": "eu-west-1"}
    assert "OriginShield" not in origin_of(full, found["/_next/image-variants/*"])
    config = full.one("AWS::CloudFront::Distribution")["DistributionConfig"]
    assert "OriginShield" not in origin_of(full, config["DefaultCacheBehavior"])  # the app's
    assert "OriginShield" not in json.dumps(attached.raw)  # off by default
    with pytest.raises(ValueError, match="origin_shield_region"):
        validate(NextImageOptimizerProps(app_origin_domain="a.ex", origin_shield_region="eu"))


def test_transient_errors_are_cached_for_a_second_on_the_created_distribution_only(
    full: Synth, attached: Synth
) -> None:
    config = full.one("AWS::CloudFront::Distribution")["DistributionConfig"]
    assert config["CustomErrorResponses"] == [
        {"ErrorCode": status, "ErrorCachingMinTTL": 1} for status in (500, 502, 503, 504)
    ]  # no ResponsePagePath or ResponseCode: the function's own error body passes through
    user = attached.one("AWS::CloudFront::Distribution")["DistributionConfig"]
    assert "CustomErrorResponses" not in user


def test_context_sets_origin_shield_and_monitoring() -> None:
    app = App(context={"appOrigin": "a.example", "originShieldRegion": "us-east-1"})
    props = props_from_context(app)
    assert props.origin_shield_region == "us-east-1" and props.monitoring is True
    props = props_from_context(App(context={"appOrigin": "a.example", "monitoring": "false"}))
    assert props.origin_shield_region is None and props.monitoring is False


def alarms(synth: Synth) -> dict[str, dict[str, Any]]:
    """The optimizer's alarms by construct id (``...Monitoring<Id><hash>``)."""
    found = {}
    for logical_id, alarm in synth.resources("AWS::CloudWatch::Alarm").items():
        name = logical_id.split("Monitoring", 1)[1][:-8]
        found[name] = alarm["Properties"]
    return found


def emf_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    return [q["MetricStat"]["Metric"] for q in alarm.get("Metrics", []) if "MetricStat" in q]


def emf_view(spec: handler_metrics.MetricSpec, label: str, pattern: str) -> str:
    """The EMF name the function writes for ``spec``'s samples whose ``label`` is ``pattern``."""
    return next(v.name for v in spec.emf if v.where == ((label, pattern),))


def test_alarms_read_the_metrics_the_function_emits(
    both: list[Synth], monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = next(v.name for v in handler_metrics.REQUESTS.emf if not v.where)
    server_errors = emf_view(handler_metrics.REQUESTS, "status", "5..")
    overload = emf_view(handler_metrics.ERRORS, "category", "overload")
    store = emf_view(handler_metrics.ERRORS, "category", "store")
    for synth in both:
        found = alarms(synth)
        assert set(found) == {
            "FunctionErrors",
            "Throttles",
            "Duration",
            "ServerErrorRate",
            "OverloadRate",
            "StoreErrors",
        }
        function_id, function = next(
            (k, v["Properties"])
            for k, v in synth.resources("AWS::Lambda::Function").items()
            if v["Properties"].get("Handler") == "handler.entry.lambda_handler.handler"
        )
        for name, metric in (("FunctionErrors", "Errors"), ("Throttles", "Throttles")):
            assert found[name]["Namespace"] == "AWS/Lambda"
            assert found[name]["MetricName"] == metric
            assert found[name]["Dimensions"] == [
                {"Name": "FunctionName", "Value": {"Ref": function_id}}
            ]
        duration = found["Duration"]
        assert (duration["MetricName"], duration["ExtendedStatistic"]) == ("Duration", "p99")
        assert duration["Threshold"] == 0.8 * function["Timeout"] * 1000
        assert {m["MetricName"] for m in emf_metrics(found["ServerErrorRate"])} == {
            requests,
            server_errors,
        }
        assert {m["MetricName"] for m in emf_metrics(found["OverloadRate"])} == {
            requests,
            overload,
        }
        assert [m["MetricName"] for m in emf_metrics(found["StoreErrors"])] == [store]
        # The blob the function writes with the template's environment: same namespace, and
        # exactly the dimensions (name and value) the alarms ask for.
        env = function["Environment"]["Variables"]
        for key in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"):
            monkeypatch.setenv(key, env[key])
        emitter = observability.make_metrics()
        emitter.add_metric(name=server_errors, unit="Count", value=1)
        blob: dict[str, Any] = dict(emitter.provider.serialize_metric_set())
        (declared,) = blob["_aws"]["CloudWatchMetrics"]
        (dimension_names,) = declared["Dimensions"]
        expected = [{"Name": d, "Value": blob[d]} for d in dimension_names]
        for name in ("ServerErrorRate", "OverloadRate", "StoreErrors"):
            for read in emf_metrics(found[name]):
                assert read["Namespace"] == declared["Namespace"] == observability.NAMESPACE
                assert read["Dimensions"] == expected
        assert expected == [{"Name": "service", "Value": observability.SERVICE}]


def dashboard_body(synth: Synth) -> dict[str, Any]:
    (dashboard,) = synth.resources("AWS::CloudWatch::Dashboard").values()
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    body: dict[str, Any] = json.loads("".join(p if isinstance(p, str) else "X" for p in parts))
    return body


def test_dashboard_shows_the_alarms_and_only_metrics_the_function_emits(full: Synth) -> None:
    emitted = {v.name for spec in handler_metrics.METRICS for v in spec.emf}
    body = dashboard_body(full)
    (status,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    assert len(status["properties"]["alarms"]) == len(alarms(full))
    shown = {
        line[1]
        for widget in body["widgets"]
        for line in widget["properties"].get("metrics", [])
        if line[0] == observability.NAMESPACE
    }
    assert shown <= emitted
    assert {"Requests", "Errors", "OverloadErrors", "StoreErrors", "TotalMs"} <= shown
    namespaces = {
        line[0]
        for widget in body["widgets"]
        for line in widget["properties"].get("metrics", [])
        if isinstance(line[0], str)
    }
    assert namespaces == {observability.NAMESPACE, "AWS/Lambda", "AWS/CloudFront"}


def test_readme_alarm_table_lists_every_alarm(full: Synth) -> None:
    lines = (ROOT / "docs" / "observability.md").read_text().splitlines()
    start = lines.index("| alarm | reads | threshold | why |") + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line.split("|")[1].strip().strip("`"))
    assert sorted(rows) == sorted(alarms(full))


def test_alarms_notify_the_topic_and_monitoring_can_be_turned_off(full: Synth) -> None:
    arns = ["arn:aws:lambda:eu-west-1:123456789012:layer:pyvips:3"]
    app = App()
    notified = Stack(app, "Notified")
    topic = sns.Topic(notified, "Alarms")
    NextImageOptimizer(
        notified, "Images", app_origin_domain="a.example", layer_arns=arns, alarm_topic=topic
    )
    quiet = Stack(app, "Quiet")
    NextImageOptimizer(
        quiet, "Images", app_origin_domain="a.example", layer_arns=arns, monitoring=False
    )
    template = Template.from_stack(notified).to_json()
    found = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    ]
    assert len(found) == 6
    for alarm in found:
        assert alarm["AlarmActions"] == alarm["OKActions"] == [notified.resolve(topic.topic_arn)]
    for alarm in alarms(full).values():  # no topic: the alarms only change state
        assert "AlarmActions" not in alarm
    off = Template.from_stack(quiet)
    off.resource_count_is("AWS::CloudWatch::Alarm", 0)
    off.resource_count_is("AWS::CloudWatch::Dashboard", 0)
    with pytest.raises(ValueError, match="monitoring is off"):
        validate(
            NextImageOptimizerProps(app_origin_domain="a.ex", alarm_topic=topic, monitoring=False)
        )


def test_timeouts_are_ordered(both: list[Synth]) -> None:
    for synth in both:
        function = next(
            v["Properties"]
            for v in synth.resources("AWS::Lambda::Function").values()
            if v["Properties"].get("Handler") == "handler.entry.lambda_handler.handler"
        )
        image = behaviours(synth)["/_next/image"]
        read_timeout = origin_of(synth, image)["CustomOriginConfig"]["OriginReadTimeout"]
        budget = float(function["Environment"]["Variables"]["NEXT_IMAGE_TIMEOUT"])
        assert budget < function["Timeout"] < read_timeout


def test_function_role_reaches_only_its_prefixes(full: Synth) -> None:
    role_id = next(
        k
        for k, v in full.resources("AWS::IAM::Role").items()
        if "next-image" in v["Properties"].get("Description", "")
    )
    statements = [
        s
        for p in full.resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    actions = {
        a
        for s in statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert actions == {
        "lambda:InvokeFunction",  # itself, for fast first view (its own test)
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "s3:GetObject",
        "s3:PutObject",
        "s3:ListBucket",
    }
    text = json.dumps(statements)
    assert "/site/_next/image-variants/*" in text and "/site/_next/image-pointers/*" in text
    assert "/site/_next/image-sources/*" in text
    assert "/assets/*" in text
    for statement in statements:
        if statement["Action"] == "s3:ListBucket":
            assert "s3:prefix" in statement["Condition"]["StringLike"]
    assert not full.resources("AWS::IAM::ManagedPolicy")
    role = full.resources("AWS::IAM::Role")[role_id]["Properties"]
    assert "ManagedPolicyArns" not in role


def test_function_code_is_only_the_handler_package_and_config(full: Synth) -> None:
    assets = json.loads((full.outdir / "NextImageTest.assets.json").read_text())["files"]
    function = next(
        v["Properties"]
        for v in full.resources("AWS::Lambda::Function").values()
        if v["Properties"].get("Handler") == "handler.entry.lambda_handler.handler"
    )
    key = function["Code"]["S3Key"]
    source = next(a["source"]["path"] for h, a in assets.items() if key.startswith(h))
    code = full.outdir / source
    assert sorted(p.name for p in code.iterdir()) == ["handler", "next-image-config"]
    assert not list(code.rglob("__pycache__"))
    bundled = json.loads((code / "next-image-config" / "images-config.json").read_text())
    assert bundled == IMAGES


def test_outputs(full: Synth) -> None:
    outputs = full.raw["Outputs"]
    assert {"DistributionDomainName", "FunctionName"} <= set(outputs)
    assert outputs["DistributionDomainName"]["Value"]["Fn::GetAtt"][1] == "DomainName"


def test_cdk_nag_has_no_unacknowledged_findings(both: list[Synth]) -> None:
    for synth in both:
        report = json.loads((synth.outdir / "validation-report.json").read_text())
        assert report["pluginReports"] == []


@pytest.mark.parametrize("stack", ["full", "attached"])
def test_cfn_lint_finds_no_errors(stack: str, request: pytest.FixtureRequest) -> None:
    synth: Synth = request.getfixturevalue(stack)
    findings = cfn_lint(next(synth.outdir.glob("*.template.json")))
    errors = [f for f in findings if f["Level"] == "Error"]
    assert errors == [], errors
    # The only warnings are CDK's own redundant DependsOn next to a GetAtt (W3005).
    assert {f["Rule"]["Id"] for f in findings} <= {"W3005"}


def test_invalid_settings_fail_at_synth() -> None:
    with pytest.raises(ValueError, match="timeout"):
        validate(NextImageOptimizerProps(app_origin_domain="a.example", timeout_seconds=30))
    with pytest.raises(ValueError, match="variants_prefix"):
        validate(NextImageOptimizerProps(app_origin_domain="a.example", variants_prefix="site"))
    with pytest.raises(ValueError, match="app_origin_domain"):
        validate(NextImageOptimizerProps())


def test_layers_built_for_another_python_are_refused(layers: Path) -> None:
    with pytest.raises(ValueError, match="make layer"):
        read_manifest(layers, "arm64", "3.12")


def test_props_and_keyword_arguments_are_not_mixed() -> None:
    stack = Stack(App(), "S")
    with pytest.raises(TypeError, match="either props or keyword"):
        NextImageOptimizer(
            stack, "A", NextImageOptimizerProps(app_origin_domain="a.example"), memory_mib=1024
        )
    with pytest.raises(TypeError, match="memory"):
        NextImageOptimizer(stack, "B", app_origin_domain="a.example", memory=1024)


def test_a_deploy_without_an_app_origin_is_refused_with_the_flag_to_pass(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"-c appOrigin=app\.example\.com"):
        build(App(outdir=str(tmp_path)))


def layer_sources(synth: Synth) -> list[Any]:
    (function,) = (
        v
        for v in synth.resources("AWS::Lambda::Function").values()
        if v["Properties"].get("Handler") == "handler.entry.lambda_handler.handler"
    )
    layers: list[Any] = function["Properties"]["Layers"]
    return layers


def synth_attached(outdir: Path, **options: Any) -> Synth:
    app = App(outdir=str(outdir))
    stack = Stack(app, "Layers")
    NextImageOptimizer(stack, "Images", app_origin_domain="app.example.com", **options)
    return synthesize(app, "Layers", outdir)


def test_layer_arns_are_used_as_given(tmp_path: Path) -> None:
    arns = [
        "arn:aws:lambda:eu-west-1:123456789012:layer:pyvips:3",
        "arn:aws:lambda:eu-west-1:123456789012:layer:deps:7",
    ]
    synth = synth_attached(tmp_path, layer_arns=arns)
    assert layer_sources(synth) == arns
    assert synth.resources("AWS::Lambda::LayerVersion") == {}


def test_layer_zips_are_uploaded_as_given(layers: Path, tmp_path: Path) -> None:
    zips = []
    for name in ("pyvips", "deps"):
        zips.append(tmp_path / f"{name}-arm64-python3.13.zip")
        zips[-1].write_bytes((layers / f"{name}-arm64.zip").read_bytes())
    synth = synth_attached(tmp_path / "out", layer_zips=[str(z) for z in zips])
    versions = synth.resources("AWS::Lambda::LayerVersion")
    assert sorted(v["Properties"]["Description"] for v in versions.values()) == [
        "deps-arm64-python3.13 for python3.13 on arm64",
        "pyvips-arm64-python3.13 for python3.13 on arm64",
    ]
    assert len(layer_sources(synth)) == 2


def test_without_layers_the_cache_is_built_once_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ARN, zip or folder: the pinned wheels, built into the user cache, reused next synth."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    first = synth_attached(tmp_path / "one")
    (built,) = (tmp_path / "cache").iterdir()
    assert built.name.startswith("arm64-python3.13-")
    assert sorted(p.name for p in built.glob("*.zip")) == ["deps-arm64.zip", "pyvips-arm64.zip"]

    def no_rebuild(*args: object, **kwargs: object) -> None:
        raise AssertionError("rebuilt layers whose pins had not changed")

    monkeypatch.setattr(layer_zips, "build_layers", no_rebuild)
    again = synth_attached(tmp_path / "two")
    assert layer_sources(again) == layer_sources(first)


def test_offline_the_cache_build_names_the_wheel_it_cannot_get(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(LayerBuildError, match=r"pip cannot get pyvips") as raised:
        layer_zips.cached_layers("arm64", "3.13", tmp_path / "cache")
    assert raised.value.missing is not None and raised.value.missing.startswith("pyvips")
    assert "python3.13/arm64" in str(raised.value)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # nothing half-built is kept


def test_image_behaviour_follows_the_apps_base_path(tmp_path: Path) -> None:
    from next_image_cdk.bundled_config import bundle_images_config

    server_files = {"version": 1, "config": {"basePath": "/docs", "images": {}}}
    (tmp_path / "required-server-files.json").write_text(json.dumps(server_files))
    assert bundle_images_config(next_dir=tmp_path).base_path == "/docs"
    manifest = tmp_path / "m"
    manifest.mkdir()
    images = {"version": 1, "images": {"path": "/shop/_next/image"}}
    (manifest / "images-manifest.json").write_text(json.dumps(images))
    assert bundle_images_config(next_dir=manifest).base_path == "/shop"
    assert bundle_images_config({}).base_path == ""
