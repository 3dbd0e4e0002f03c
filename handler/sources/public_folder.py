"""Relative URLs read from a folder, with the headers Next's static server sends.

The folder is the app's ``public/`` (mounted at ``/``), or a build's ``.next/static/media``
(mounted at ``/_next/static/media``), as Next's static server serves both.

The href is WHATWG-normalised (dot segments resolved, backslashes turned into slashes), then
percent-decoded; each decoded segment must be a plain name. The resolved file must lie inside the
resolved root, which also stops symlinks that lead out of the folder.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import anyio

from handler.contract import errors
from handler.contract.config import ImagesConfig
from handler.contract.errors import ImageError
from handler.model import Upstream
from handler.sources.base import SourceNotFound
from handler.sources.static_files import asset_segments, default_cache_control


class PublicFolderSource:
    """Files of ``root`` at the URL path ``mount``: ``/img/a.png`` is ``root/img/a.png`` when
    mounted at ``/``, and ``/_next/static/media/a.png`` is ``root/a.png`` when mounted there."""

    def __init__(self, root: Path, config: ImagesConfig, *, mount: str = "/") -> None:
        self._root = root.resolve()
        self._limit = config.maximum_response_body
        self._mount = [segment for segment in mount.split("/") if segment]

    async def fetch(self, href: str, *, if_none_match: str | None = None) -> Upstream:
        segments = asset_segments(href)
        depth = len(self._mount)
        if segments is None or segments[:depth] != self._mount or len(segments) == depth:
            raise SourceNotFound(href)
        cache_control = default_cache_control(segments)
        return await anyio.to_thread.run_sync(
            self._load, href, segments[depth:], cache_control, if_none_match
        )

    def _load(
        self, href: str, segments: list[str], cache_control: str, if_none_match: str | None
    ) -> Upstream:
        """Blocking part, run in a worker thread: resolve, contain, stat, then read."""
        try:
            path = self._root.joinpath(*segments).resolve(strict=True)
            if not path.is_relative_to(self._root):
                raise SourceNotFound(href)
            # O_NONBLOCK: opening a FIFO planted in the folder must not hang the worker.
            with open(path, "rb", opener=_open_nonblocking) as file:
                info = os.fstat(file.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise SourceNotFound(href)
                if info.st_size > self._limit:
                    raise ImageError(413, errors.INTERNAL_INVALID, category="upstream")
                if info.st_size == 0:
                    raise ImageError(400, errors.INTERNAL_INVALID, category="upstream")
                etag = f'W/"{info.st_size:x}-{info.st_mtime_ns // 1_000_000:x}"'
                if if_none_match == etag:
                    return Upstream(b"", cache_control, etag, True, worth_keeping=False)
                body = file.read(self._limit + 1)  # the file may have grown since fstat
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            raise SourceNotFound(href) from exc
        if len(body) > self._limit:
            raise ImageError(413, errors.INTERNAL_INVALID, category="upstream")
        if not body:
            raise ImageError(400, errors.INTERNAL_INVALID, category="upstream")
        return Upstream(body, cache_control, etag, worth_keeping=False)


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)
