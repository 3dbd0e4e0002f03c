"""Prove the arm64 layers and the function code run: Debian's aarch64 CPython under qemu-user.

``make check-layer`` runs layers built for this machine's architecture; Lambda's default is arm64.
This check builds the arm64 layers for Lambda's Python (``python -m layers.build_layer``), unzips
them into one folder as Lambda does under ``/opt``, stages the function code as the construct does
(``handler/`` and ``next-image-config/images-config.json``) and runs both in an aarch64 CPython
from Debian's arm64 packages, emulated by ``qemu-aarch64-static -cpu neoverse-n1 -L <sysroot>``:

- pyvips encodes JPEG, PNG, WebP and AVIF with the layer's libvips and decodes them back;
- ``handler.entry.lambda_handler.handler`` answers two Function URL events (``events/``: AVIF and
  WebP Accept) against moto's S3 server on this machine's loopback, reading a source image seeded in
  the assets bucket and storing the variant in the variants bucket.

This machine then decodes the bodies (format, width) and finds each variant in the bucket.

The sysroot is the dependency closure of ``python3.X-minimal`` and ``libpython3.X-stdlib`` (and
libstdc++, which libvips needs) in the Debian release that ships that Python: trixie for 3.13,
bookworm for 3.11. Packages come through apt with a private configuration and state (the host's
apt is not touched; signatures are checked against the host's Debian keyring) and are unpacked
with ``dpkg-deb -x``. It is cached under ``~/.cache/next-image/arm64-sysroot``, keyed on the
package versions, so only the first run downloads it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.moto_server import loopback_client, moto_server

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "next-image"
SYSROOTS = CACHE / "arm64-sysroot"

DEBIAN_ARCH = "arm64"
MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# The Debian release whose default python3 is this version.
SUITES = {"3.13": "trixie", "3.11": "bookworm"}
FALLBACK_PYTHON = "3.11"
QEMU = "qemu-aarch64-static"
# Lambda's arm64 is Graviton2, a Neoverse N1. qemu's default CPU ("max") would also emulate
# pointer authentication, which trixie's binaries use (branch protection) and which costs qemu
# about six times the run time.
QEMU_CPU = "neoverse-n1"
# Depended on for installing (maintainer scripts, debconf) or for data the check never reads;
# none is needed to run python. tzdata alone is ~20 MB unpacked.
SKIP = frozenset({"debconf", "dpkg", "perl-base", "install-info", "tzdata", "readline-common"})
# Top-level folders that are symlinks into /usr on a merged-/usr Debian (base-files makes them).
MERGED_DIRS = ("bin", "sbin", "lib")
# Bump to rebuild every cached sysroot after changing how one is assembled.
SYSROOT_LAYOUT = "1"

BUCKET = "next-image-variants"
ASSETS_BUCKET = "next-image-assets"
ASSETS_PREFIX = "_assets/"
IMAGES_CONFIG = {"formats": ["image/avif", "image/webp"]}
CONFIG_DIR = "next-image-config"
CONFIG_FILE = "images-config.json"
SOURCE_SIZE = (1200, 800)
# What each event must produce: (event file, content type, width of the result).
CASES = {
    "avif": ("function-url-avif.json", "image/avif", 640),
    "webp": ("function-url-relative.json", "image/webp", 640),
}
LOADERS = {"image/avif": "heifload_buffer", "image/webp": "webpload_buffer"}
RESULT_MARK = "ARM64-CHECK-RESULT "


@dataclass(frozen=True)
class Package:
    """One binary package's record from a Packages index: what the closure needs of it."""

    name: str
    version: str
    depends: tuple[tuple[str, ...], ...]  # each entry a list of alternatives
    provides: tuple[str, ...] = ()


