"""Next.js ``images`` config: 16.4.6 defaults, normalisation, and loading from a build or JSON file.

``ImagesConfig()`` is Next's resolved default; ``load_images_config`` reads a ``.next`` build
(normalised by Next already) or a user's JSON config, normalised here as Next's
``assignDefaults`` does. Unlike Next's server, a ``loader: 'custom'`` config is served when its
loader builds this optimizer's URLs: docs/architecture.md, "The images config".
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ada_url

from handler.contract.globs import compile_glob
from handler.contract.linear_regex import LinearRegex
from handler.formats import NEGOTIABLE

DEFAULT_CSP = "script-src 'none'; frame-src 'none'; sandbox;"
STATIC_MEDIA_GLOBS = ("/_next/static/media/**", "/_next/static/immutable/media/**")
_UNMODELLED_DEFAULTS: dict[str, Any] = {
    "path": "/_next/image",
    "loaderFile": "",
    "disableStaticImages": False,
    "customCacheHandler": False,
}
_UNMODELLED_KEYS = {*_UNMODELLED_DEFAULTS, "maximumDiskCacheSize", "sizes"}
_LOADERS = ("default", "imgix", "cloudinary", "akamai", "custom")
OUR_LOADER_FILE = re.compile(r"next-image-loader\.[cm]?[jt]sx?")  # next-image loader --out
_FORMATS = NEGOTIABLE  # what images.formats may list


@dataclass(frozen=True)
class RemotePattern:
    """One ``remotePatterns`` entry; ``hostname``/``pathname`` are compiled picomatch regexes."""

    hostname: LinearRegex
    pathname: LinearRegex
    protocol: str | None = None
    port: str | None = None
    search: str | None = None
    raw: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LocalPattern:
    """One ``localPatterns`` entry; ``pathname`` is a compiled picomatch regex."""

    pathname: LinearRegex
    search: str | None = None
    raw: dict[str, str] = field(default_factory=dict)


def _regex(glob_or_source: str, *, is_regex: bool, dot: bool) -> LinearRegex:
    """A glob, or a manifest's picomatch regex source, matched in time linear in the URL."""
    source = glob_or_source if is_regex else compile_glob(glob_or_source, dot=dot).pattern
    return LinearRegex(source)


def _pathname_regex(glob_or_source: str | None, *, is_regex: bool) -> LinearRegex:
    if is_regex and glob_or_source is not None:
        return LinearRegex(glob_or_source)
    return _regex(glob_or_source or "**", is_regex=False, dot=True)


def _local_pattern(raw: dict[str, str], *, is_regex: bool = False) -> LocalPattern:
    return LocalPattern(
        _pathname_regex(raw.get("pathname"), is_regex=is_regex), raw.get("search"), raw
    )


