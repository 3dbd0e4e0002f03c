"""The construct serving a static export: ``static_site_dir`` (``-c staticSiteDir``).

The CDK app is the one ``cdk synth`` runs (``infra.app.build``, cdk-nag included), given a small
export's ``out/`` and ``.next`` instead of an app origin, with stand-in layers (the template, not
the layers, is checked). Then: the template's resources and cfn-lint; the CloudFront Function
that maps paths to the export's files, run by Node.js; the props it refuses; and the template
served by ``next-image local-cdn``: pages, the 404 page, and images made by the function from
the site bucket.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kit import imagegen
from kit.local_cdn_process import LocalCdn, local_cdn, stand_in_layers
from kit.synth import cdk_synth, cfn_lint

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from next_image_cdk.bundled_config import render_static_site_function
from next_image_cdk.construct import NextImageOptimizerProps, validate

STACK = "StaticSiteTest"
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
MEDIA = "_next/static/media/hero.1a2b3c.jpg"
LOADER_FILE = "/build/site/next-image-loader.js"


def page(title: str, body: str = "") -> bytes:
    head = f"<!DOCTYPE html><html><head><title>{title}</title></head>"
    return f"{head}<body>{body}</body></html>".encode()


def export(root: Path, *, trailing_slash: bool = False) -> tuple[Path, Path]:
    """A small export as ``next build`` writes it: ``out/`` and the ``.next`` config files."""
    out = root / "out"
    (out / "images").mkdir(parents=True)
    (out / "_next" / "static" / "media").mkdir(parents=True)
    (out / "index.html").write_bytes(page("home"))
    (out / "about.html").write_bytes(page("about"))
    (out / "404.html").write_bytes(page("not found", "This page could not be found."))
    (out / "images" / "a.png").write_bytes(imagegen.png(1280, 960))
    (out / MEDIA).write_bytes(imagegen.jpeg(1280, 960))
    build = root / ".next"
    build.mkdir()
    images = {
        "loader": "custom",
        "loaderFile": LOADER_FILE,
        "path": "/_next/image/",
        "formats": ["image/avif", "image/webp"],
    }
    config = {"images": images, "basePath": "", "output": "export", "trailingSlash": trailing_slash}
    (build / "required-server-files.json").write_text(json.dumps({"version": 1, "config": config}))
    return out, build


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``cdk synth -c staticSiteDir=out -c nextDir=.next``; the cloud assembly."""
    root = tmp_path_factory.mktemp("static-site")
    out, next_dir = export(root)
    # raises on any unacknowledged cdk-nag finding
    return cdk_synth(root, STACK, staticSiteDir=str(out), nextDir=str(next_dir)).parent