def relation_names(field: str) -> tuple[tuple[str, ...], ...]:
    """``a (>= 1) | b:any, c [arm64]`` -> ``(("a", "b"), ("c",))``: names only, in order."""
    groups: list[tuple[str, ...]] = []
    for group in field.split(","):
        names = []
        for alternative in group.split("|"):
            match = re.match(r"\s*([a-z0-9][a-z0-9+.-]*)", alternative)
            if match:
                names.append(match.group(1))
        if names:
            groups.append(tuple(names))
    return tuple(groups)


def parse_packages(text: str) -> dict[str, Package]:
    """Records of a Packages file (or ``apt-cache dumpavail``), by name; first record wins."""
    index: dict[str, Package] = {}
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t"):
                if key:
                    fields[key] += " " + line.strip()
                continue
            key, sep, value = line.partition(":")
            if not sep:
                key = ""
                continue
            fields[key] = value.strip()
        if "Package" not in fields or fields["Package"] in index:
            continue
        relations = ", ".join(f for f in (fields.get("Pre-Depends"), fields.get("Depends")) if f)
        index[fields["Package"]] = Package(
            name=fields["Package"],
            version=fields.get("Version", ""),
            depends=relation_names(relations),
            provides=tuple(names[0] for names in relation_names(fields.get("Provides", ""))),
        )
    return index


def resolve(
    index: Mapping[str, Package], roots: Sequence[str], skip: frozenset[str] = SKIP
) -> list[Package]:
    """The dependency closure of ``roots`` (Depends and Pre-Depends), sorted by name.

    For each dependency the first alternative wins: a real package of that name, else the first
    provider by name. A name in ``skip`` ends its branch; a dependency nothing satisfies is an
    error.
    """
    providers: dict[str, list[str]] = {}
    for package in index.values():
        for virtual in package.provides:
            providers.setdefault(virtual, []).append(package.name)

    def pick(alternatives: Sequence[str], wanted_by: str) -> str | None:
        for name in alternatives:
            if name in skip:
                return None
            if name in index:
                return name
            if name in providers:
                return sorted(providers[name])[0]
        raise LookupError(f"{wanted_by}: nothing satisfies {' | '.join(alternatives)}")

    chosen: dict[str, Package] = {}
    todo = list(reversed(roots))  # a stack: roots in the given order
    while todo:
        name = todo.pop()
        if name in chosen:
            continue
        if name not in index:
            raise LookupError(f"package {name} is not in the index")
        package = index[name]
        chosen[name] = package
        for alternatives in package.depends:
            picked = pick(alternatives, name)
            if picked is not None:
                todo.append(picked)
    return sorted(chosen.values(), key=lambda p: p.name)


def roots_for(python_version: str) -> list[str]:
    """What running ``python3.X`` with its standard library and the layer's libvips takes."""
    return [f"python{python_version}-minimal", f"libpython{python_version}-stdlib", "libstdc++6"]


def sysroot_key(suite: str, packages: Sequence[Package]) -> str:
    """Names a sysroot after its contents: same package versions, same folder."""
    digest = hashlib.sha256(f"{SYSROOT_LAYOUT} {suite} {DEBIAN_ARCH}\n".encode())
    for package in sorted(packages, key=lambda p: p.name):
        digest.update(f"{package.name} {package.version}\n".encode())
    return f"{suite}-{digest.hexdigest()[:16]}"


