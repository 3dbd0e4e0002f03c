"""Build the Lambda layers from manylinux wheels, without Docker.

Two layers per architecture, both laid out as ``python/...`` (on ``sys.path`` in every Python
runtime):

- ``pyvips-<arch>.zip``: pyvips, pyvips-binary (libvips and its codecs) and cffi. Large, native,
  rarely changes.
- ``deps-<arch>.zip``: every other runtime dependency in ``pyproject.toml`` (Starlette, Mangum,
  httpx, boto3, ...), minus what the pyvips layer already holds. Changes with routine bumps, so a
  dependency bump does not re-upload libvips.

The function's direct dependencies are pinned in ``requirements.txt`` (``pyproject.toml``'s, less
what only ``serve`` needs), transitive ones in ``constraints.txt``; ``--lock`` refreshes both from a
checkout. Both files travel with this module inside ``next-image-cdk``, which builds the layers at
synth time from them, so this module reads nothing outside its own folder at build time. Zips are
reproducible: sorted entries, fixed timestamps and modes, no ``__pycache__`` and no console
scripts (their shebangs name the build machine's interpreter).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).parent  # not resolved: inside next-image-cdk the recipe's files sit here
ROOT = Path(__file__).resolve().parent.parent  # the checkout, when run from one
PYPROJECT = ROOT / "pyproject.toml"
REQUIREMENTS = HERE / "requirements.txt"
CONSTRAINTS = HERE / "constraints.txt"
DEFAULT_OUT = ROOT / "layers" / "dist"

ARCHES = {"arm64": "aarch64", "x86_64": "x86_64"}
PYVIPS_LAYER = frozenset({"pyvips", "pyvips-binary"})
# Only needed by `next-image serve`: Lambda talks to Mangum, not to an ASGI server (so neither
# uvicorn nor its event loop and HTTP parser), and CloudWatch EMF carries its metrics, not
# Prometheus. tqdm draws `next-image warm`'s progress bar, and the function never warms.
NOT_ON_LAMBDA = frozenset({"uvicorn", "uvloop", "httptools", "prometheus-client", "tqdm"})
# pyvips 3.x is published as an sdist only; its wheel is pure Python (the native part,
# ``_libvips``, ships in pyvips-binary), so building it here is platform-neutral. Checked below.
SDIST_ALLOWED = frozenset({"pyvips"})
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
LAYER_NAMES = ("pyvips", "deps")


@dataclass(frozen=True)
class LayerResult:
    """What a build produced; also written to ``layers-<arch>.json`` for the CDK app to check."""

    name: str
    arch: str
    python_version: str
    zip_path: str
    sha256: str
    zipped_bytes: int
    unzipped_bytes: int
    files: int
    distributions: dict[str, str]
    largest: list[tuple[str, int]]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"cannot parse requirement {requirement!r}")
    return canonical(match.group(1))


def lambda_requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """``[project] dependencies`` less what only ``serve`` needs: ``requirements.txt``'s lines."""
    deps: list[str] = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [r for r in deps if requirement_name(r) not in NOT_ON_LAMBDA]


def read_requirements(path: Path = REQUIREMENTS) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def runtime_requirements(path: Path = REQUIREMENTS) -> dict[str, list[str]]:
    """Split the function's requirements into the two layers' requirement lists."""
    layers: dict[str, list[str]] = {"pyvips": [], "deps": []}
    for requirement in read_requirements(path):
        name = requirement_name(requirement)
        layers["pyvips" if name in PYVIPS_LAYER else "deps"].append(requirement)
    return layers


def platform_tags(arch: str) -> list[str]:
    """Every manylinux tag glibc 2.28+ accepts; pip does not widen ``--platform`` by itself."""
    machine = ARCHES[arch]
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(28, 16, -1)]
    return [*tags, f"manylinux2014_{machine}"]


def pip_target_args(arch: str, python_version: str) -> list[str]:
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python_version]
    for tag in platform_tags(arch):
        args += ["--platform", tag]
    return args


class LayerBuildError(RuntimeError):
    """pip could not produce a layer; ``missing`` names the wheel it could not get, if any."""

    def __init__(self, message: str, missing: str | None = None) -> None:
        super().__init__(message)
        self.missing = missing


