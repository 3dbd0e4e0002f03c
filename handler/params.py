"""The validated request: what ``validate_params`` (handler.contract.validate) produces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageParams:
    href: str  # raw for relative URLs, WHATWG-normalised for absolute ones (Next's rule)
    is_absolute: bool
    is_static: bool  # /_next/static/media or /_next/static/immutable/media: immutable caching
    width: int
    quality: int
    mime_type: str  # negotiated output type from Accept, or "" (keep the source's type)
    # AVIF was negotiated and WebP would have been too (in ``formats``, named by Accept): what an
    # animation may become (``NEXT_IMAGE_ANIMATED=webp``), as libvips writes no animated AVIF.
    also_webp: bool = False
