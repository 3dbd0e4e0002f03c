"""The OpenAPI description of ``/_next/image``: Next's rules, written down for the schema.

The route reads its raw query and headers itself (Next's validation order and messages), so
FastAPI cannot infer parameters from a signature: they are declared here, with the allowed values
of the loaded ``images`` config in their descriptions.
"""

from __future__ import annotations

from typing import Any

from handler.contract.config import ImagesConfig
from handler.formats import OUTPUT_FORMATS, SVG

# What a 200 may carry: every output format, and SVG (served as it is, when allowed).
_IMAGE_TYPES = (*(output.mime_type for output in OUTPUT_FORMATS), SVG)
_TEXT = {"text/plain": {"schema": {"type": "string"}}}


def _listed(values: tuple[int, ...]) -> str:
    return ", ".join(map(str, values))


def image_route_docs(config: ImagesConfig) -> dict[str, Any]:
    """Keyword arguments for ``add_api_route``: summary, parameters and every response."""
    qualities = (
        f"one of {_listed(config.qualities)}" if config.qualities is not None else "any of them"
    )
    parameters = [
        {
            "name": "url",
            "in": "query",
            "required": True,
            "schema": {"type": "string", "maxLength": 3072},
            "description": (
                "The source image: a path starting with `/` that `images.localPatterns` allows "
                "(the app's public folder, its static media, or its origin), or an absolute "
                "http(s) URL that `images.remotePatterns` or `images.domains` allows. Not "
                "protocol-relative (`//`), not `/_next/image` itself, at most 3072 characters."
            ),
        },
        {
            "name": "w",
            "in": "query",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
            "description": (
                "Width in pixels, digits only; one of `deviceSizes` and `imageSizes`: "
                f"{_listed(config.sizes)}. Never upscaled."
            ),
        },
        {
            "name": "q",
            "in": "query",
            "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
            "description": f"Quality 1-100, digits only; {qualities} (`images.qualities`).",
        },
        {
            "name": "Accept",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": (
                "Chooses the output type among `images.formats` "
                f"({', '.join(config.formats) or 'none'}), in that order of preference, as "
                "`@hapi/accept` does; otherwise the source's own type (WebP and AVIF sources "
                "become JPEG)."
            ),
        },
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "The ETag of a copy the client holds: 304 when it still matches.",
        },
    ]
    responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": (
                "The optimized image (or the original, for animated, vector and bypassed "
                "types). `X-Nextjs-Cache` is HIT, MISS or STALE; a timeout's fallback is "
                "`Cache-Control: private, no-store`."
            ),
            "content": {
                t: {"schema": {"type": "string", "format": "binary"}} for t in _IMAGE_TYPES
            },
        },
        302: {"description": "On Lambda, a result over the 6 MB response limit: its stored copy."},
        304: {"description": "`If-None-Match` matched: no body."},
        308: {"description": "`/_next/image/` redirects to `/_next/image`."},
        400: {
            "description": "A parameter, the Accept header or the image is invalid.",
            "content": _TEXT,
        },
        404: {
            "description": "The source was not found, or the optimizer is disabled.",
            "content": _TEXT,
        },
        413: {"description": "The source is larger than `maximumResponseBody`.", "content": _TEXT},
        502: {
            "description": (
                "The upstream failed or answered something unusable; `Cache-Control: no-store`."
            ),
            "content": _TEXT,
        },
        503: {
            "description": (
                "Overloaded (with `Retry-After`), or an oversize result is not stored; "
                "`Cache-Control: no-store`."
            ),
            "content": _TEXT,
        },
        504: {
            "description": (
                "The upstream or the request's time budget ran out; `Cache-Control: no-store`."
            ),
            "content": _TEXT,
        },
        508: {"description": "More redirects than `maximumRedirects`.", "content": _TEXT},
    }
    return {
        "summary": "Optimize an image, exactly as Next.js 16.4.6's /_next/image",
        "responses": responses,
        "openapi_extra": {"parameters": parameters},
    }
