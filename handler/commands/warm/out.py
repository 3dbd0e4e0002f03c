"""``next-image warm --out DIR``: every variant a static export's pages ask for, as plain files, for
a site that wants no function at all (docs/warm.md).

The files sit under ``DIR/_next/image-files/`` at the paths ``next-image-loader.js`` links in its
files mode, the loader beside them. With ``--pages``, the image URLs the export's HTML holds
(``src``, ``srcset``, preload ``imagesrcset``), optimizer URLs or file paths; without it, every
image under ``--public-dir`` at every configured width and quality. One format, since a static
host cannot negotiate ``Accept``: WebP by default. The transforms are ``warm``'s own workers'."""

from __future__ import annotations

import argparse
import multiprocessing
import re
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from tqdm import tqdm

from handler.commands.loader import FILES_PREFIX, files_path, loader_source
from handler.commands.warm import worker
from handler.commands.warm.images import DEFAULT_QUALITY, Job, disallowed, public_urls
from handler.contract.config import ImagesConfig, load_images_config
from handler.entry import machine
from handler.entry.settings import Settings

LOADER_PATH = "_next/image-files/next-image-loader.js"  # under DIR, beside the files it links
_FILE_URL = re.compile(
    r"(?P<base>.*)" + re.escape(FILES_PREFIX) + r"(?P<src>/.+)\.w(?P<w>\d+)q(?P<q>\d+)\.(?P<f>\w+)"
)
_SRCSET_SPLIT = re.compile(r",\s+|,(?=/|https?:)")


class UsageError(Exception):
    """Nothing could be written as asked."""


@dataclass(frozen=True)
class FileJob:
    """One variant and the file it goes to, relative to ``DIR`` (URL-decoded)."""

    job: Job
    file: str


