"""An adopter's own CDK app, with the released construct: nothing from this checkout on its path.

In a temporary folder: a fresh virtual environment installs the ``next-image-cdk`` wheel built
from this commit (not the checkout) and cdk-nag; a small CDK app of its own defines a stack with
its own ``cloudfront.Distribution`` and adds ``NextImageOptimizer`` with keyword arguments; the
pinned CDK CLI synthesizes it (the layers come from the user cache, built from pinned wheels);
cfn-lint and cdk-nag check the template; ``next-image local-cdn`` serves that template in front
of the e2e app, and Chromium loads the gallery through it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips
from harness import APP, CHROMIUM, CHROMIUM_ARGS, REPORT, ROOT, timed
from processes import LocalCdn, Proxy, local_cdn

from devtools.pictures import Picture
from kit.synth import cfn_lint

STACK = "AdopterSite"
CDK_CLI = re.findall(r"CDK_CLI_VERSION \?= (\S+)", (ROOT / "Makefile").read_text())[0]
CDK_NAG = re.findall(r'"(cdk-nag==[^"]+)"', (ROOT / "pyproject.toml").read_text())[0]
FORMATS = {"image/avif": "heifload", "image/webp": "webpload"}

# The adopter's whole CDK app: what the README tells a team to write.
ADOPTER_APP = """
import os

from aws_cdk import Acknowledgment, App, Stack, Validations
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from cdk_nag import AwsSolutionsChecks
from next_image_cdk import NextImageOptimizer

app = App()
stack = Stack(app, "AdopterSite")
site = cloudfront.Distribution(
    stack,
    "Site",
    default_behavior=cloudfront.BehaviorOptions(
        origin=origins.HttpOrigin(os.environ["ADOPTER_ORIGIN"]),
        cache_policy=cloudfront.CachePolicy.CACHING_DISABLED,
    ),
)
for rule in ("CFR1", "CFR2", "CFR3", "CFR4"):
    Validations.of(site).acknowledge(
        Acknowledgment(id=f"AwsSolutions-{rule}", reason="the adopter's own choices")
    )
NextImageOptimizer(
    stack,
    "Images",
    distribution=site,
    app_origin_domain=os.environ["ADOPTER_ORIGIN"],
    next_dir=os.environ["ADOPTER_NEXT_DIR"],
    public_dir=os.environ["ADOPTER_PUBLIC_DIR"],
)
Validations.of(app).add_plugins(AwsSolutionsChecks(app))
app.synth()
"""


def run(
    command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        output = done.stdout[-3000:] + done.stderr[-3000:]
        raise AssertionError(f"{' '.join(command)} failed:\n{output}")
    return done.stdout


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both distributions built from this commit; their folder."""
    dist = tmp_path_factory.mktemp("dist")
    with timed("adopter: build the wheels"):
        run([sys.executable, "-m", "release.build", "--no-layers", "--out-dir", str(dist)], ROOT)
    return dist


