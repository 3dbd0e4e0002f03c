"""Synth-time inputs: the app's Next images config and the CloudFront Function rendered from it.

Deliberately minimal and independent of ``handler``: infra only needs ``formats`` (for the edge
Accept normalisation) and a file to bundle; the function itself parses the config fully.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLOUDFRONT_DIR = Path(__file__).parent / "cloudfront"
ACCEPT_FUNCTION_SOURCE = CLOUDFRONT_DIR / "normalize_accept.js"
FORMATS_PLACEHOLDER = "__NEXT_IMAGE_FORMATS__"
ALSO_WEBP_OFF, ALSO_WEBP_ON = "var ALSO_WEBP = false;", "var ALSO_WEBP = true;"
STATIC_SITE_FUNCTION_SOURCE = CLOUDFRONT_DIR / "static_site.js"
SITE_PLACEHOLDERS = ("__NEXT_TRAILING_SLASH__", "__NEXT_BASE_PATH__")
# CloudFront Functions reject code over 10 KB.
CLOUDFRONT_FUNCTION_MAX_BYTES = 10_240
NEXT_FORMATS = ("image/avif", "image/webp")
DEFAULT_FORMATS = ("image/webp",)


@dataclass(frozen=True)
class BundledConfig:
    """A config file to ship next to the function code, in the shape it was found in.

    ``filename`` keeps the Next build file's name (``required-server-files.json`` holds globs,
    ``images-manifest.json`` holds compiled regex sources), so the function can tell them apart.
    """

    filename: str
    content: dict[str, Any]
    images: dict[str, Any]

    @property
    def formats(self) -> tuple[str, ...]:
        formats = self.images.get("formats", list(DEFAULT_FORMATS))
        if not isinstance(formats, list) or not all(f in NEXT_FORMATS for f in formats):
            raise ValueError(f"images.formats must list image/avif and/or image/webp: {formats!r}")
        return tuple(formats)

    @property
    def base_path(self) -> str:
        """Next's ``basePath``: the image route is ``{basePath}/_next/image``.

        A manifest carries no ``basePath``, but its ``images.path`` has it as a prefix.
        """
        if "config" in self.content:
            return str(self.content["config"].get("basePath", ""))
        path = str(self.images.get("path", "/_next/image")).removesuffix("/")  # custom loader's
        return path.removesuffix("/_next/image")

    @property
    def export(self) -> bool:
        """A static export (``output: 'export'``): its pages are files in ``out/``."""
        return bool(self.content.get("config", {}).get("output") == "export")

    @property
    def trailing_slash(self) -> bool:
        """Next's ``trailingSlash``: an export writes ``about/index.html``, else ``about.html``."""
        return bool(self.content.get("config", {}).get("trailingSlash", False))


def bundle_images_config(
    images_config: Mapping[str, Any] | None = None, next_dir: Path | None = None
) -> BundledConfig:
    """From a config dict, or the app's ``.next`` folder; Next's defaults when given neither."""
    if images_config is not None and next_dir is not None:
        raise ValueError("pass images_config or next_dir, not both")
    if next_dir is not None:
        server_files = next_dir / "required-server-files.json"
        if server_files.exists():
            config = json.loads(server_files.read_text())["config"]
            kept = {"images": config["images"], "basePath": config.get("basePath", "")}
            experimental = {
                k: v for k, v in config.get("experimental", {}).items() if k.startswith("imgOpt")
            }
            if experimental:
                kept["experimental"] = experimental
            if config.get("output") == "export":  # the function serves its custom loader
                kept |= {"output": "export", "trailingSlash": bool(config.get("trailingSlash"))}
            content = {"version": 1, "config": kept}
            return BundledConfig("required-server-files.json", content, dict(config["images"]))
        manifest = next_dir / "images-manifest.json"
        if manifest.exists():
            content = json.loads(manifest.read_text())
            return BundledConfig("images-manifest.json", content, dict(content["images"]))
        raise FileNotFoundError(
            f"{next_dir} has neither required-server-files.json nor images-manifest.json"
        )
    images = dict(images_config or {})
    return BundledConfig("images-config.json", images, images)


def render_accept_function(formats: tuple[str, ...], *, animated_webp: bool = False) -> str:
    """The viewer-request function with the configured formats templated in.

    ``animated_webp`` (``NEXT_IMAGE_ANIMATED=webp``): with AVIF and WebP both configured, a
    browser that gets AVIF and names WebP too is forwarded as ``image/avif,image/webp``, so the
    function knows an animation may be sent to it as WebP.
    """
    source = ACCEPT_FUNCTION_SOURCE.read_text()
    if source.count(FORMATS_PLACEHOLDER) != 1 or source.count(ALSO_WEBP_OFF) != 1:
        raise ValueError(
            f"{ACCEPT_FUNCTION_SOURCE.name} must contain {FORMATS_PLACEHOLDER} and "
            f"{ALSO_WEBP_OFF!r} once each"
        )
    code = source.replace(FORMATS_PLACEHOLDER, json.dumps(list(formats)))
    if animated_webp and set(NEXT_FORMATS) <= set(formats):
        code = code.replace(ALSO_WEBP_OFF, ALSO_WEBP_ON)
    size = len(code.encode())
    if size > CLOUDFRONT_FUNCTION_MAX_BYTES:
        raise ValueError(f"CloudFront Function is {size} bytes, over the 10 KB limit")
    return code


def render_static_site_function(trailing_slash: bool, base_path: str) -> str:
    """The viewer-request function mapping a static export's paths to its files."""
    source = STATIC_SITE_FUNCTION_SOURCE.read_text()
    for placeholder, value in zip(SITE_PLACEHOLDERS, (trailing_slash, base_path), strict=True):
        if source.count(placeholder) != 1:
            raise ValueError(f"{STATIC_SITE_FUNCTION_SOURCE.name} must contain {placeholder} once")
        source = source.replace(placeholder, json.dumps(value))
    return source