@dataclass
class FileTally:
    files: int
    images: int
    written: int = 0
    bytes: int = 0
    failures: list[worker.Outcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _ImageUrls(HTMLParser):
    """Every URL in ``<img src srcset>``, ``<source srcset>`` and ``<link href imagesrcset>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("img", "source", "link"):
            return
        values = dict(attrs)
        if tag == "link" and values.get("as") != "image":
            return
        for name in ("src", "href"):
            if values.get(name):
                self.urls.append(str(values[name]).strip())
        for name in ("srcset", "imagesrcset"):
            for candidate in _SRCSET_SPLIT.split(values.get(name) or ""):
                if candidate.strip():
                    self.urls.append(candidate.split()[0])


def page_urls(pages: Path) -> list[str]:
    """The image URLs of every HTML page under ``pages``, in a stable order, once each."""
    urls: list[str] = []
    for page in sorted(pages.rglob("*.html")):
        parser = _ImageUrls()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        urls += parser.urls
    return list(dict.fromkeys(urls))


def variant_of(url: str, file_format: str, config: ImagesConfig) -> tuple[str, int, int] | None:
    """``(src, width, quality)`` of a URL the loader built, either shape; None for any other
    (an unoptimized image, a remote src the files mode links as it is)."""
    parts = urlsplit(url)
    if parts.path == config.base_path + "/_next/image":
        query = parse_qs(parts.query)
        try:
            src, width, quality = query["url"][0], int(query["w"][0]), int(query["q"][0])
        except (KeyError, ValueError):
            return None
        return (src, width, quality) if _has_file(src) else None
    found = _FILE_URL.fullmatch(parts.path)
    if found is None or found["base"] != config.base_path:
        return None
    if found["f"] != file_format:
        raise UsageError(
            f"{url} is a {found['f']} file: the pages were built for --format {found['f']}"
        )
    return found["src"], int(found["w"]), int(found["q"])


def _has_file(src: str) -> bool:
    """What the files mode links to a file: a relative src without a query."""
    return src.startswith("/") and not src.startswith("//") and "?" not in src


def plan(
    config: ImagesConfig,
    file_format: str,
    *,
    pages: Path | None,
    public_dir: Path | None,
    widths: Sequence[int] = (),
    qualities: Sequence[int] = (),
) -> list[FileJob]:
    """The files to write, from the pages' URLs or every image of the public folder."""
    accept = f"image/{file_format}"
    if accept not in config.formats:
        raise UsageError(
            f"the config's formats ({', '.join(config.formats) or 'none'}) do not include "
            f"{accept}: the optimizer would not make it"
        )
    variants: Iterable[tuple[str, int, int]]
    if pages is not None:
        if not pages.is_dir():
            raise UsageError(f"--pages {pages} is not a folder")
        found = (variant_of(url, file_format, config) for url in page_urls(pages))
        variants = [v for v in found if v is not None]
    elif public_dir is not None:
        sizes = sorted(set(widths or config.sizes))
        chosen = sorted(set(qualities or config.qualities or (DEFAULT_QUALITY,)))
        variants = [
            (url, w, q) for url in public_urls(public_dir, config) for q in chosen for w in sizes
        ]
    else:
        raise UsageError("--out needs --pages (the export's out/) or --public-dir")
    files = []
    for src, width, quality in dict.fromkeys(variants):
        path = files_path(src, width, quality, file_format).removeprefix("/")
        files.append(FileJob(Job(src, width, quality, accept), unquote(path)))
    return files


def run(args: argparse.Namespace, settings: Settings) -> int:
    out: Path = args.out
    file_format: str = args.format or "webp"
    try:
        config = load_images_config(settings.images_config)
        problem = disallowed(config, widths=args.widths or (), qualities=args.qualities or ())
        if problem:
            raise UsageError(problem)
        public = Path(settings.public_dir) if settings.public_dir else None
        todo = plan(
            config,
            file_format,
            pages=args.pages,
            public_dir=public,
            widths=args.widths or (),
            qualities=args.qualities or (),
        )
        out.mkdir(parents=True, exist_ok=True)
    except (UsageError, ValueError, OSError) as exc:
        print(f"next-image warm: {exc}", file=sys.stderr)
        return 2
    loader = out / LOADER_PATH
    loader.parent.mkdir(parents=True, exist_ok=True)
    loader.write_text(loader_source(file_format), encoding="utf-8")
    images = len({item.job.url for item in todo})
    processes = max(1, min(args.jobs or machine.cpu_count(), len(todo) or 1))
    print(
        f"warm: {len(todo)} {file_format} files of {images} images into {out},"
        f" {processes} process" + ("es" if processes != 1 else ""),
        file=sys.stderr,
    )
    tally = FileTally(len(todo), images)
    started = time.perf_counter()
    if todo:
        _write(todo, out, settings, processes, tally)
    print(
        f"warm: wrote {tally.written} of {tally.files} files ({tally.bytes:,} bytes) of"
        f" {tally.images} images in {time.perf_counter() - started:.1f} s,"
        f" {len(tally.failures)} failed; loader: {loader}"
    )
    for note in tally.notes:
        print(f"warm: note: {note}", file=sys.stderr)
    for outcome in tally.failures:
        print(f"warm: failed: {outcome.job}: {outcome.error}", file=sys.stderr)
    return 1 if tally.failures else 0


def _write(
    todo: list[FileJob], out: Path, settings: Settings, processes: int, tally: FileTally
) -> None:
    spawn = multiprocessing.get_context("spawn")
    bar = tqdm(total=len(todo), unit="file", disable=None, file=sys.stderr)
    with ProcessPoolExecutor(
        processes, mp_context=spawn, initializer=worker.start, initargs=(settings,)
    ) as pool:
        futures = [pool.submit(worker.write_file, item.job, str(out / item.file)) for item in todo]
        try:
            for future in as_completed(futures):
                outcome = future.result()
                if outcome.result == "failed":
                    tally.failures.append(outcome)
                else:
                    tally.written += 1
                    tally.bytes += outcome.bytes
                    if outcome.note:
                        tally.notes.append(f"{outcome.job}: {outcome.note}")
                bar.update()
        finally:
            bar.close()