def run_pip(args: Sequence[str]) -> str:
    command = [sys.executable, "-m", "pip", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return done.stdout
    output = f"{done.stdout}\n{done.stderr}"
    if "No module named pip" in output:
        raise LayerBuildError(f"{sys.executable} has no pip: `{sys.executable} -m ensurepip`")
    missing = re.search(r"satisfies the requirement ([^\s(]+)", output)
    if missing:
        name = missing.group(1)
        raise LayerBuildError(
            f"pip cannot get {name}: is PyPI (or your index) reachable? Offline, pass prebuilt "
            "layer zips or layer ARNs instead.\n" + done.stderr.strip(),
            missing=name,
        )
    raise LayerBuildError(f"pip failed: {' '.join(command)}\n{output}")


def build_sdist_wheels(requirements: Iterable[str], wheelhouse: Path) -> None:
    """Build the allowed sdist-only packages into ``wheelhouse``; refuse non-pure results."""
    for requirement in requirements:
        if requirement_name(requirement) not in SDIST_ALLOWED:
            continue
        pinned = requirement.split("[", 1)[0] + requirement.split("]", 1)[-1]
        run_pip(["wheel", "-q", "--no-deps", "-w", str(wheelhouse), pinned.strip()])
    for wheel in wheelhouse.glob("*.whl"):
        if not wheel.name.endswith("-py3-none-any.whl"):
            raise RuntimeError(f"{wheel.name} is not pure Python; it cannot go into a layer")


def install(
    requirements: Sequence[str], target: Path, arch: str, python_version: str, wheelhouse: Path
) -> None:
    run_pip(
        [
            "install",
            "-q",
            "--no-compile",
            "--target",
            str(target),
            "--find-links",
            str(wheelhouse),
            "--constraint",
            str(CONSTRAINTS),
            *pip_target_args(arch, python_version),
            *requirements,
        ]
    )


def layer_files(site: Path, exclude: frozenset[str] = frozenset()) -> list[tuple[str, Path]]:
    """Files to ship as ``(archive name, path)``, sorted; ``exclude`` holds site-relative paths."""
    files: list[tuple[str, Path]] = []
    for path in site.rglob("*"):
        rel = path.relative_to(site).as_posix()
        if path.is_symlink():
            raise RuntimeError(f"symlink in layer tree: {rel}")
        if not path.is_file() or rel in exclude:
            continue
        if rel.startswith("bin/") or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        files.append((f"python/{rel}", path))
    return sorted(files)


def write_reproducible_zip(files: Sequence[tuple[str, Path]], zip_path: Path) -> None:
    """Same inputs, same bytes: fixed timestamps and modes, entries in the given (sorted) order."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name, path in files:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.create_system = 3  # unix, so the mode below is honoured on extraction
            mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes(), compresslevel=6)
    tmp.replace(zip_path)


def installed_distributions(site: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for dist_info in site.glob("*.dist-info"):
        name, _, version = dist_info.name.removesuffix(".dist-info").rpartition("-")
        found[canonical(name)] = version
    return dict(sorted(found.items()))


def check_pinned(distributions: dict[str, str], requirements: Sequence[str]) -> None:
    """Every shipped distribution must be pinned, or a rebuild could silently change versions."""
    pins = read_pins(CONSTRAINTS)
    for requirement in requirements:
        name = requirement_name(requirement)
        match = re.search(r"==\s*([^\s;,]+)", requirement)
        if match:
            pins[name] = match.group(1)
    loose = {name: v for name, v in distributions.items() if pins.get(name) != v}
    if loose:
        raise RuntimeError(f"not pinned in {CONSTRAINTS.name} (run --lock): {loose}")


def read_pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonical(name)] = version.strip()
    return pins


def report(
    files: Sequence[tuple[str, Path]],
    zip_path: Path,
    distributions: dict[str, str],
    **meta: str,
) -> LayerResult:
    sizes: dict[str, int] = {}
    total = 0
    for name, path in files:
        size = path.stat().st_size
        total += size
        top = name.split("/")[1]
        sizes[top] = sizes.get(top, 0) + size
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:8]
    data = zip_path.read_bytes()
    return LayerResult(
        name=meta["name"],
        arch=meta["arch"],
        python_version=meta["python_version"],
        zip_path=str(zip_path),
        sha256=hashlib.sha256(data).hexdigest(),
        zipped_bytes=len(data),
        unzipped_bytes=total,
        files=len(files),
        distributions=distributions,
        largest=largest,
    )


def build_layers(
    arch: str, python_version: str, out_dir: Path = DEFAULT_OUT, names: Sequence[str] = LAYER_NAMES
) -> list[LayerResult]:
    """Build the named layers into ``out_dir`` and write the ``layers-<arch>.json`` manifest."""
    requirements = runtime_requirements()
    results: list[LayerResult] = []
    with tempfile.TemporaryDirectory(prefix="layer-") as tmp_name:
        tmp = Path(tmp_name)
        wheelhouse = tmp / "wheels"
        wheelhouse.mkdir()
        build_sdist_wheels([*requirements["pyvips"], *requirements["deps"]], wheelhouse)
        pyvips_site = tmp / "pyvips"
        install(requirements["pyvips"], pyvips_site, arch, python_version, wheelhouse)
        pyvips_rel = frozenset(
            p.relative_to(pyvips_site).as_posix() for p in pyvips_site.rglob("*") if p.is_file()
        )
        sites = {"pyvips": (pyvips_site, frozenset[str]())}
        if "deps" in names:
            all_site = tmp / "all"
            all_reqs = [*requirements["pyvips"], *requirements["deps"]]
            install(all_reqs, all_site, arch, python_version, wheelhouse)
            sites["deps"] = (all_site, pyvips_rel)
        for name in names:
            site, exclude = sites[name]
            files = layer_files(site, exclude)
            zip_path = out_dir / f"{name}-{arch}.zip"
            write_reproducible_zip(files, zip_path)
            dists = installed_distributions(site)
            if name == "deps":
                pyvips_dists = installed_distributions(pyvips_site)
                dists = {k: v for k, v in dists.items() if k not in pyvips_dists}
            check_pinned(dists, [*requirements["pyvips"], *requirements["deps"]])
            results.append(
                report(files, zip_path, dists, name=name, arch=arch, python_version=python_version)
            )
    write_manifest(out_dir, arch, python_version, results)
    return results


def inputs_digest(arch: str, python_version: str) -> str:
    """Hash of everything that decides a layer's bytes; lets ``--if-stale`` skip a rebuild."""
    digest = hashlib.sha256(f"{arch} {python_version}".encode())
    for path in (Path(__file__), REQUIREMENTS, CONSTRAINTS):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def manifest_path(out_dir: Path, arch: str) -> Path:
    return out_dir / f"layers-{arch}.json"


def write_manifest(
    out_dir: Path, arch: str, python_version: str, results: Sequence[LayerResult]
) -> None:
    manifest = {
        "arch": arch,
        "python_version": python_version,
        "inputs": inputs_digest(arch, python_version),
        "layers": {r.name: {**asdict(r), "zip_path": Path(r.zip_path).name} for r in results},
    }
    manifest_path(out_dir, arch).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def is_current(out_dir: Path, arch: str, python_version: str) -> bool:
    path = manifest_path(out_dir, arch)
    if not path.exists():
        return False
    manifest = json.loads(path.read_text())
    zips_present = all((out_dir / f"{name}-{arch}.zip").exists() for name in LAYER_NAMES)
    return bool(manifest.get("inputs") == inputs_digest(arch, python_version) and zips_present)


def ensure_layers(arch: str, python_version: str, out_dir: Path = DEFAULT_OUT) -> bool:
    """Build unless ``out_dir`` already holds layers from identical inputs; True if built."""
    if is_current(out_dir, arch, python_version):
        return False
    print_report(build_layers(arch, python_version, out_dir))
    return True


def lock(python_version: str) -> None:
    """Copy the pins from ``pyproject.toml``, resolve both architectures, pin the rest."""
    header = "# The function's runtime dependencies, pinned (pyproject's, less serve-only ones)"
    REQUIREMENTS.write_text(
        "\n".join([f"{header}; regenerate:", "# python -m layers.build_layer --lock"])
        + "\n"
        + "\n".join(lambda_requirements())
        + "\n"
    )
    requirements = runtime_requirements()
    direct = {requirement_name(r) for reqs in requirements.values() for r in reqs}
    pins: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="layer-lock-") as tmp_name:
        wheelhouse = Path(tmp_name)
        build_sdist_wheels([*requirements["pyvips"], *requirements["deps"]], wheelhouse)
        for arch in ARCHES:
            out = run_pip(
                [
                    "install",
                    "-q",
                    "--dry-run",
                    "--ignore-installed",
                    "--report",
                    "-",
                    "--target",
                    str(wheelhouse / "unused"),
                    "--find-links",
                    str(wheelhouse),
                    *pip_target_args(arch, python_version),
                    *requirements["pyvips"],
                    *requirements["deps"],
                ]
            )
            for item in json.loads(out)["install"]:
                name = canonical(item["metadata"]["name"])
                if name not in direct:
                    pins[name] = item["metadata"]["version"]
    lines = [f"{name}=={version}" for name, version in sorted(pins.items())]
    header = "# Transitive pins for the layers; regenerate: python -m layers.build_layer --lock"
    CONSTRAINTS.write_text("\n".join([header, *lines]) + "\n")