@pytest.fixture(scope="module")
def template(synthesized: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((synthesized / f"{STACK}.template.json").read_text())
    return loaded


def of_type(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_the_default_behaviour_serves_the_site_bucket_through_the_paths_function(
    template: dict[str, Any],
) -> None:
    (distribution,) = of_type(template, "AWS::CloudFront::Distribution").values()
    config = distribution["Properties"]["DistributionConfig"]
    default = config["DefaultCacheBehavior"]
    origin = next(o for o in config["Origins"] if o["Id"] == default["TargetOriginId"])
    site_id = origin["DomainName"]["Fn::GetAtt"][0]
    site = template["Resources"][site_id]
    assert site["Type"] == "AWS::S3::Bucket"
    assert set(site["Properties"]["PublicAccessBlockConfiguration"].values()) == {True}
    assert "OriginAccessControlId" in origin and "CustomOriginConfig" not in origin
    assert default["CachePolicyId"] == CACHING_OPTIMIZED
    assert (default["AllowedMethods"], default["Compress"]) == (["GET", "HEAD"], True)
    (association,) = default["FunctionAssociations"]
    assert association["EventType"] == "viewer-request"
    function = template["Resources"][association["FunctionARN"]["Fn::GetAtt"][0]]
    assert function["Properties"]["FunctionCode"] == render_static_site_function(False, "")
    # The image behaviours are there as for an app; no app origin anywhere.
    patterns = [b["PathPattern"] for b in config["CacheBehaviors"]]
    assert patterns == ["/_next/image", "/_next/image-variants/*"]
    assert not [o for o in config["Origins"] if isinstance(o["DomainName"], str)]
    # CloudFront may read and list the site (a missing key is a 404), nothing else.
    policies = of_type(template, "AWS::S3::BucketPolicy").values()
    (policy,) = [p for p in policies if p["Properties"]["Bucket"] == {"Ref": site_id}]
    grants = [
        s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"
    ]
    assert {
        a for s in grants for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    } == {
        "s3:GetObject",
        "s3:ListBucket",
    }
    assert all(s["Principal"] == {"Service": "cloudfront.amazonaws.com"} for s in grants)
    assert template["Outputs"]["SiteBucketName"]["Value"] == {"Ref": site_id}


def test_a_missing_page_is_the_exports_404_page(template: dict[str, Any]) -> None:
    (distribution,) = of_type(template, "AWS::CloudFront::Distribution").values()
    errors = distribution["Properties"]["DistributionConfig"]["CustomErrorResponses"]
    assert errors[0] == {
        "ErrorCachingMinTTL": 10,
        "ErrorCode": 404,
        "ResponseCode": 404,
        "ResponsePagePath": "/404.html",
    }
    assert [e["ErrorCode"] for e in errors[1:]] == [500, 502, 503, 504]
    assert all("ResponsePagePath" not in e for e in errors[1:])


def test_out_is_uploaded_to_the_site_bucket_and_read_as_the_functions_assets(
    template: dict[str, Any], synthesized: Path
) -> None:
    (function,) = [
        f["Properties"]
        for f in of_type(template, "AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == "handler.entry.lambda_handler.handler"
    ]
    env = function["Environment"]["Variables"]
    site_id = template["Outputs"]["SiteBucketName"]["Value"]["Ref"]
    assert env["NEXT_IMAGE_ASSETS_BUCKET"] == {"Ref": site_id}
    assert env["NEXT_IMAGE_ASSETS_PREFIX"] == ""
    assert "NEXT_IMAGE_ORIGIN" not in env
    deployments = [
        d["Properties"] for d in of_type(template, "Custom::CDKBucketDeployment").values()
    ]
    (site,) = [d for d in deployments if d["DestinationBucketName"] == {"Ref": site_id}]
    assert site["DistributionPaths"] == ["/*"] and site["Prune"] is False
    # The function's own copy of the config still says it is an export: its loader is served.
    bundled = list(synthesized.glob("asset.*/next-image-config/required-server-files.json"))
    assert [json.loads(p.read_text())["config"]["output"] for p in bundled] == ["export"]


def test_cfn_lint_finds_no_errors(synthesized: Path) -> None:
    findings = cfn_lint(synthesized / f"{STACK}.template.json")
    assert [f for f in findings if f["Level"] == "Error"] == []
    assert {f["Rule"]["Id"] for f in findings} <= {"W3005"}
    report = json.loads((synthesized / "validation-report.json").read_text())
    assert report["pluginReports"] == []


# --- the paths function, run by Node.js as CloudFront runs it ---

PATHS_RUNNER = """
const vm = require('vm');
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const { handler } = vm.runInNewContext(input.code + '\\n;({ handler })');
const out = input.requests.map(([uri, querystring]) => {
  const result = handler({ request: { uri, querystring, headers: {} } });
  return result.statusCode ? [result.statusCode, result.headers.location.value] : [0, result.uri];
});
process.stdout.write(JSON.stringify(out));
"""


def run_paths(code: str, requests: list[tuple[str, dict[str, Any]]]) -> list[list[Any]]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is required to test the CloudFront Function")
    done = subprocess.run(
        [node, "-e", PATHS_RUNNER],
        input=json.dumps({"code": code, "requests": requests}),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    answers: list[list[Any]] = json.loads(done.stdout)
    return answers


FILES = ["/_next/static/chunks/a.js", "/images/a.jpg", "/about.txt", "/about/index.txt", "/a.html"]


@pytest.mark.parametrize(
    ("trailing_slash", "base_path", "expected"),
    [
        (
            False,
            "",
            {
                "/": [0, "/index.html"],
                "/about": [0, "/about.html"],
                "/blog/post": [0, "/blog/post.html"],
                "/about/": [308, "/about"],
                "/about//?x=1&y": [308, "/about?x=1&y"],
            },
        ),
        (
            True,
            "",
            {
                "/": [0, "/index.html"],
                "/about/": [0, "/about/index.html"],
                "/blog/post/": [0, "/blog/post/index.html"],
                "/about": [308, "/about/"],
                "/about?x=1&y": [308, "/about/?x=1&y"],
            },
        ),
        (
            False,
            "/docs",
            {
                "/docs": [0, "/docs/index.html"],
                "/docs/": [0, "/docs/index.html"],
                "/docs/about": [0, "/docs/about.html"],
            },
        ),
    ],
)
def test_the_paths_function_maps_a_path_to_the_file_the_export_wrote(
    trailing_slash: bool, base_path: str, expected: dict[str, list[Any]]
) -> None:
    code = render_static_site_function(trailing_slash, base_path)
    assert len(code.encode()) < 10_240
    requests: list[tuple[str, dict[str, Any]]] = []
    for uri in [*expected, *FILES]:
        path, _, query = uri.partition("?")
        querystring = {
            name: {"value": value}
            for name, _, value in (part.partition("=") for part in query.split("&") if part)
        }
        requests.append((path, querystring))
    answers = run_paths(code, requests)
    assert answers[: len(expected)] == list(expected.values())
    assert answers[len(expected) :] == [[0, f] for f in FILES]  # files are left as they are


# --- what the construct refuses ---


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"app_origin_domain": "app.example.com"}, "excludes app_origin_domain"),
        ({"public_dir": "public"}, "excludes public_dir"),
        ({"assets_prefix": "assets/"}, "excludes assets_prefix"),
    ],
)
def test_a_static_site_refuses_what_it_replaces(
    tmp_path: Path, extra: dict[str, Any], message: str
) -> None:
    out, _ = export(tmp_path)
    with pytest.raises(ValueError, match=message):
        validate(NextImageOptimizerProps(static_site_dir=out, **extra))


