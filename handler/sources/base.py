"""The contract every source loader meets."""

from __future__ import annotations

from typing import Protocol

from handler.model import Upstream


class Source(Protocol):
    async def fetch(self, href: str, *, if_none_match: str | None = None) -> Upstream:
        """Load ``href`` or raise ``ImageError`` with Next's status and message.

        Raise ``SourceNotFound`` when this source does not have the file, so that a chain of
        relative sources can try the next one.
        """
        ...


class SourceNotFound(Exception):
    """This source has no such file; the next source in a chain may."""
