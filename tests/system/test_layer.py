"""The Lambda layers: reproducible zips in Lambda's layout, and pyvips encoding from them alone."""

from __future__ import annotations

import json
import platform
import re
import sys
import zipfile
from pathlib import Path

import pytest

from layers.build_layer import (
    LAMBDA_UNZIPPED_LIMIT,
    ROOT,
    ZIP_EPOCH,
    LayerResult,
    build_layers,
    ensure_layers,
    manifest_path,
)
from layers.check_layer import LOCAL_ARCH, probe, unpack

LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
LAMBDA_DIST = ROOT / "layers" / "build" / "test-dist"
ELF_MACHINE = {"arm64": 183, "x86_64": 62}
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
README_LAYERS = re.compile(
    r"Together about (?P<mb>\d+(?:\.\d+)?) MB unzipped \(arm64, Python 3\.13\), "
    r"(?P<share>\d+)% of Lambda's 250 MiB limit"
)
README_CODE = re.compile(r"The function code is just `handler/` \(~(?P<kb>\d+) KB\)")


@pytest.fixture(scope="module")
def local_layers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LayerResult]:
    """Both layers built for this machine, as ``make check-layer`` builds them."""
    out = tmp_path_factory.mktemp("dist")
    arch = LOCAL_ARCH[platform.machine().lower()]
    return {r.name: r for r in build_layers(arch, LOCAL_PYTHON, out)}


def test_zips_are_in_lambda_layout_with_fixed_metadata(
    local_layers: dict[str, LayerResult],
) -> None:
    for result in local_layers.values():
        with zipfile.ZipFile(result.zip_path) as archive:
            infos = archive.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names)
        assert all(n.startswith("python/") for n in names)
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        assert not [n for n in names if n.startswith("python/bin/")]
        assert {i.date_time for i in infos} == {ZIP_EPOCH}
        assert {(i.external_attr >> 16) & 0o777 for i in infos} <= {0o644, 0o755}


def test_layers_split_without_overlap(local_layers: dict[str, LayerResult]) -> None:
    contents = {}
    for name, result in local_layers.items():
        with zipfile.ZipFile(result.zip_path) as archive:
            contents[name] = set(archive.namelist())
    assert not contents["pyvips"] & contents["deps"]
    assert {"pyvips", "pyvips-binary", "cffi"} <= set(local_layers["pyvips"].distributions)
    assert {"starlette", "mangum", "boto3", "ada-url"} <= set(local_layers["deps"].distributions)
    assert "uvicorn" not in local_layers["deps"].distributions
    total = sum(r.unzipped_bytes for r in local_layers.values())
    assert total < LAMBDA_UNZIPPED_LIMIT / 2


def test_rebuild_is_byte_identical(local_layers: dict[str, LayerResult], tmp_path: Path) -> None:
    again = build_layers(local_layers["pyvips"].arch, LOCAL_PYTHON, tmp_path, names=("pyvips",))
    assert again[0].sha256 == local_layers["pyvips"].sha256


def test_isolated_interpreter_encodes_every_format(
    local_layers: dict[str, LayerResult], tmp_path: Path
) -> None:
    unpack([Path(r.zip_path) for r in local_layers.values()], tmp_path)
    outcome = probe(tmp_path)
    assert set(outcome["encoded"]) == {".jpg", ".png", ".webp", ".avif"}
    assert outcome["api_mode"] is True
    assert outcome["libvips"] == "8.18.7"
    site_paths = [p for p in outcome["sys_path"] if "site-packages" in p]
    assert site_paths == []


def test_lambda_target_layers_hold_linux_binaries_for_the_runtime() -> None:
    """The arm64/python3.13 layers the stack deploys (shared with test_infra's synth)."""
    ensure_layers("arm64", "3.13", LAMBDA_DIST)
    with zipfile.ZipFile(LAMBDA_DIST / "pyvips-arm64.zip") as archive:
        names = archive.namelist()
        assert "python/_cffi_backend.cpython-313-aarch64-linux-gnu.so" in names
        libvips = next(n for n in names if "/libvips" in n and ".so" in n)
        header = archive.read(libvips)[:20]
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[18:20], "little") == ELF_MACHINE["arm64"]


def readme_text() -> str:
    """docs/deploy.md with its lines joined, so a sentence reads the same however it wraps."""
    return " ".join(DEPLOY_DOC.read_text().split())


def test_readme_states_the_size_of_the_layers_the_stack_deploys() -> None:
    """docs/deploy.md's figure is the arm64/python3.13 layers' unzipped size, as built."""
    ensure_layers("arm64", "3.13", LAMBDA_DIST)
    manifest = json.loads(manifest_path(LAMBDA_DIST, "arm64").read_text())
    assert manifest["python_version"] == "3.13"
    total = sum(layer["unzipped_bytes"] for layer in manifest["layers"].values())
    found = README_LAYERS.search(readme_text())
    assert found, f"docs/deploy.md states the layers' size as {README_LAYERS.pattern!r}"
    assert float(found["mb"]) * 1e6 == pytest.approx(total, rel=0.04), f"{total / 1e6:.1f} MB"
    assert abs(int(found["share"]) - 100 * total / LAMBDA_UNZIPPED_LIMIT) <= 1


def test_readme_states_the_size_of_the_function_code() -> None:
    """What the construct ships as the function's code: ``handler/`` without bytecode or the
    CLI (``handler/commands``)."""
    from next_image_cdk.bundled_config import bundle_images_config
    from next_image_cdk.construct import FUNCTION_CODE, stage_function_code

    staged = stage_function_code(FUNCTION_CODE, bundle_images_config())
    shipped = sum(path.stat().st_size for path in (staged / "handler").rglob("*") if path.is_file())
    found = README_CODE.search(readme_text())
    assert found, f"docs/deploy.md states the code's size as {README_CODE.pattern!r}"
    assert int(found["kb"]) * 1000 == pytest.approx(shipped, rel=0.25), f"{shipped / 1e3:.0f} KB"