@pytest.fixture(scope="session")
def adopter(wheels: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder outside the checkout with its own venv holding the built wheel; the folder."""
    root = tmp_path_factory.mktemp("adopter")
    (wheel,) = wheels.glob("next_image_cdk-*.whl")
    venv = root / "venv"
    with timed("adopter: venv with the next-image-cdk wheel"):
        run([sys.executable, "-m", "venv", str(venv)], root)
        run([str(venv / "bin" / "pip"), "install", "-q", str(wheel), CDK_NAG], root)
    (root / "app.py").write_text(ADOPTER_APP)
    (root / "cdk.json").write_text(json.dumps({"app": f"{venv / 'bin' / 'python'} app.py"}))
    return root


def test_the_wheel_adds_no_generic_import_names(adopter: Path) -> None:
    python = str(adopter / "venv" / "bin" / "python")
    for name in ("handler", "infra", "devtools", "layers"):
        done = subprocess.run(
            [python, "-c", f"import {name}"], cwd=adopter, capture_output=True, text=True
        )
        assert done.returncode == 1 and "ModuleNotFoundError" in done.stderr, name
    version = run([python, "-c", "import next_image_cdk; print(next_image_cdk.__file__)"], adopter)
    assert str(adopter / "venv") in version  # the installed wheel, not the checkout


@pytest.fixture(scope="session")
def adopter_template(adopter: Path, built_app: dict[str, Picture]) -> Path:
    """``cdk synth`` with the pinned CLI, in the adopter's folder; the template."""
    env = {
        **os.environ,
        "ADOPTER_ORIGIN": "127.0.0.1",
        "ADOPTER_NEXT_DIR": str(APP / ".next"),
        "ADOPTER_PUBLIC_DIR": str(APP / "public"),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    env.pop("PYTHONPATH", None)
    with timed("adopter: cdk synth (pinned CLI, layers from the user cache)"):
        run(["npx", "--yes", f"aws-cdk@{CDK_CLI}", "synth", "--quiet"], adopter, env, 900)
    return adopter / "cdk.out" / f"{STACK}.template.json"


def test_the_template_passes_cdk_nag_and_cfn_lint(adopter_template: Path) -> None:
    report = json.loads((adopter_template.parent / "validation-report.json").read_text())
    assert report["pluginReports"] == []
    findings = cfn_lint(adopter_template)
    assert [f for f in findings if f["Level"] == "Error"] == []
    assert {f["Rule"]["Id"] for f in findings} <= {"W3005"}
    template = json.loads(adopter_template.read_text())
    (function,) = (
        resource
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Lambda::Function"
        and resource["Properties"].get("Handler") == "handler.entry.lambda_handler.handler"
    )
    assert function["Properties"]["Architectures"] == ["arm64"]
    assert len(function["Properties"]["Layers"]) == 2


@pytest.fixture(scope="session")
def adopter_cdn(
    adopter_template: Path, seed_folder: Path, app_proxy: Proxy, artifacts: Path
) -> Iterator[LocalCdn]:
    log = artifacts / "adopter-local-cdn.log"
    with local_cdn(adopter_template, app_proxy.url, seed_folder, log) as running:
        yield running


def test_the_adopters_site_shows_every_image_optimized(
    adopter_cdn: LocalCdn, built_app: dict[str, Picture]
) -> None:
    from playwright.sync_api import sync_playwright

    answers: list[dict[str, Any]] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})

            def record(response: Any) -> None:
                if "/_next/image?" in response.url and response.status == 200:
                    answers.append(
                        {
                            "url": response.url,
                            "type": response.headers.get("content-type", ""),
                            "body": response.body(),
                        }
                    )

            page.on("response", record)
            page.goto(adopter_cdn.url + "/", wait_until="networkidle")
            page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({src: e.currentSrc, w: e.naturalWidth}))"
            )
        finally:
            browser.close()
    assert images and all(image["w"] > 0 for image in images), images
    assert all("/_next/image?" in image["src"] for image in images), images
    assert len(answers) >= len(images)
    for answer in answers:
        assert answer["type"] in FORMATS, answer["url"]
        decoded = pyvips.Image.new_from_buffer(answer["body"], "")
        assert decoded.get("vips-loader").startswith(FORMATS[answer["type"]])
        width = int(re.findall(r"[?&]w=(\d+)", answer["url"])[0])
        assert decoded.width <= width
    REPORT.append(
        f"adopter: {len(images)} images on /, {len(answers)} optimized answers "
        f"({sorted({a['type'] for a in answers})})"
    )


@pytest.fixture(scope="session")
def cli_tool(wheels: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CLI's wheel installed as a tool is (``pipx``/``uv tool``: a venv of its own, no
    extras); its ``bin`` folder."""
    venv = tmp_path_factory.mktemp("tool") / "venv"
    (wheel,) = wheels.glob("next_image_lambda-*.whl")
    with timed("adopter: the CLI installed as a tool"):
        run([sys.executable, "-m", "venv", str(venv)], venv.parent)
        run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], venv.parent)
    return venv / "bin"


def test_the_cli_installed_as_a_tool_runs_its_commands(cli_tool: Path, tmp_path: Path) -> None:
    next_image = str(cli_tool / "next-image")
    version = run([next_image, "--version"], tmp_path)
    assert re.fullmatch(r"next-image \d+\.\d+\.\d+ \(libvips 8\.\d+\.\d+\)\n", version)
    config = json.loads(run([next_image, "config"], tmp_path))
    assert config["deviceSizes"][0] == 640 and config["formats"] == ["image/webp"]
    schema = json.loads(run([next_image, "openapi"], tmp_path))
    assert "/_next/image" in schema["paths"]
    (tmp_path / "public").mkdir()
    imagegen_jpeg = pyvips.Image.black(1200, 800, bands=3).jpegsave_buffer(Q=80)
    (tmp_path / "public" / "a.jpg").write_bytes(imagegen_jpeg)
    warm = subprocess.run(
        [next_image, "warm", "--public-dir", "public", "--store", "filesystem", "--widths", "640"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert warm.returncode == 0, warm.stderr
    assert any((tmp_path / ".next-image-cache").rglob("*")), "warm stored nothing"


def test_the_emulators_name_the_extra_they_need(cli_tool: Path, tmp_path: Path) -> None:
    event = ROOT / "events" / "function-url-avif.json"
    done = subprocess.run(
        [str(cli_tool / "next-image"), "invoke", str(event), "--moto"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "pip install 'next-image-lambda[local]'" in done.stderr
    assert "Traceback" not in done.stderr
