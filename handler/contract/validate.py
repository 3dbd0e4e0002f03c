"""``ImageOptimizerCache.validateParams`` (production mode): its checks in Next's order.

Next's code: ``packages/next/src/server/image-optimizer.ts``; the url allow-lists are in
``handler/contract/patterns.py``.

Two deliberate deviations, both where Next answers a bare 500: a malformed percent escape in a
relative url's path is a 400 (``URL_MALFORMED_ESCAPE``) and so is an unparsable relative url
(``URL_INVALID``); a malformed Accept header is a 400 from ``accept.negotiate``.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote

import ada_url

from handler.contract import errors
from handler.contract.accept import negotiate
from handler.contract.config import ImagesConfig
from handler.contract.errors import ImageError
from handler.contract.patterns import has_local_match, has_remote_match
from handler.formats import AVIF, WEBP
from handler.model import ImageParams

_DIGITS = re.compile(r"[0-9]+")
_RECURSIVE = re.compile(r"/_next/image(?:\Z|/)")  # JS `$` without /m: the very end only
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_STATIC_PREFIXES = ("/_next/static/media", "/_next/static/immutable/media")


def validate_params(query_string: str, accept: str | None, config: ImagesConfig) -> ImageParams:
    """Raise ``ImageError(400, exact Next message)`` for the first failing check."""
    query: dict[str, list[str]] = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True):  # == URLSearchParams
        query.setdefault(key, []).append(value)

    url = _single(query, "url", errors.URL_REQUIRED, errors.URL_ARRAY)
    if _js_length(url) > 3072:
        raise ImageError(400, errors.URL_TOO_LONG, category="validation")
    if url.startswith("//"):
        raise ImageError(400, errors.URL_PROTOCOL_RELATIVE, category="validation")
    if url.startswith("/"):
        href, is_absolute = url, False
        _check_relative(url, config)
    else:
        href, is_absolute = _check_absolute(url, config), True

    w = _single(query, "w", errors.W_REQUIRED, errors.W_ARRAY)
    if not _DIGITS.fullmatch(w):
        raise ImageError(400, errors.W_INVALID, category="validation")
    q = _single(query, "q", errors.Q_REQUIRED, errors.Q_ARRAY)
    if not _DIGITS.fullmatch(q):
        raise ImageError(400, errors.Q_INVALID, category="validation")
    width = float(w)  # JS parseInt: a double, so 1e22 rounds the way Next prints it
    if width <= 0:
        raise ImageError(400, errors.W_INVALID, category="validation")
    if width not in config.sizes:
        raise ImageError(400, errors.width_not_allowed(_js_number(width)), category="validation")
    quality = float(q)
    if quality < 1 or quality > 100:
        raise ImageError(400, errors.Q_INVALID, category="validation")
    if config.qualities is not None and quality not in config.qualities:
        raise ImageError(400, errors.quality_not_allowed(q), category="validation")

    mime_type = negotiate(accept, config.formats)
    # What an animation may become (opt-in): libvips writes animated WebP, not animated AVIF.
    also_webp = mime_type == AVIF and WEBP in config.formats and negotiate(accept, [WEBP]) == WEBP
    return ImageParams(
        href=href,
        is_absolute=is_absolute,
        is_static=url.startswith(tuple(config.base_path + p for p in _STATIC_PREFIXES)),
        width=int(width),
        quality=int(quality),
        mime_type=mime_type,
        also_webp=also_webp,
    )


def _single(query: dict[str, list[str]], key: str, missing: str, repeated: str) -> str:
    values = query.get(key, [])
    if len(values) > 1:
        raise ImageError(400, repeated, category="validation")
    if not values or not values[0]:
        raise ImageError(400, missing, category="validation")
    return values[0]


def _check_relative(url: str, config: ImagesConfig) -> None:
    try:
        path = ada_url.URL(url, "http://n").pathname
    except ValueError:
        raise ImageError(400, errors.URL_INVALID, category="validation") from None
    if _RECURSIVE.search(_decode_uri_component(path)):
        raise ImageError(400, errors.URL_RECURSIVE, category="validation")
    if not has_local_match(config.local_patterns, url):
        raise ImageError(400, errors.URL_NOT_ALLOWED, category="validation")


def _check_absolute(url: str, config: ImagesConfig) -> str:
    try:
        parsed = ada_url.URL(url)
    except ValueError:
        raise ImageError(400, errors.URL_INVALID, category="validation") from None
    if parsed.protocol not in ("http:", "https:"):
        raise ImageError(400, errors.URL_INVALID, category="validation")
    if not has_remote_match(config.domains, config.remote_patterns, parsed):
        raise ImageError(400, errors.URL_NOT_ALLOWED, category="validation")
    return parsed.href


def _decode_uri_component(text: str) -> str:
    """JS ``decodeURIComponent``: strict, so a bad escape or invalid UTF-8 is an error."""
    try:
        if _BAD_ESCAPE.search(text):
            raise ValueError("malformed escape")
        return unquote(text, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise ImageError(400, errors.URL_MALFORMED_ESCAPE, category="validation") from None


def _js_length(text: str) -> int:
    """String length in UTF-16 code units, as JS counts it."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _js_number(value: float) -> str:
    """JS ``Number#toString`` of a non-negative integral double (exponential from ``1e+21``)."""
    if value == float("inf"):
        return "Infinity"
    return str(int(value)) if value < 1e21 else repr(value)
