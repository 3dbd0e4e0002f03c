"""The shipped ``next/image`` loader, ``handler/commands/loader/next-image-loader.js``, run
under Node.js.

Its URLs must be the ones Next.js 16.4.6's default loader builds:
``tests/kit/data/loader_cases.json`` holds what Next's own loader returns for a table of inputs
(``tests/e2e/loader_cases.mjs`` regenerates it from Next's code, and ``make e2e`` checks it), and
the shipped module must return the same for each, given the images config as Next inlines it into
a build with a custom loader (``path`` with the trailing slash Next adds). Then: its default
export reads the build's environment, its files mode links what ``warm --out`` writes, and
``next-image loader`` writes it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from handler.commands.cli import main
from handler.commands.loader import LOADER_NAME, files_path, loader_source
from kit.paths import DATA

CASES = json.loads((DATA / "loader_cases.json").read_text())

# Loads the module (after the environment is set: it reads it once, as a build inlines it) and
# answers each call on stdin: [factory or "default", options, {src, width, quality}].
Call = tuple[str, dict[str, Any], dict[str, Any]]
RUNNER = """
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
Object.assign(process.env, input.env);
import(require('url').pathToFileURL(input.module).href).then((loader) => {
  const out = input.calls.map(([factory, options, props]) =>
    factory === 'default' ? loader.default(props) : loader[factory](options)(props));
  process.stdout.write(JSON.stringify(out));
});
"""


def run_loader(
    tmp_path: Path,
    calls: list[Call],
    env: dict[str, str] | None = None,
    source: str | None = None,
) -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is required to test the loader module")
    module = tmp_path / "next-image-loader.mjs"  # an ES module whatever package.json is near
    module.write_text(source if source is not None else loader_source())
    stdin = json.dumps({"module": str(module), "env": env or {}, "calls": calls})
    done = subprocess.run(
        [node, "-e", RUNNER], input=stdin, capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    answers: list[str] = json.loads(done.stdout)
    return answers


def _props(case: dict[str, Any]) -> dict[str, Any]:
    props = {"src": case["src"], "width": case["width"]}
    return props | ({"quality": case["quality"]} if case["quality"] is not None else {})


def test_the_cases_come_from_next_16_4_6() -> None:
    assert CASES["next"] == "16.4.6"
    assert len(CASES["cases"]) >= 50
    assert {c["basePath"] for c in CASES["cases"]} == {"", "/docs"}
    assert any("&dpl=" in c["expected"] for c in CASES["cases"])


def test_the_loader_builds_the_urls_nexts_default_loader_builds(tmp_path: Path) -> None:
    calls: list[Call] = []
    for case in CASES["cases"]:
        options = {
            # What Next inlines for a custom loader: images.path with a slash appended.
            "path": f"{case['basePath']}/_next/image/",
            "qualities": case["qualities"],
            "deploymentId": case["deploymentId"],
            "immutableAssets": case["immutableAssets"],
        }
        elsewhere = {**options, "base": "https://img.example.com/"}
        calls += [("createLoader", opts, _props(case)) for opts in (options, elsewhere)]
    answers = run_loader(tmp_path, calls)
    for index, case in enumerate(CASES["cases"]):
        same_origin, other_host = answers[2 * index : 2 * index + 2]
        assert same_origin == case["expected"], case
        assert other_host == "https://img.example.com" + case["expected"], case


def test_the_default_export_reads_what_the_build_inlines(tmp_path: Path) -> None:
    props = {"src": "/images/a.jpg", "width": 640, "quality": 80}
    calls: list[Call] = [("default", {}, props)]
    calls.append(("default", {}, {**props, "src": "https://x.example/a.jpg"}))
    env = {
        "NEXT_PUBLIC_IMAGE_BASE": "https://d111.cloudfront.net",
        "__NEXT_IMAGE_OPTS": json.dumps({"path": "/docs/_next/image/", "qualities": [50, 90]}),
        "NEXT_DEPLOYMENT_ID": "v42",
    }
    assert run_loader(tmp_path, calls, env) == [
        "https://d111.cloudfront.net/docs/_next/image?url=%2Fimages%2Fa.jpg&w=640&q=90&dpl=v42",
        "https://d111.cloudfront.net/docs/_next/image?url=https%3A%2F%2Fx.example%2Fa.jpg&w=640&q=90",
    ]
    # Nothing inlined (no images config, no base): Next's defaults on the page's own origin.
    assert run_loader(tmp_path, calls[:1]) == ["/_next/image?url=%2Fimages%2Fa.jpg&w=640&q=80"]


@pytest.mark.parametrize("mode", ["environment", "--files"])
def test_the_files_mode_links_what_warm_out_writes(tmp_path: Path, mode: str) -> None:
    srcs = ["/images/a.jpg", "/img/a b,c.png", "/_next/static/media/p.1a2b.jpg"]
    env = {"__NEXT_IMAGE_OPTS": json.dumps({"path": "/docs/_next/image/", "qualities": [60]})}
    source = loader_source("avif") if mode == "--files" else None
    if mode == "environment":
        env["NEXT_PUBLIC_IMAGE_FILES"] = "avif"
    calls: list[Call] = [("default", {}, {"src": s, "width": 828, "quality": 75}) for s in srcs]
    # An absolute URL or a query string has no file: the original is linked as it is.
    originals = ("https://x.example/a.jpg", "/a?v")
    calls += [("default", {}, {"src": src, "width": 828}) for src in originals]
    answers = run_loader(tmp_path, calls, env, source)
    assert answers[:3] == [files_path(src, 828, 60, "avif", "/docs") for src in srcs]
    assert answers[0] == "/docs/_next/image-files/images/a.jpg.w828q60.avif"
    assert answers[1] == "/docs/_next/image-files/img/a%20b%2Cc.png.w828q60.avif"
    assert answers[3:] == list(originals)


def test_files_takes_webp_or_avif_only() -> None:
    with pytest.raises(ValueError, match="webp, avif"):
        loader_source("png")


def test_next_image_loader_writes_the_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / LOADER_NAME
    assert main(["loader", "--out", str(out)]) == 0
    assert out.read_text() == loader_source()
    assert "loaderFile: './next-image-loader.js'" in capsys.readouterr().err
    assert main(["loader", "--files", "webp"]) == 0
    printed = capsys.readouterr().out
    assert printed == loader_source("webp") and "const FILES = 'webp';" in printed
    assert main(["loader", "--out", str(tmp_path / "missing" / LOADER_NAME)]) == 2
