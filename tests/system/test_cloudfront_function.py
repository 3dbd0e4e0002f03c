"""The CloudFront Accept-normalisation function: its Node test suite, and agreement with the server.

The function must forward an Accept for which our server negotiates exactly what it would have
for the raw header; otherwise the edge cache would store one format under another's key.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from handler.contract.accept import negotiate
from handler.contract.config import load_images_config
from handler.contract.errors import ImageError
from handler.contract.validate import validate_params
from next_image_cdk.bundled_config import (
    CLOUDFRONT_DIR,
    CLOUDFRONT_FUNCTION_MAX_BYTES,
    FORMATS_PLACEHOLDER,
    render_accept_function,
)

CASES = json.loads((CLOUDFRONT_DIR / "accept_cases.json").read_text())["cases"]
FORMAT_SETS = (
    ["image/webp"],
    ["image/avif", "image/webp"],
    ["image/webp", "image/avif"],
    ["image/avif"],
)
# Pieces that hit every rule: wildcards, case, q edge values, params, quotes, junk separators.
ATOMS = (
    "image/avif", "image/webp", "image/*", "*/*", "IMAGE/WEBP", "text/html", "image/png",
    "*/x", "a/b/c", "image/webp;level=1", ";q=0", ";q=0.5", ";q=1", ";Q=0.9", ";q=", ";q=abc",
    ";q=2", ";q=-1", ";q=0.0001", ';x="a b"', ';x="a,b"', " ", ",", ";", "\t", '"', "=",
    "image/avif;q=0", "image/webp ; q=0.8", "*/*;q=0.1", "image/avif;a=1;q=0.7;b=2",
)  # fmt: skip

# Evaluates the templated function for many headers in one Node process; prints a JSON list.
RUNNER = """
const vm = require('vm');
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const { handler } = vm.runInNewContext(input.code + '\\n;({ handler })');
const out = input.headers.map((accept) => {
  const headers = accept === null ? {} : { accept: { value: accept } };
  return handler({ request: { headers } }).headers.accept.value;
});
process.stdout.write(JSON.stringify(out));
"""


def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("Node.js is required to test the CloudFront Function")
    return path


def run_function(
    formats: Sequence[str], headers: Sequence[str | None], *, animated_webp: bool = False
) -> list[str]:
    code = render_accept_function(tuple(formats), animated_webp=animated_webp)
    payload = json.dumps({"code": code, "headers": headers})
    done = subprocess.run(
        [node(), "-e", RUNNER], input=payload, capture_output=True, text=True, check=True
    )
    result: list[str] = json.loads(done.stdout)
    return result


def fuzz_headers(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    headers = []
    for _ in range(count):
        parts = [rng.choice(ATOMS) + rng.choice(("", ",")) for _ in range(rng.randint(1, 5))]
        headers.append("".join(parts))
    return headers


def test_node_suite_passes() -> None:
    done = subprocess.run(
        [node(), "--test", str(CLOUDFRONT_DIR)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout


def test_rendered_function_fits_cloudfront_and_carries_the_formats() -> None:
    code = render_accept_function(("image/avif", "image/webp"))
    assert FORMATS_PLACEHOLDER not in code
    assert 'var FORMATS = ["image/avif", "image/webp"];' in code
    assert len(code.encode()) <= CLOUDFRONT_FUNCTION_MAX_BYTES
    assert "function handler(event)" in code


def test_table_outputs_are_canonical() -> None:
    for formats in FORMAT_SETS:
        table = [c for c in CASES if c["formats"] == formats]
        if not table:
            continue
        outputs = run_function(formats, [c["accept"] for c in table])
        for case, out in zip(table, outputs, strict=True):
            want = case["accept"] if case["expected"] is None else case["expected"]
            assert out == want, case


def _outcome(header: str | None, formats: Sequence[str]) -> str:
    try:
        return negotiate(header, formats)
    except ImageError as exc:
        return f"error {exc.status}"


@pytest.mark.parametrize("formats", FORMAT_SETS, ids=lambda f: "+".join(f))
def test_server_negotiates_the_same_for_forwarded_and_raw_accept(formats: list[str]) -> None:
    headers: list[str | None] = [c["accept"] for c in CASES]
    headers += fuzz_headers(1500, seed=len(formats) * 7 + len(formats[0]))
    forwarded = run_function(formats, headers)
    for raw, sent in zip(headers, forwarded, strict=True):
        outcome = _outcome(raw, formats)
        assert _outcome(sent, formats) == outcome, (raw, sent)
        if not outcome.startswith("error"):
            # The point of normalising: "*/*" or the negotiated type, not the browser's header.
            assert sent == "*/*" or sent.split(";")[0] in formats, (raw, sent)


def _params(header: str | None, formats: Sequence[str]) -> tuple[str, bool] | str:
    """What the origin takes from Accept with animated WebP on: the type, and whether a browser
    that gets AVIF takes WebP too (``ImageParams.also_webp``)."""
    config = load_images_config(json.dumps({"formats": list(formats)}))
    try:
        params = validate_params("url=/a.gif&w=640&q=75", header, config)
    except ImageError as exc:
        return f"error {exc.status}"
    return params.mime_type, params.also_webp


@pytest.mark.parametrize("formats", FORMAT_SETS, ids=lambda f: "+".join(f))
def test_with_animated_webp_the_origin_also_learns_whether_webp_is_taken(
    formats: list[str],
) -> None:
    headers: list[str | None] = [c["accept"] for c in CASES]
    headers += fuzz_headers(1500, seed=len(formats) * 11 + len(formats[0]))
    forwarded = run_function(formats, headers, animated_webp=True)
    for raw, sent in zip(headers, forwarded, strict=True):
        assert _params(sent, formats) == _params(raw, formats), (raw, sent)
    both = "image/avif,image/webp" in forwarded
    assert both == ({"image/avif", "image/webp"} <= set(formats))  # only with both formats
    chrome = "image/avif,image/webp,image/apng,*/*;q=0.8"
    assert run_function(formats, [chrome])[0].split(",")[0] in formats  # off: one type


def test_config_reader(tmp_path: Path) -> None:
    from next_image_cdk.bundled_config import bundle_images_config

    images = {"formats": ["image/avif", "image/webp"], "qualities": [50, 75]}
    config = {
        "images": images,
        "basePath": "",
        "env": {"X": "1"},
        "experimental": {"imgOptTimeoutInSeconds": 9, "other": True},
    }
    server_files = tmp_path / "required-server-files.json"
    server_files.write_text(json.dumps({"version": 1, "config": config}))
    bundled = bundle_images_config(next_dir=tmp_path)
    assert bundled.filename == "required-server-files.json"
    assert bundled.formats == ("image/avif", "image/webp")
    assert bundled.content["config"]["experimental"] == {"imgOptTimeoutInSeconds": 9}
    assert "env" not in bundled.content["config"]
    server_files.unlink()
    (tmp_path / "images-manifest.json").write_text(json.dumps({"version": 1, "images": images}))
    assert bundle_images_config(next_dir=tmp_path).filename == "images-manifest.json"
    assert bundle_images_config().formats == ("image/webp",)
    with pytest.raises(ValueError, match="formats"):
        _ = bundle_images_config({"formats": ["image/png"]}).formats
