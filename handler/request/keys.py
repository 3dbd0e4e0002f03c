"""Store keys: content-addressed variants, and pointers by source URL.

Importing this loads no pyvips: a variant key names the pipeline's version
(``handler.formats.pipeline_version``), which loads libvips for its version once, on the
first variant key made.
"""

from __future__ import annotations

import base64
import hashlib

from handler.formats import pipeline_version


def pointer_key(href: str) -> str:
    return hashlib.sha256(href.encode()).hexdigest()


def variant_key(
    source_hash: str, width: int, quality: int, mime_type: str, *, animated: str = ""
) -> str:
    """Readable and grouped by source, so every variant of one source sits under one prefix.

    ``animated``: ``animated.key_suffix`` of the request's options (empty for Next's
    pass-through), so answers made with animated WebP on are never served with it off.
    """
    fmt = mime_type.removeprefix("image/") if mime_type else "auto"
    return f"{source_hash}/{width}w-{quality}q-{fmt}-p{pipeline_version()}{animated}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def etag_of(body: bytes) -> str:
    """Next's ETag for bytes it produced: base64url(sha256), unquoted."""
    return b64url(hashlib.sha256(body).digest())
