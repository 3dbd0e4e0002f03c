"""``make dist``: both distributions (wheel and sdist) and the Lambda layers, byte-reproducible.

One version for everything (``handler.__version__``, which ``next_image_cdk.__version__`` must
equal). Wheels are built from their sdists, as an installer would, without build isolation so
that the pinned setuptools decides the bytes; ``SOURCE_DATE_EPOCH`` fixes the wheels' timestamps
and the sdists are rewritten with fixed metadata. The layer zips are named for their runtime
(``pyvips-arm64-python3.13.zip``), the form ``NextImageOptimizer(layer_zips=...)`` takes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from layers.build_layer import build_layers

ROOT = Path(__file__).resolve().parent.parent
PROJECTS = (ROOT, ROOT / "infra")  # next-image-lambda, next-image-cdk
LAYER_TARGETS = tuple((arch, py) for arch in ("arm64", "x86_64") for py in ("3.12", "3.13"))
EPOCH = 315532800  # 1980-01-01, the earliest time a zip can hold


def build_distributions(out_dir: Path) -> list[Path]:
    """Each project's sdist, normalised, and its wheel built from that sdist."""
    built: list[Path] = []
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH), "PYTHONHASHSEED": "0"}
    for project in PROJECTS:
        for stale in project.glob("*.egg-info"):  # an old file list would reach the sdist
            shutil.rmtree(stale)
        with tempfile.TemporaryDirectory(prefix="next-image-dist-") as tmp_name:
            tmp = Path(tmp_name)
            run_build(["--sdist", "--outdir", str(tmp), str(project)], env)
            (sdist,) = tmp.glob("*.tar.gz")
            normalise_sdist(sdist)
            unpacked = tmp / "src"
            with tarfile.open(sdist) as archive:
                archive.extractall(unpacked, filter="data")
            (source,) = unpacked.iterdir()
            run_build(["--wheel", "--outdir", str(tmp), str(source)], env)
            for artifact in (sdist, *tmp.glob("*.whl")):
                built.append(Path(shutil.copy2(artifact, out_dir / artifact.name)))
    return built


def run_build(args: Sequence[str], env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "build", "--no-isolation", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")


def normalise_sdist(path: Path) -> None:
    """Sorted members, fixed times, owners and modes, and a gzip header without a date."""
    with tarfile.open(path) as source:
        members = sorted(source.getmembers(), key=lambda m: m.name)
        payload = io.BytesIO()
        with tarfile.open(fileobj=payload, mode="w", format=tarfile.PAX_FORMAT) as target:
            for member in members:
                data = source.extractfile(member) if member.isfile() else None
                member.mtime = EPOCH
                member.uid = member.gid = 0
                member.uname = member.gname = ""
                member.mode = 0o755 if member.isdir() or member.mode & 0o111 else 0o644
                member.pax_headers = {}
                target.addfile(member, data)
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped:
        zipped.write(payload.getvalue())


def build_layer_zips(out_dir: Path, targets: Sequence[tuple[str, str]]) -> list[Path]:
    built: list[Path] = []
    for arch, python_version in targets:
        with tempfile.TemporaryDirectory(prefix="next-image-layers-") as tmp_name:
            for result in build_layers(arch, python_version, Path(tmp_name)):
                name = f"{result.name}-{arch}-python{python_version}.zip"
                built.append(Path(shutil.copy2(result.zip_path, out_dir / name)))
    return built


def write_checksums(out_dir: Path) -> Path:
    lines = [
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}"
        for path in sorted(out_dir.iterdir())
        if path.is_file() and path.name != "SHA256SUMS"
    ]
    sums = out_dir / "SHA256SUMS"
    sums.write_text("\n".join(lines) + "\n")
    return sums


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "dist")
    parser.add_argument("--no-layers", action="store_true", help="the distributions only")
    args = parser.parse_args(argv)
    out: Path = args.out_dir
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    build_distributions(out)
    if not args.no_layers:
        build_layer_zips(out, LAYER_TARGETS)
    print(write_checksums(out).read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
