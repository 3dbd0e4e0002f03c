"""Next's response-header rules: max-age, Cache-Control, Content-Disposition, ETag freshness."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from urllib.parse import quote

from handler.formats import OUTPUT_FORMATS

# Next's header for an image whose url is under ``/_next/static/media`` (``isStatic``): ten years.
NEXT_STATIC_MEDIA_CACHE_CONTROL = "public, max-age=315360000, immutable"

_EXTENSIONS = {
    **{output.mime_type: output.extension for output in OUTPUT_FORMATS},
    # The types only ever served as they are.
    "image/svg+xml": "svg",
    "image/x-icon": "ico",
    "image/x-icns": "icns",
    "image/bmp": "bmp",
    "image/jxl": "jxl",
    "image/heic": "heic",
    "image/jp2": "jp2",
}
_LEADING_INT = re.compile(r"^\s*([+-]?\d+)")
_TEXT = re.compile(r"^[\x20-\x7e\x80-\xff]+$")
_NON_LATIN1 = re.compile(r"[^\x20-\x7e\xa0-\xff]")
_PCT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def get_max_age(cache_control: str | None) -> int:
    """``getMaxAge``: s-maxage if it has any value, else max-age; JS ``parseInt``; else 0."""
    if not cache_control:
        return 0
    directives: dict[str, str | None] = {}
    for part in cache_control.split(","):
        key, sep, value = part.strip().partition("=")
        directives[key.lower()] = value.lower() if sep else None
    raw = directives.get("s-maxage") or directives.get("max-age")
    if not raw:
        return 0
    match = _LEADING_INT.match(raw.strip('"'))
    return int(match.group(1)) if match else 0


def cache_control(is_static: bool, max_age: int) -> str:
    if is_static:
        return NEXT_STATIC_MEDIA_CACHE_CONTROL
    return f"public, max-age={max_age}, must-revalidate"


def extension(content_type: str) -> str:
    return _EXTENSIONS.get(content_type, content_type.rpartition("/")[2])


def file_name(href: str, content_type: str) -> str:
    """``getFileNameWithExtension``: last path segment, cut at the first dot, typed extension."""
    name = href.split("?", 1)[0].rsplit("/", 1)[-1]
    if not name:
        return "image.bin"
    return f"{name.split('.', 1)[0]}.{extension(content_type)}"


@functools.lru_cache(maxsize=4096)  # every hit asks again; at most ~13 MB (3 KB urls)
def content_disposition(href: str, content_type: str, disposition_type: str) -> str:
    """The ``content-disposition`` package's formatting: ISO-8859-1 fallback plus RFC 5987."""
    name = file_name(href, content_type)
    fallback = _NON_LATIN1.sub("?", name)
    quoted = fallback.replace("\\", "\\\\").replace('"', '\\"')
    value = f'{disposition_type}; filename="{quoted}"'
    if fallback != name or not _TEXT.match(name) or _PCT_ESCAPE.search(name):
        value += f"; filename*=UTF-8''{quote(name, safe='!')}"
    return value


def is_fresh(request_headers: Mapping[str, str], etag: str) -> bool:
    """The ``fresh`` package as Next calls it: ETag only, no Last-Modified, so 304 on a match."""
    if_none_match = request_headers.get("if-none-match")
    if not if_none_match or request_headers.get("if-modified-since"):
        return False
    if re.search(r"(?:^|,)\s*no-cache\s*(?:,|$)", request_headers.get("cache-control", "")):
        return False
    if if_none_match.strip() == "*":
        return True
    for token in (t.strip() for t in if_none_match.split(",")):
        if token in (etag, f"W/{etag}") or f"W/{token}" == etag:
            return True
    return False
