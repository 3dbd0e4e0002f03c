"""Prove the layers work: build them for this machine, unpack, encode with nothing else on the path.

Lambda's Python and architecture may differ from this machine's, so the check builds the same
layers for the local interpreter (same pins, same build code), unzips them into one empty folder
as Lambda does under ``/opt``, and runs a fresh ``python -I -S`` whose only extra ``sys.path``
entry is that folder's ``python/``. It fails unless pyvips loads libvips from the layer and encodes
JPEG, PNG, WebP and AVIF, and every runtime dependency imports from the layer.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TypedDict

from layers.build_layer import build_layers, print_report

LOCAL_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}

# Runs inside the isolated interpreter; prints one JSON line.
PROBE = r"""
import json, sys
layer = sys.argv[1]
sys.path.insert(0, layer)
import pyvips
image = pyvips.Image.black(64, 48, bands=3).draw_circle([255, 80, 0], 32, 24, 16, fill=True)
magic = {
    ".jpg": lambda b: b[:3] == b"\xff\xd8\xff",
    ".png": lambda b: b[:8] == b"\x89PNG\r\n\x1a\n",
    ".webp": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
    ".avif": lambda b: b[4:12] in (b"ftypavif", b"ftypavis"),
}
encoded = {}
for suffix, ok in magic.items():
    options = {} if suffix == ".png" else {"Q": 50}
    data = image.write_to_buffer(suffix, **options)
    back = pyvips.Image.new_from_buffer(data, "")
    if not ok(data) or (back.width, back.height) != (64, 48):
        raise SystemExit(f"bad {suffix} output")
    encoded[suffix] = len(data)
modules = {}
for name in ("starlette", "mangum", "httpx", "ada_url", "brotli",
             "boto3", "botocore", "aws_lambda_powertools", "cffi"):
    modules[name] = __import__(name).__file__
modules["pyvips"] = pyvips.__file__
outside = {k: v for k, v in modules.items() if not v.startswith(layer)}
if outside:
    raise SystemExit(f"imported from outside the layer: {outside}")
print(json.dumps({
    "libvips": pyvips.version_string() if hasattr(pyvips, "version_string")
    else ".".join(str(pyvips.version(i)) for i in range(3)),
    "api_mode": pyvips.API_mode,
    "encoded": encoded,
    "sys_path": sys.path,
}))
"""


class ProbeResult(TypedDict):
    libvips: str
    api_mode: bool
    encoded: dict[str, int]
    sys_path: list[str]


def probe(layer_root: Path) -> ProbeResult:
    """Run PROBE in ``python -I -S`` (no site-packages, no PYTHON* env) against ``layer_root``."""
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", PROBE, str(layer_root / "python")],
        capture_output=True,
        text=True,
        check=False,
        cwd=layer_root,
        env={"PATH": "/usr/bin:/bin"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"layer check failed:\n{done.stdout}\n{done.stderr}")
    result: ProbeResult = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def unpack(zips: list[Path], into: Path) -> None:
    for path in zips:
        with zipfile.ZipFile(path) as archive:
            archive.extractall(into)


def main() -> int:
    arch = LOCAL_ARCH[platform.machine().lower()]
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    with tempfile.TemporaryDirectory(prefix="check-layer-") as tmp_name:
        tmp = Path(tmp_name)
        results = build_layers(arch, python_version, out_dir=tmp / "dist")
        print_report(results)
        root = tmp / "opt"
        root.mkdir()
        unpack([Path(r.zip_path) for r in results], root)
        outcome = probe(root)
    print(f"layer check ({arch}, python{python_version}) passed: {json.dumps(outcome)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