# Next 16 sets this when the user leaves localPatterns unset: any path, but no query string.
_DEFAULT_LOCAL_PATTERNS = (_local_pattern({"pathname": "**", "search": ""}),)


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
    local_patterns: tuple[LocalPattern, ...] | None = _DEFAULT_LOCAL_PATTERNS
    domains: tuple[str, ...] = ()
    loader: str = "default"
    unoptimized: bool = False
    base_path: str = ""
    img_opt_timeout_seconds: float = 7.0
    img_opt_max_input_pixels: int = 268_402_689
    img_opt_mozjpeg: bool = True
    # A custom loader that builds this optimizer's URLs: a static export's, or next-image-loader.
    custom_loader_served: bool = False
    # Images keys the optimizer ignores (path, loaderFile, ...), kept so to_json() is complete.
    extra: dict[str, Any] = field(default_factory=lambda: dict(_UNMODELLED_DEFAULTS))

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.device_sizes + self.image_sizes

    @property
    def serves_images(self) -> bool:
        """Whether ``/_next/image`` optimizes (Next answers 404 for another loader, unoptimized)."""
        if self.unoptimized:
            return False
        return self.loader == "default" or (self.loader == "custom" and self.custom_loader_served)

    def to_json(self) -> dict[str, Any]:
        """The ``images`` object as Next writes it to required-server-files.json."""
        images: dict[str, Any] = {
            **self.extra,
            "deviceSizes": list(self.device_sizes),
            "imageSizes": list(self.image_sizes),
            "loader": self.loader,
            "domains": list(self.domains),
            "minimumCacheTTL": self.minimum_cache_ttl,
            "formats": list(self.formats),
            "maximumRedirects": self.maximum_redirects,
            "maximumResponseBody": self.maximum_response_body,
            "dangerouslyAllowLocalIP": self.dangerously_allow_local_ip,
            "dangerouslyAllowSVG": self.dangerously_allow_svg,
            "contentSecurityPolicy": self.content_security_policy,
            "contentDispositionType": self.content_disposition_type,
            "remotePatterns": [dict(p.raw) for p in self.remote_patterns],
            "unoptimized": self.unoptimized,
        }
        if self.local_patterns is not None:
            images["localPatterns"] = [dict(p.raw) for p in self.local_patterns]
        if self.qualities is not None:
            images["qualities"] = list(self.qualities)
        return images


def load_images_config(source: str | None) -> ImagesConfig:
    """Resolve the config from a build directory, JSON file or inline JSON (``None``: defaults)."""
    if source is None:
        return ImagesConfig()
    if source.lstrip().startswith("{"):
        return _from_document(_parse_json(source, "inline JSON"))
    path = Path(source)
    if path.is_dir():
        candidates = [path / "required-server-files.json", path / "images-manifest.json"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise ValueError(
                f"{path} has neither required-server-files.json nor images-manifest.json"
            )
        path = found
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"cannot read images config {path}: {err}") from err
    return _from_document(_parse_json(text, str(path)))


