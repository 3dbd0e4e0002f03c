"""Next.js ``images`` config: 16.4.6 defaults, normalisation, and loading from a build or JSON file.

Interface (used across the package):
- ``ImagesConfig()`` is Next 16.4.6's resolved default config.
- ``load_images_config(path_or_inline_json | None) -> ImagesConfig``.
- ``ImagesConfig.to_json() -> dict`` in Next's camelCase shape (what ``next-image config`` prints).

TODO(contract helper): loaders, normalisation, pattern compilation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEFAULT_CSP = "script-src 'none'; frame-src 'none'; sandbox;"


@dataclass(frozen=True)
class RemotePattern:
    """One ``remotePatterns`` entry; ``hostname``/``pathname`` are compiled picomatch regexes."""

    hostname: re.Pattern[str]
    pathname: re.Pattern[str]
    protocol: str | None = None
    port: str | None = None
    search: str | None = None
    raw: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LocalPattern:
    """One ``localPatterns`` entry; ``pathname`` is a compiled picomatch regex."""

    pathname: re.Pattern[str]
    search: str | None = None
    raw: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImagesConfig:
    device_sizes: tuple[int, ...] = (640, 750, 828, 1080, 1200, 1920, 2048, 3840)
    image_sizes: tuple[int, ...] = (32, 48, 64, 96, 128, 256, 384)
    qualities: tuple[int, ...] | None = (75,)
    formats: tuple[str, ...] = ("image/webp",)
    minimum_cache_ttl: int = 14400
    dangerously_allow_svg: bool = False
    dangerously_allow_local_ip: bool = False
    maximum_redirects: int = 3
    maximum_response_body: int = 50_000_000
    content_security_policy: str = DEFAULT_CSP
    content_disposition_type: str = "attachment"
    remote_patterns: tuple[RemotePattern, ...] = ()
    local_patterns: tuple[LocalPattern, ...] | None = None  # normalised to Next's default on load
    domains: tuple[str, ...] = ()
    loader: str = "default"
    unoptimized: bool = False
    base_path: str = ""
    img_opt_timeout_seconds: float = 7.0
    img_opt_max_input_pixels: int = 268_402_689
    img_opt_mozjpeg: bool = True

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.device_sizes + self.image_sizes
