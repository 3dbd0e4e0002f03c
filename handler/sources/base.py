"""The contract every source loader meets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Upstream:
    """A loaded source: its bytes plus the upstream caching headers Next.js reads.

    ``not_modified`` is set (and ``body`` empty) when a conditional fetch with ``if_none_match``
    got a 304: the caller keeps the bytes it already has.

    ``worth_keeping`` is False for a source as near as the variant store (the public folder on
    this host's disk, the S3 assets bucket beside the variant bucket): reading it again costs
    what reading a kept copy would, so the bytes are not copied into the store.
    """

    body: bytes
    cache_control: str | None = None
    etag: str | None = None  # the raw upstream ETag header value
    not_modified: bool = False
    worth_keeping: bool = True


class Source(Protocol):
    async def fetch(self, href: str, *, if_none_match: str | None = None) -> Upstream:
        """Load ``href`` or raise ``ImageError`` with Next's status and message.

        Raise ``SourceNotFound`` when this source does not have the file, so that a chain of
        relative sources can try the next one.
        """
        ...


class SourceNotFound(Exception):
    """This source has no such file; the next source in a chain may."""