def _parse_json(text: str, origin: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{origin} is not valid JSON: {err}") from err


def _from_document(doc: Any) -> ImagesConfig:
    """Tell the file shapes apart by their top-level keys."""
    doc = _object(doc, "config document")
    if "config" in doc:  # required-server-files.json: already normalised by Next
        return _from_next_config(_object(doc["config"], "config"), normalise=False)
    if "version" in doc and "images" in doc:  # images-manifest.json: patterns are regex sources
        images = _object(doc["images"], "images")
        path = images.get("path", "")  # the manifest has no basePath, but Next prefixes the path
        path = path.removesuffix("/") if isinstance(path, str) else path  # a custom loader's
        has_base = isinstance(path, str) and path.endswith("/_next/image")
        base_path = _base_path(path.removesuffix("/_next/image") if has_base else "")
        return _build(images, base_path, {}, normalise=False, is_regex=True)
    if "images" in doc:
        return _from_next_config(doc, normalise=True)
    return _build(doc, "", {}, normalise=True, is_regex=False)


def _from_next_config(config: dict[str, Any], *, normalise: bool) -> ImagesConfig:
    base_path = _base_path(_string(config.get("basePath", ""), "basePath"))
    images = _object(config.get("images", {}), "images")
    experimental = _object(config.get("experimental", {}), "experimental")
    export = config.get("output") == "export"
    return _build(
        images, base_path, experimental, normalise=normalise, is_regex=False, export=export
    )


def _base_path(value: str) -> str:
    if value and (not value.startswith("/") or value.endswith("/")):
        raise ValueError(f'basePath must start with "/" and not end with "/", got {value!r}')
    return value


def _build(
    user: dict[str, Any],
    base_path: str,
    experimental: dict[str, Any],
    *,
    normalise: bool,
    is_regex: bool,
    export: bool = False,
) -> ImagesConfig:
    defaults = ImagesConfig()
    merged = {**defaults.to_json(), **user}
    unknown = sorted(user.keys() - _MODELLED_KEYS - _UNMODELLED_KEYS)
    if unknown:
        raise ValueError(f"images: unknown key(s) {', '.join(unknown)}")

    local_patterns: tuple[LocalPattern, ...] = _DEFAULT_LOCAL_PATTERNS
    if "localPatterns" in user:
        local_patterns = _local_patterns(user["localPatterns"], is_regex=is_regex)
    if normalise and "localPatterns" in user:
        local_patterns += tuple(
            _local_pattern({"pathname": glob, "search": ""})
            for glob in STATIC_MEDIA_GLOBS
            if not any(p.raw.get("pathname") == glob and p.search == "" for p in local_patterns)
        )
    return ImagesConfig(
        device_sizes=_int_list(merged["deviceSizes"], "images.deviceSizes", 1, 10000, 0, 25),
        image_sizes=_int_list(merged["imageSizes"], "images.imageSizes", 1, 10000, 0, 25),
        qualities=_int_list(merged["qualities"], "images.qualities", 1, 100, 1, 20),
        formats=_formats(merged["formats"]),
        minimum_cache_ttl=_int(merged["minimumCacheTTL"], "images.minimumCacheTTL", 0),
        dangerously_allow_svg=_bool(merged["dangerouslyAllowSVG"], "images.dangerouslyAllowSVG"),
        dangerously_allow_local_ip=_bool(
            merged["dangerouslyAllowLocalIP"], "images.dangerouslyAllowLocalIP"
        ),
        maximum_redirects=_int(merged["maximumRedirects"], "images.maximumRedirects", 0, 20),
        maximum_response_body=_int(merged["maximumResponseBody"], "images.maximumResponseBody", 1),
        content_security_policy=_string(
            merged["contentSecurityPolicy"], "images.contentSecurityPolicy"
        ),
        content_disposition_type=_choice(
            merged["contentDispositionType"],
            "images.contentDispositionType",
            ("inline", "attachment"),
        ),
        remote_patterns=_remote_patterns(merged["remotePatterns"], is_regex=is_regex),
        local_patterns=local_patterns,
        domains=tuple(
            _string(d, f"images.domains[{i}]")
            for i, d in enumerate(_array(merged["domains"], "images.domains", 50))
        ),
        loader=_choice(merged["loader"], "images.loader", _LOADERS),
        unoptimized=_bool(merged["unoptimized"], "images.unoptimized"),
        base_path=base_path,
        img_opt_timeout_seconds=_positive_number(
            experimental.get("imgOptTimeoutInSeconds", defaults.img_opt_timeout_seconds),
            "experimental.imgOptTimeoutInSeconds",
        ),
        img_opt_max_input_pixels=_int(
            experimental.get("imgOptMaxInputPixels", defaults.img_opt_max_input_pixels),
            "experimental.imgOptMaxInputPixels",
            0,
        ),
        img_opt_mozjpeg=_bool(
            experimental.get("imgOptMozjpeg", defaults.img_opt_mozjpeg),
            "experimental.imgOptMozjpeg",
        ),
        custom_loader_served=export or _is_our_loader(merged.get("loaderFile")),
        extra={k: v for k, v in merged.items() if k in _UNMODELLED_KEYS},
    )


def _is_our_loader(loader_file: Any) -> bool:
    """``loaderFile`` names the module ``next-image loader`` writes (any folder, JS or TS)."""
    if not isinstance(loader_file, str) or not loader_file:
        return False
    return OUR_LOADER_FILE.fullmatch(loader_file.replace("\\", "/").rsplit("/", 1)[-1]) is not None


_MODELLED_KEYS = set(ImagesConfig().to_json()) - _UNMODELLED_KEYS


def _remote_patterns(value: Any, *, is_regex: bool) -> tuple[RemotePattern, ...]:
    return tuple(
        _remote_pattern(entry, f"images.remotePatterns[{i}]", is_regex=is_regex)
        for i, entry in enumerate(_array(value, "images.remotePatterns", 50))
    )


def _remote_pattern(entry: Any, key: str, *, is_regex: bool) -> RemotePattern:
    if isinstance(entry, str):
        entry = _url_pattern(entry, key)
    raw = _string_fields(entry, key, ("protocol", "hostname", "port", "pathname", "search"))
    if "protocol" in raw:
        raw["protocol"] = raw["protocol"].removesuffix(":")
        if raw["protocol"] not in ("http", "https"):
            raise ValueError(
                "Specified images.remotePatterns must have protocol "
                f'"http" or "https" received "{raw["protocol"]}".'
            )
    if "hostname" not in raw:
        raise ValueError(f"{key}.hostname is required")
    if len(raw.get("port", "")) > 5:
        raise ValueError(f"{key}.port must be at most 5 characters")
    try:
        hostname = _regex(raw["hostname"], is_regex=is_regex, dot=False)
        pathname = _pathname_regex(raw.get("pathname"), is_regex=is_regex)
    except (ValueError, re.error) as err:
        raise ValueError(f"{key}: {err}") from err
    return RemotePattern(
        hostname, pathname, raw.get("protocol"), raw.get("port"), raw.get("search"), raw
    )


def _url_pattern(href: str, key: str) -> dict[str, str]:
    """A pattern given as a URL, converted the way Next destructures a ``URL`` object."""
    try:
        url = ada_url.URL(href)
    except ValueError as err:
        raise ValueError(f"{key}: {href!r} is not a valid URL") from err
    return {
        "protocol": url.protocol.removesuffix(":"),
        "hostname": url.hostname,
        "port": url.port,
        "pathname": url.pathname,
        "search": url.search,
    }


def _local_patterns(value: Any, *, is_regex: bool) -> tuple[LocalPattern, ...]:
    patterns = []
    for i, entry in enumerate(_array(value, "images.localPatterns", 25)):
        key = f"images.localPatterns[{i}]"
        raw = _string_fields(entry, key, ("pathname", "search"))
        try:
            patterns.append(_local_pattern(raw, is_regex=is_regex))
        except (ValueError, re.error) as err:
            raise ValueError(f"{key}: {err}") from err
    return tuple(patterns)


def _string_fields(entry: Any, key: str, allowed: tuple[str, ...]) -> dict[str, str]:
    obj = _object(entry, key)
    unknown = sorted(obj.keys() - set(allowed))
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {', '.join(unknown)}")
    return {k: _string(v, f"{key}.{k}") for k, v in obj.items()}


def _formats(value: Any) -> tuple[str, ...]:
    items = _array(value, "images.formats", 4)
    return tuple(_choice(f, f"images.formats[{i}]", _FORMATS) for i, f in enumerate(items))


def _int_list(
    value: Any, key: str, low: int, high: int, min_items: int, max_items: int
) -> tuple[int, ...]:
    items = _array(value, key, max_items)
    if len(items) < min_items:
        raise ValueError(f"{key} must have at least {min_items} item(s)")
    return tuple(_int(v, f"{key}[{i}]", low, high) for i, v in enumerate(items))


def _object(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be an object, got {value!r}")
    return value


def _array(value: Any, key: str, max_items: int) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{key} must be an array, got {value!r}")
    if len(value) > max_items:
        raise ValueError(f"{key} must have at most {max_items} items")
    return value


def _int(value: Any, key: str, low: int, high: int | None = None) -> int:
    """JSON numbers are JS numbers: ``640.0`` is the integer 640, ``true`` is not a number."""
    is_int = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not is_int or value < low or (high is not None and value > high):
        upper = "" if high is None else f" and <= {high}"
        raise ValueError(f"{key} must be an integer >= {low}{upper}, got {value!r}")
    return int(value)


def _positive_number(value: Any, key: str) -> float:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or not 0 < value < math.inf:
        raise ValueError(f"{key} must be a positive number, got {value!r}")
    return float(value)


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be a boolean, got {value!r}")
    return value


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {value!r}")
    return value


def _choice(value: Any, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)
