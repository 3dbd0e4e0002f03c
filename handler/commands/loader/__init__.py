"""``next-image loader``: the custom ``next/image`` loader, shipped as package data of the CLI.

``next-image-loader.js`` is an ES module without dependencies that an app names as its
``images.loaderFile`` (with ``loader: 'custom'``). It builds the URLs Next's default loader
builds, against ``NEXT_PUBLIC_IMAGE_BASE``, so that a static export or an app on another host has
its images made by this optimizer; with ``NEXT_PUBLIC_IMAGE_FILES`` (or ``--files``) it links the
files ``next-image warm --out`` writes instead. It travels in the CLI's wheel, never in the Lambda
function's code (which is ``handler/`` only).
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path
from urllib.parse import quote

LOADER_NAME = "next-image-loader.js"
FILE_FORMATS = ("webp", "avif")
FILES_PREFIX = "/_next/image-files"  # {basePath}/_next/image + "-files", as the module writes it
# The module's one line that reads the mode from the build's environment; --files fixes it.
_FILES_SWITCH = "const FILES = process.env.NEXT_PUBLIC_IMAGE_FILES || '';"


def loader_source(files: str | None = None) -> str:
    """The module's text; with ``files`` (``webp``/``avif``) its default export links the files
    ``next-image warm --out --format FILES`` writes, whatever the build's environment."""
    source = resources.files(__package__).joinpath(LOADER_NAME).read_text(encoding="utf-8")
    if files is None:
        return source
    if files not in FILE_FORMATS:
        raise ValueError(f"files must be one of {', '.join(FILE_FORMATS)}, got {files!r}")
    if source.count(_FILES_SWITCH) != 1:
        raise ValueError(f"{LOADER_NAME} must contain {_FILES_SWITCH!r} once")
    fixed = f"const FILES = '{files}'; // next-image loader --files {files}"
    return source.replace(_FILES_SWITCH, fixed)


def files_path(src: str, width: int, quality: int, file_format: str, base_path: str = "") -> str:
    """The URL path ``createFilesLoader`` gives ``src`` at ``width`` and ``quality`` (already
    snapped to the config's qualities); ``src`` is a relative URL without a query."""
    escaped = "".join(quote(c, safe="") if c.isspace() or c == "," else c for c in src)
    return f"{base_path}{FILES_PREFIX}{escaped}.w{width}q{quality}.{file_format}"


def run(args: argparse.Namespace) -> int:
    """``next-image loader [--out FILE] [--files FORMAT]``: write the module, or print it."""
    source = loader_source(args.files)
    out: Path | None = args.out
    if out is None:
        sys.stdout.write(source)
        return 0
    try:
        out.write_text(source, encoding="utf-8")
    except OSError as exc:
        print(f"next-image loader: cannot write {out}: {exc}", file=sys.stderr)
        return 2
    print(
        f"next-image loader: wrote {out}; in next.config: "
        f"images: {{ loader: 'custom', loaderFile: './{out.name}' }}",
        file=sys.stderr,
    )
    return 0
