"""What to warm: the images (a public folder, an S3 assets prefix, or a list of URLs) and, for
each, the requests ``next/image`` can make for it: every allowed width, quality and format."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from handler.contract.config import ImagesConfig
from handler.contract.patterns import has_local_match
from handler.stores.s3_client import s3_client

# Files whose bytes the pipeline optimizes or passes through, by name. JP2 is left out (its
# loader is blocked: Next only ever serves the original), and SVG is kept only under
# dangerouslyAllowSVG (otherwise next/image marks an .svg src unoptimized and never asks).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif", ".tif", ".tiff", ".bmp", ".ico", ".icns"}
    | {".jxl", ".heic", ".heif"}
)
DEFAULT_QUALITY = 75  # next/image's quality when the config lists no qualities
ANY_FORMAT = "*/*"  # the Accept sent when the config negotiates no format (``formats: []``)

# What encodeURIComponent leaves as it is, besides the letters and digits quote() never escapes.
_URI_COMPONENT_SAFE = "-_.!~*'()"
# Characters of a file name that a URL path cannot hold as they are: a src spells them escaped.
_PATH_ESCAPES = str.maketrans({"%": "%25", "?": "%3F", "#": "%23"})


@dataclass(frozen=True)
class Job:
    """One variant: ``url`` at ``width`` and ``quality``, for a browser accepting ``accept``."""

    url: str
    width: int
    quality: int
    accept: str

    @property
    def query(self) -> str:
        """The query as Next's default loader writes it (packages/next/src/shared/lib/
        image-loader.ts: ``url=${encodeURIComponent(src)}&w=${width}&q=${quality}``)."""
        url = quote(self.url, safe=_URI_COMPONENT_SAFE)
        return f"url={url}&w={self.width}&q={self.quality}"

    def __str__(self) -> str:
        return f"{self.url} w={self.width} q={self.quality} {self.accept}"


def jobs(
    urls: Sequence[str],
    config: ImagesConfig,
    *,
    widths: Sequence[int] = (),
    qualities: Sequence[int] = (),
) -> list[Job]:
    """Every variant of every image, one image after another (so a worker that finds the
    pointer an earlier width wrote transforms the kept source instead of fetching it again).

    Widths larger than the image are asked too, as a srcset does; the pipeline never enlarges.
    """
    sizes = sorted(set(widths or config.sizes))
    chosen_qualities = sorted(set(qualities or config.qualities or (DEFAULT_QUALITY,)))
    accepts = [browser_accept(f, config.formats) for f in config.formats] or [ANY_FORMAT]
    return [
        Job(url, width, quality, accept)
        for url in urls
        for accept in accepts
        for quality in chosen_qualities
        for width in sizes
    ]


def browser_accept(fmt: str, formats: Sequence[str]) -> str:
    """The Accept a browser that gets ``fmt`` sends: one that gets AVIF names WebP too when
    both are configured (every such browser does; with ``NEXT_IMAGE_ANIMATED=webp`` its
    animations are sent as WebP, under keys of their own), as the edge forwards it too."""
    if fmt == "image/avif" and "image/webp" in formats:
        return "image/avif,image/webp"
    return fmt


def disallowed(config: ImagesConfig, *, widths: Sequence[int], qualities: Sequence[int]) -> str:
    """Why ``--widths``/``--qualities`` could never be asked (Next answers 400), or ``""``."""
    bad_widths = sorted(set(widths) - set(config.sizes))
    if bad_widths:
        return f"widths {bad_widths} are not in the config's deviceSizes or imageSizes"
    allowed = config.qualities
    bad_qualities = sorted(
        q for q in set(qualities) if not 1 <= q <= 100 or (allowed and q not in allowed)
    )
    if bad_qualities:
        return f"qualities {bad_qualities} are not allowed by the config"
    return ""


def public_urls(root: Path, config: ImagesConfig) -> list[str]:
    """The src of every image under a ``public/`` folder, as an app writes it (``/img/a b.jpg``)."""
    files = (p for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith("."))
    return _allowed((path.relative_to(root).as_posix() for path in files), config)


def s3_urls(bucket: str, prefix: str, config: ImagesConfig) -> list[str]:
    """The src of every image under the S3 assets prefix (the app's uploaded ``public/`` and
    ``_next/static/media``), as the assets source maps them: ``{prefix}img/a.png`` is
    ``/img/a.png``."""
    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = (item["Key"] for page in pages for item in page.get("Contents", []))
    return _allowed(sorted(key.removeprefix(prefix) for key in keys), config)


def listed_urls(path: Path) -> list[str]:
    """One URL a line, relative (``/a.jpg``) or absolute; blank lines and ``#`` comments skipped."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))


def _allowed(paths: Iterable[str], config: ImagesConfig) -> list[str]:
    """Image files as srcs, without those ``localPatterns`` refuse (never asked for)."""
    suffixes = IMAGE_SUFFIXES | ({".svg"} if config.dangerously_allow_svg else set())
    urls = []
    for path in paths:
        if Path(path).suffix.lower() not in suffixes or "/." in f"/{path}":
            continue
        url = "/" + path.translate(_PATH_ESCAPES)
        try:
            if not has_local_match(config.local_patterns, url):
                continue
        except ValueError:
            pass  # a name no URL can hold: asked anyway, so the failure shows in the summary
        urls.append(url)
    return urls