def test_a_static_site_needs_an_exports_out_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"has no index\.html"):
        validate(NextImageOptimizerProps(static_site_dir=tmp_path))
    out, _ = export(tmp_path)
    as_text: Any = str(out)  # a CDK app's keyword arguments: paths as strings too
    assert validate(NextImageOptimizerProps(static_site_dir=as_text)) == 20


def test_a_static_site_refuses_a_server_build(tmp_path: Path) -> None:
    from aws_cdk import App, Stack

    from next_image_cdk import NextImageOptimizer

    out, build = export(tmp_path)
    document = json.loads((build / "required-server-files.json").read_text())
    del document["config"]["output"]
    (build / "required-server-files.json").write_text(json.dumps(document))
    stack = Stack(App(), "Refused")
    with pytest.raises(ValueError, match="is not a build with output: 'export'"):
        NextImageOptimizer(
            stack,
            "Images",
            static_site_dir=out,
            next_dir=build,
            layers_dir=stand_in_layers(tmp_path),
        )


# --- served by local-cdn: the bucket behind the default behaviour, its 404 page, the images ---


@pytest.fixture(scope="module")
def cdn(synthesized: Path) -> Iterator[LocalCdn]:
    template = synthesized / f"{STACK}.template.json"
    with local_cdn("--template", str(template)) as running:
        yield running


def test_local_cdn_serves_the_pages_from_the_site_bucket(cdn: LocalCdn) -> None:
    with httpx.Client(base_url=cdn.url, timeout=60) as client:
        home, about = client.get("/"), client.get("/about")
        assert (home.status_code, about.status_code) == (200, 200)
        assert b"<title>home</title>" in home.content
        assert b"<title>about</title>" in about.content
        assert home.headers["content-type"] == "text/html"
        assert client.get("/about").headers["x-cache"] == "Hit from cloudfront"
        slash = client.get("/about/?x=1")
        assert (slash.status_code, slash.headers["location"]) == (308, "/about?x=1")
        media = client.get("/" + MEDIA)
        assert media.status_code == 200 and media.content[:2] == b"\xff\xd8"


def test_local_cdn_answers_a_missing_page_with_the_404_page(cdn: LocalCdn) -> None:
    with httpx.Client(base_url=cdn.url, timeout=60) as client:
        for path in ("/nowhere", "/images/missing.png", "/nowhere"):
            missing = client.get(path)
            assert missing.status_code == 404, path
            assert b"This page could not be found." in missing.content
            assert missing.headers["content-type"] == "text/html"


def test_local_cdn_has_the_function_make_images_from_the_site_bucket(cdn: LocalCdn) -> None:
    with httpx.Client(base_url=cdn.url, timeout=120) as client:
        for url in ("%2Fimages%2Fa.png", "%2F" + MEDIA.replace("/", "%2F")):
            query = f"url={url}&w=640&q=75"
            answer = client.get(f"/_next/image?{query}", headers={"accept": "image/avif,*/*"})
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"] == "image/avif"
            assert imagegen.decode(answer.content).width == 640
            again = client.get(f"/_next/image?{query}", headers={"accept": "image/avif,*/*"})
            assert again.headers["x-cache"] == "Hit from cloudfront"
