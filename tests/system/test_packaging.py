"""The two distributions as a user installs them: names, contents, one version, same bytes twice."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

import handler
import next_image_cdk
from handler.commands.loader import LOADER_NAME, loader_source
from layers.build_layer import REQUIREMENTS, lambda_requirements, read_requirements
from release.build import ROOT, build_distributions, write_checksums


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    return {path.name: path for path in build_distributions(out)}


def wheel(dists: dict[str, Path], name: str) -> zipfile.ZipFile:
    (found,) = (path for file, path in dists.items() if file.startswith(name) and ".whl" in file)
    return zipfile.ZipFile(found)


def test_the_construct_adds_only_its_own_import_name(dists: dict[str, Path]) -> None:
    with wheel(dists, "next_image_cdk-") as archive:
        names = archive.namelist()
        top_level = archive.read("next_image_cdk-0.3.0.dist-info/top_level.txt").decode().split()
        metadata = archive.read("next_image_cdk-0.3.0.dist-info/METADATA").decode()
    assert top_level == ["next_image_cdk"]
    assert {name.split("/")[0] for name in names} == {
        "next_image_cdk",
        "next_image_cdk-0.3.0.dist-info",
    }
    # The function's code and the layer recipe travel as data, without compiled leftovers.
    assert "next_image_cdk/function/handler/entry/lambda_handler.py" in names
    assert "next_image_cdk/function/handler/stores/s3.py" in names
    assert "next_image_cdk/cloudfront/normalize_accept.js" in names
    assert "next_image_cdk/cloudfront/static_site.js" in names
    for recipe in ("build_layer.py", "requirements.txt", "constraints.txt"):
        assert f"next_image_cdk/layer_recipe/{recipe}" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if "/function/handler/commands/" in n]  # the CLI: not run there
    # Compatible ranges, not pins.
    assert "Requires-Dist: aws-cdk-lib<3,>=2.275.0" in metadata
    assert "Requires-Dist: constructs<11,>=10.0.0" in metadata


def test_the_cli_keeps_the_emulators_behind_the_local_extra(dists: dict[str, Path]) -> None:
    with wheel(dists, "next_image_lambda-") as archive:
        metadata = archive.read("next_image_lambda-0.3.0.dist-info/METADATA").decode()
        entry_points = archive.read("next_image_lambda-0.3.0.dist-info/entry_points.txt").decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: moto")]
    assert requires == ['Requires-Dist: moto[s3,server]==5.2.5; extra == "local"']
    assert "next-image = handler.commands.cli:main" in entry_points
    always = [line for line in metadata.splitlines() if "Requires-Dist" in line]
    always = [line for line in always if "extra ==" not in line]
    assert not [line for line in always if "aws-cdk" in line or "moto" in line]
    assert [line for line in always if "pyvips" in line]


def test_the_cli_wheel_carries_the_loader_and_the_function_code_does_not(
    dists: dict[str, Path],
) -> None:
    """``next-image loader`` reads its module from the installed package's data."""
    with wheel(dists, "next_image_lambda-") as archive:
        shipped = archive.read(f"handler/commands/loader/{LOADER_NAME}").decode()
    assert shipped == loader_source()
    with wheel(dists, "next_image_cdk-") as archive:
        assert not [name for name in archive.namelist() if name.endswith(LOADER_NAME)]


def test_one_version_for_both_distributions_and_the_changelog(dists: dict[str, Path]) -> None:
    assert handler.__version__ == next_image_cdk.__version__
    version = handler.__version__
    assert {f"next_image_cdk-{version}.tar.gz", f"next_image_lambda-{version}.tar.gz"} <= set(dists)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    released = re.findall(r"^## (\d\S*)", changelog, re.MULTILINE)  # after any "## Unreleased"
    assert released[0] == version


def test_building_twice_gives_the_same_bytes(dists: dict[str, Path], tmp_path: Path) -> None:
    first = write_checksums(next(iter(dists.values())).parent).read_text()
    build_distributions(tmp_path)
    assert write_checksums(tmp_path).read_text() == first


def test_the_layer_requirements_are_pyprojects_less_the_serve_only_ones() -> None:
    """``layers/requirements.txt`` travels in next-image-cdk; ``--lock`` rewrites it."""
    assert read_requirements(REQUIREMENTS) == lambda_requirements()
    assert "uvicorn" not in REQUIREMENTS.read_text()
