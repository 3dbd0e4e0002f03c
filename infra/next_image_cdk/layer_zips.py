"""Where the function's layers come from at synth: the user's zips, a built folder, or a cache.

Native code built on the deployer's machine is what breaks deploys (a wheel for the wrong
architecture), so nothing here compiles: the layers are the pinned manylinux wheels for the
function's architecture and Python, unpacked by pip into a user cache folder keyed on the pins
and reused by every later synth, in any app on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from next_image_cdk.layer_recipe.build_layer import (
    LAYER_NAMES,
    LayerBuildError,
    build_layers,
    inputs_digest,
    is_current,
)

CACHE_ENV = "NEXT_IMAGE_CDK_CACHE"

__all__ = ["CACHE_ENV", "LayerBuildError", "cached_layers", "default_cache_dir", "read_manifest"]


def default_cache_dir() -> Path:
    """``$NEXT_IMAGE_CDK_CACHE``, else ``$XDG_CACHE_HOME/next-image-cdk``, else ``~/.cache/...``."""
    if override := os.environ.get(CACHE_ENV):
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "next-image-cdk"


def read_manifest(layers_dir: Path, arch: str, python_version: str) -> dict[str, Path]:
    """The layer zips in ``layers_dir``, after checking they were built for this runtime."""
    manifest_path = layers_dir / f"layers-{arch}.json"
    hint = f"run `make layer ARCH={arch} PYTHON_VERSION={python_version}`"
    if not manifest_path.exists():
        raise FileNotFoundError(f"no layers in {layers_dir}: {hint}")
    manifest = json.loads(manifest_path.read_text())
    if manifest["python_version"] != python_version or manifest["arch"] != arch:
        raise ValueError(
            f"{manifest_path} is for python{manifest['python_version']}/{manifest['arch']}: {hint}"
        )
    return {name: layers_dir / f"{name}-{arch}.zip" for name in LAYER_NAMES}


def cached_layers(arch: str, python_version: str, cache_dir: Path | None = None) -> dict[str, Path]:
    """The layers for this runtime from the cache, built there first if the pins are new.

    A build goes to a temporary folder beside its final one and is renamed into place, so two
    synths at once never see half a layer.
    """
    root = cache_dir or default_cache_dir()
    folder = root / f"{arch}-python{python_version}-{inputs_digest(arch, python_version)[:16]}"
    if not is_current(folder, arch, python_version):
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
        try:
            build_layers(arch, python_version, staging)
        except BaseException as error:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(error, LayerBuildError):
                raise LayerBuildError(
                    f"building the python{python_version}/{arch} layers into {root}: {error}",
                    missing=error.missing,
                ) from error
            raise
        if folder.exists():  # left incomplete by a synth that was killed
            shutil.rmtree(folder, ignore_errors=True)
        try:
            staging.rename(folder)
        except OSError:  # another synth got there first with the same pins
            shutil.rmtree(staging, ignore_errors=True)
    return read_manifest(folder, arch, python_version)