class PrivateApt:
    """apt for one Debian suite on arm64, with its own sources, lists and dpkg status.

    Everything lives under ``home``; the host's sources, lists and architectures are untouched
    (its apt.conf.d still applies, so a configured proxy is used).
    """

    def __init__(self, home: Path, suite: str) -> None:
        self.home = home
        self.suite = suite
        self.config = home / "apt.conf"

    def prepare(self) -> None:
        for sub in ("lists/partial", "cache/archives/partial", "sources.list.d", "prefs.d"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        (self.home / "status").touch()
        (self.home / "sources.list").write_text(
            f"deb [arch={DEBIAN_ARCH} signed-by={KEYRING}] {MIRROR} {self.suite} main\n"
        )
        h = self.home
        options = {
            "Dir::Etc::SourceList": h / "sources.list",
            "Dir::Etc::SourceParts": h / "sources.list.d",
            "Dir::Etc::Preferences": h / "preferences",
            "Dir::Etc::PreferencesParts": h / "prefs.d",
            "Dir::State": h,
            "Dir::State::Lists": h / "lists",
            "Dir::State::status": h / "status",
            "Dir::Cache": h / "cache",
            "APT::Architecture": DEBIAN_ARCH,
            "APT::Sandbox::User": "root",
        }
        lines = [f'{key} "{value}";' for key, value in options.items()]
        lines.append(f'APT::Architectures {{ "{DEBIAN_ARCH}"; }};')
        self.config.write_text("\n".join(lines) + "\n")

    def run(self, args: Sequence[str], cwd: Path | None = None) -> str:
        env = {**os.environ, "APT_CONFIG": str(self.config), "DEBIAN_FRONTEND": "noninteractive"}
        done = subprocess.run(
            list(args), capture_output=True, text=True, env=env, cwd=cwd, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def has_lists(self) -> bool:
        return any((self.home / "lists").glob("*_Packages*"))

    def update(self) -> None:
        """Refresh the index; with an index from an earlier run, a failure only warns."""
        try:
            self.run(["apt-get", "update", "-qq", "-o", "APT::Update::Error-Mode=any"])
        except RuntimeError as err:
            if not self.has_lists():
                raise
            print(f"warning: apt-get update failed, using the index of an earlier run: {err}")

    def index(self) -> dict[str, Package]:
        return parse_packages(self.run(["apt-cache", "dumpavail"]))

    def download(self, packages: Sequence[Package], into: Path) -> list[Path]:
        self.run(["apt-get", "download", "-qq", *(f"{p.name}={p.version}" for p in packages)], into)
        debs = sorted(into.glob("*.deb"))
        if len(debs) != len(packages):
            raise RuntimeError(f"downloaded {len(debs)} .deb files for {len(packages)} packages")
        return debs


def merge_usr(root: Path) -> None:
    """Make ``/bin``, ``/sbin`` and ``/lib`` links into ``/usr``, as base-files does.

    trixie's packages ship only ``/usr`` (the loader, ``/lib/ld-linux-aarch64.so.1``, is found
    through the link); bookworm's still ship some files under ``/lib``, moved here.
    """
    for name in MERGED_DIRS:
        top, usr = root / name, root / "usr" / name
        usr.mkdir(parents=True, exist_ok=True)
        if top.is_symlink():
            continue
        if top.is_dir():
            for path in sorted(top.rglob("*")):
                target = usr / path.relative_to(top)
                if path.is_dir() and not path.is_symlink():
                    target.mkdir(exist_ok=True)
                elif not target.exists() and not target.is_symlink():
                    path.rename(target)
            shutil.rmtree(top)
        top.symlink_to(Path("usr") / name)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One run at a time prepares sysroots (apt's own locks fail rather than wait)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Sysroot:
    path: Path
    suite: str
    python_version: str
    packages: tuple[Package, ...]
    downloaded: bool

    @property
    def python(self) -> Path:
        return self.path / "usr" / "bin" / f"python{self.python_version}"


def ensure_sysroot(python_version: str, cache: Path = SYSROOTS) -> Sysroot:
    """The cached sysroot for the current package versions, downloaded and unpacked if missing."""
    suite = SUITES[python_version]
    with locked(cache / ".lock"):
        apt = PrivateApt(cache / f"apt-{suite}", suite)
        apt.prepare()
        apt.update()
        packages = resolve(apt.index(), roots_for(python_version))
        target = cache / sysroot_key(suite, packages)
        done = target / ".complete"
        if done.exists():
            return Sysroot(target, suite, python_version, tuple(packages), downloaded=False)
        shutil.rmtree(target, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="debs-", dir=cache) as debs_dir:
            debs = apt.download(packages, Path(debs_dir))
            staging = cache / f".{target.name}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            for deb in debs:
                subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
            merge_usr(staging)
            manifest = "".join(f"{p.name} {p.version}\n" for p in packages)
            (staging / "packages.txt").write_text(manifest)
            (staging / done.name).touch()
            staging.rename(target)
        for old in cache.glob(f"{suite}-*"):  # earlier versions of this suite's sysroot
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
        return Sysroot(target, suite, python_version, tuple(packages), downloaded=True)


def choose_sysroot(python_version: str) -> Sysroot:
    """The requested Python's sysroot; bookworm's 3.11 if its Debian release is unreachable."""
    try:
        return ensure_sysroot(python_version)
    except (RuntimeError, LookupError) as err:
        if python_version == FALLBACK_PYTHON:
            raise
        print(f"warning: no python{python_version} sysroot ({err}); falling back to python3.11")
        return ensure_sysroot(FALLBACK_PYTHON)


def build_arm64_layers(python_version: str, out_dir: Path) -> list[Path]:
    """The arm64 layers from the project's builder, as ``make layer`` builds them."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "layers.build_layer",
            "--arch",
            "arm64",
            "--python-version",
            python_version,
            "--out-dir",
            str(out_dir),
        ],
        check=True,
        cwd=ROOT,
    )
    manifest = json.loads((out_dir / "layers-arm64.json").read_text())
    if manifest["python_version"] != python_version:
        raise RuntimeError(f"layers built for {manifest['python_version']}, not {python_version}")
    return [out_dir / layer["zip_path"] for layer in manifest["layers"].values()]


def unpack_layers(zips: Sequence[Path], opt: Path) -> None:
    """Every layer into one folder, later ones over earlier ones, as Lambda fills ``/opt``."""
    for path in zips:
        with zipfile.ZipFile(path) as archive:
            archive.extractall(opt)


def stage_function_code(task: Path) -> Path:
    """The function code as the construct ships it: ``handler/`` and the images config."""
    from next_image_cdk.construct import NOT_SHIPPED

    shutil.copytree(ROOT / "handler", task / "handler", ignore=NOT_SHIPPED)
    config = task / CONFIG_DIR / CONFIG_FILE
    config.parent.mkdir()
    config.write_text(json.dumps(IMAGES_CONFIG, indent=1, sort_keys=True) + "\n")
    return config


def source_image() -> bytes:
    """A JPEG with gradients and a disc, so every encoder has detail to work on."""
    import pyvips

    width, height = SOURCE_SIZE
    xyz = pyvips.Image.xyz(width, height)
    red = xyz[0] * (255 / width)
    green = xyz[1] * (255 / height)
    image = red.bandjoin([green, (red + green) / 2]).cast("uchar")
    image = image.draw_circle([250, 250, 250], width // 2, height // 2, height // 4, fill=True)
    data: bytes = image.write_to_buffer(".jpg", Q=90)
    return data


# Runs in the emulated aarch64 python (``-I -S``): argv is the layer's python/ folder, the task
# root and a JSON file of events. Lambda's own order: the function code, then /opt/python.
PROBE = r"""
import json, platform, sys, time
layer, task, events_path = sys.argv[1:4]
sys.path[0:0] = [task, layer]
started = time.monotonic()
import pyvips
magic = {
    ".jpg": lambda b: b[:3] == b"\xff\xd8\xff",
    ".png": lambda b: b[:8] == b"\x89PNG\r\n\x1a\n",
    ".webp": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
    ".avif": lambda b: b[4:12] in (b"ftypavif", b"ftypavis"),
}
image = pyvips.Image.black(64, 48, bands=3).draw_circle([255, 80, 0], 32, 24, 16, fill=True)
encoded = {}
for suffix, ok in magic.items():
    data = image.write_to_buffer(suffix, **({} if suffix == ".png" else {"Q": 50}))
    back = pyvips.Image.new_from_buffer(data, "")
    if not ok(data) or (back.width, back.height) != (64, 48):
        raise SystemExit(f"bad {suffix} output")
    encoded[suffix] = len(data)
encode_seconds = time.monotonic() - started

class Context:
    function_name = "next-image"
    memory_limit_in_mb = 2048
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:next-image"
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    def get_remaining_time_in_millis(self):
        return 300_000

started = time.monotonic()
from handler.entry.lambda_handler import handler
init_seconds = time.monotonic() - started
responses, seconds = {}, {}
for name, event in json.load(open(events_path)).items():
    started = time.monotonic()
    responses[name] = handler(event, Context())
    seconds[name] = time.monotonic() - started
prefixes = (sys.prefix + "/", layer + "/", task + "/")
outside = sorted(
    f"{name}: {module.__file__}" for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None) and not module.__file__.startswith(prefixes)
)
if outside:
    raise SystemExit(f"imported from outside the sysroot, layer and task: {outside}")
print(__MARK__ + json.dumps({
    "python": sys.version,
    "machine": platform.machine(),
    "prefix": sys.prefix,
    "libvips": ".".join(str(pyvips.version(i)) for i in range(3)),
    "pyvips": pyvips.__file__,
    "handler": sys.modules["handler"].__file__,
    "encoded": encoded,
    "encode_seconds": encode_seconds,
    "init_seconds": init_seconds,
    "invoke_seconds": seconds,
    "responses": responses,
}))
""".replace("__MARK__", repr(RESULT_MARK))


def guest_environment(endpoint: str, config: Path, home: Path) -> dict[str, str]:
    """What the function sees on Lambda (the construct's NEXT_IMAGE_*), S3 being moto's."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
        "POWERTOOLS_METRICS_NAMESPACE": "NextImageArm64Check",
        "NEXT_IMAGE_STORE": "s3",
        "NEXT_IMAGE_BUCKET": BUCKET,
        "NEXT_IMAGE_PREFIX": "",
        "NEXT_IMAGE_ASSETS_BUCKET": ASSETS_BUCKET,
        "NEXT_IMAGE_ASSETS_PREFIX": ASSETS_PREFIX,
        "NEXT_IMAGE_CONFIG": str(config),
        # Emulation is slower than Lambda by an order of magnitude; neither the budget nor the
        # store's timeout (a store call past it is abandoned, and not waited for at the end of
        # the invocation) may decide the answer.
        "NEXT_IMAGE_TIMEOUT": "300",
        "NEXT_IMAGE_STORE_TIMEOUT": "120",
    }


def run_guest(
    sysroot: Sysroot, qemu: str, opt: Path, task: Path, events: Path, env: Mapping[str, str]
) -> dict[str, Any]:
    """The probe in the emulated python, isolated (``-I -S``: no site-packages, no PYTHON*)."""
    command = [qemu, "-cpu", QEMU_CPU, "-L", str(sysroot.path), str(sysroot.python)]
    command += ["-I", "-S", "-c", PROBE]
    command += [str(opt / "python"), str(task), str(events)]
    done = subprocess.run(
        command, capture_output=True, text=True, env=dict(env), cwd=task, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"arm64 run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix(RESULT_MARK))
    return result


def header(response: Mapping[str, Any], name: str) -> str:
    headers: Mapping[str, str] = response.get("headers") or {}
    return next((v for k, v in headers.items() if k.lower() == name), "")


def check_response(name: str, response: Mapping[str, Any], s3: Any) -> str:
    """Status, type, decoded format and width, and the same bytes stored as a variant."""
    import pyvips

    _, content_type, width = CASES[name]
    status = response.get("statusCode")
    if status != 200 or not response.get("isBase64Encoded"):
        raise RuntimeError(f"{name}: status {status}: {str(response.get('body'))[:500]}")
    if header(response, "content-type") != content_type:
        raise RuntimeError(f"{name}: Content-Type {header(response, 'content-type')!r}")
    body = base64.b64decode(response["body"])
    image = pyvips.Image.new_from_buffer(body, "")
    loader = image.get("vips-loader")
    if loader != LOADERS[content_type] or image.width != width:
        raise RuntimeError(f"{name}: decoded by {loader} as {image.width}x{image.height}")
    if content_type == "image/avif" and image.get("heif-compression") != "av1":
        raise RuntimeError(f"{name}: HEIF compression {image.get('heif-compression')}")
    cache = header(response, "x-nextjs-cache")
    if cache != "MISS":
        raise RuntimeError(f"{name}: X-Nextjs-Cache {cache!r} (a fresh bucket must miss)")
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="_next/image-variants/")
    for item in listed.get("Contents", []):
        stored = s3.get_object(Bucket=BUCKET, Key=item["Key"])
        if stored["ContentType"] == content_type and stored["Body"].read() == body:
            return f"{content_type} {image.width}x{image.height}, {len(body)} bytes, {cache}"
    raise RuntimeError(f"{name}: no variant in s3://{BUCKET} holds the {content_type} body")


def find_qemu() -> str:
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise SystemExit(f"{QEMU} not found: apt-get install qemu-user-static (make does)")
    return qemu


class Timer:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last = self.start
        self.phases: list[tuple[str, float]] = []

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.phases.append((phase, now - self.last))
        self.last = now

    def summary(self) -> str:
        parts = [f"{phase} {seconds:.1f}s" for phase, seconds in self.phases]
        return f"{time.monotonic() - self.start:.1f}s ({', '.join(parts)})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--python-version", choices=sorted(SUITES), default="3.13")
    args = parser.parse_args(argv)
    qemu = find_qemu()
    timer = Timer()
    sysroot = choose_sysroot(args.python_version)
    state = "downloaded" if sysroot.downloaded else "cached"
    print(f"sysroot ({state}): {sysroot.path}, {len(sysroot.packages)} {sysroot.suite} packages")
    timer.lap("sysroot " + state)
    with tempfile.TemporaryDirectory(prefix="check-layer-arm64-") as tmp_name:
        tmp = Path(tmp_name)
        zips = build_arm64_layers(sysroot.python_version, tmp / "dist")
        timer.lap("layers")
        opt, task = tmp / "opt", tmp / "task"
        unpack_layers(zips, opt)
        config = stage_function_code(task)
        events = {
            name: json.loads((EVENTS / file).read_text()) for name, (file, _, _) in CASES.items()
        }
        (tmp / "events.json").write_text(json.dumps(events))
        with moto_server() as endpoint:
            s3 = loopback_client("s3", endpoint)
            for bucket in (BUCKET, ASSETS_BUCKET):
                s3.create_bucket(Bucket=bucket)
            s3.put_object(Bucket=ASSETS_BUCKET, Key=ASSETS_PREFIX + "a.jpg", Body=source_image())
            env = guest_environment(endpoint, config, tmp)
            timer.lap("staging")
            print(f"running the layers and handler/ in aarch64 python{sysroot.python_version}")
            result = run_guest(sysroot, qemu, opt, task, tmp / "events.json", env)
            timer.lap("arm64 run")
            if result["machine"] != "aarch64":
                raise RuntimeError(f"the probe ran on {result['machine']}, not aarch64")
            checked = {
                name: check_response(name, response, s3)
                for name, response in result["responses"].items()
            }
    print(f"python {result['python'].split()[0]} on {result['machine']} ({result['prefix']})")
    print(f"libvips {result['libvips']} from {result['pyvips']}; handler from {result['handler']}")
    print(f"encoded {json.dumps(result['encoded'])} in {result['encode_seconds']:.1f}s")
    print(f"handler import {result['init_seconds']:.1f}s")
    for name, outcome in checked.items():
        print(f"{name} event: {outcome} in {result['invoke_seconds'][name]:.1f}s")
    print(f"arm64 layer check (python{sysroot.python_version}) passed in {timer.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