def print_report(results: Sequence[LayerResult]) -> None:
    total = 0
    for r in results:
        total += r.unzipped_bytes
        print(
            f"{Path(r.zip_path).name}: {r.zipped_bytes / 1e6:.1f} MB zipped, "
            f"{r.unzipped_bytes / 1e6:.1f} MB unzipped, {r.files} files, sha256 {r.sha256[:16]}"
        )
        for top, size in r.largest:
            print(f"    {size / 1e6:7.2f} MB  {top}")
    share = 100 * total / LAMBDA_UNZIPPED_LIMIT
    print(f"layers together: {total / 1e6:.1f} MB unzipped = {share:.0f}% of Lambda's 250 MiB")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--arch", choices=sorted(ARCHES), default="arm64")
    parser.add_argument("--python-version", default="3.13")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--if-stale", action="store_true", help="skip if inputs are unchanged")
    parser.add_argument("--lock", action="store_true", help="rewrite constraints.txt and exit")
    args = parser.parse_args(argv)
    if args.lock:
        lock(args.python_version)
        print(f"wrote {REQUIREMENTS} and {CONSTRAINTS}")
        return 0
    if args.if_stale:
        if not ensure_layers(args.arch, args.python_version, args.out_dir):
            print(f"layers for {args.arch}/python{args.python_version} are up to date")
        return 0
    print_report(build_layers(args.arch, args.python_version, args.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
