"""Our own settings (stores, sources, limits): environment variables, overridable by CLI flags.

Every setting has one environment variable, so ``next-image serve`` and the Lambda function are
configured the same way. Each is declared once, on its ``Settings`` field: variable, parser,
default, ``serve`` flag and help. The flags, the environment reading and the tables of
docs/configuration.md all follow from that declaration (tests/unit/test_settings_docs.py holds
them to it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeVar

from handler.pipeline.animated import DEFAULT_MAX_FRAMES, DEFAULT_MAX_PIXELS, MODES, AnimatedMode
from handler.stores import registry

Context = Literal["serve", "lambda"]

ENV_PREFIX = "NEXT_IMAGE_"

_T = TypeVar("_T")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _switch(raw: str) -> bool:
    """An on/off setting: the variable takes the usual spellings, the flag takes no value."""
    if raw.lower() not in _TRUE | _FALSE:
        raise ValueError(raw)
    return raw.lower() in _TRUE


@dataclass(frozen=True)
class Setting:
    """How one ``Settings`` field is read from the environment and the command line."""

    help: str
    default: object
    parse: Callable[[str], object] = str
    flag: str | None = None  # ``next-image serve``'s flag; None: environment only
    choices: tuple[str, ...] = ()
    # The default as a reader should see it, where the value alone would mislead (None: derived).
    default_text: str | None = None
    # Where it is documented: "serve" (read by serve and Lambda alike) or "lambda" (the S3 and
    # payload settings the function adds).
    context: Context = "serve"
    name: str = ""  # the field's name, filled in from the field
    env: str = ""  # the environment variable; "" for NEXT_IMAGE_ + the field's name

    @property
    def is_switch(self) -> bool:
        """On or off: its flag takes no value."""
        return self.parse is _switch

    @property
    def shown_default(self) -> str:
        """The default as ``--help`` and docs/configuration.md show it."""
        if self.default_text is not None:
            return self.default_text
        if self.default is None:
            return "none"
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))
        return str(self.default) if self.default != "" else '""'

    @property
    def expected(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.choices:
            return ", ".join(self.choices[:-1]) + " or " + self.choices[-1]
        return "true or false" if self.is_switch else "a number"

    def read(self, raw: str) -> object:
        """The value of this setting's variable, or a ValueError that names the variable."""
        try:
            return self.parse(raw)
        except ValueError:
            raise ValueError(f"{self.env} must be {self.expected}, got {raw!r}") from None


def _parser_for(default: object) -> Callable[[str], object]:
    """How a variable is read when its default's type says it: on/off, a number, or text."""
    if isinstance(default, bool):
        return _switch
    return type(default) if isinstance(default, int | float) else str


def _declare(
    default: _T,
    help: str,
    *,
    parse: Callable[[str], object] | None = None,
    flag: str | bool = True,
    choices: tuple[str, ...] = (),
    default_text: str | None = None,
    context: Context = "serve",
    env: str = "",
) -> _T:
    """A ``Settings`` field carrying its ``Setting``: the one place a setting is described.

    ``parse`` follows the default's type unless given; ``flag`` True is ``serve``'s flag named
    after the field (``--cache-dir``), False none (environment only), a string that flag."""
    parser = parse or _parser_for(default)
    setting = Setting(help, default, parser, None, choices, default_text, context, env=env)
    return field(default=default, metadata={"setting": setting, "flag": flag})


@dataclass(frozen=True)
class Settings:
    host: str = _declare("127.0.0.1", "bind address")
    port: int = _declare(3000, "port")
    public_dir: str | None = _declare(None, "the app's public/ folder")
    origin: str | None = _declare(None, "the app's origin for relative URLs")
    images_config: str | None = _declare(
        None,
        "a .next folder, required-server-files.json, images-manifest.json, "
        "a JSON file with the images config, or inline JSON",
        flag="--config",
        env=ENV_PREFIX + "CONFIG",  # the variable and flag predate the field's name
        default_text="Next 16.4.6 defaults",
    )
    store: str = _declare("memory", "variant store", choices=registry.NAMES)
    redis_url: str | None = _declare(
        None, "redis store: redis://[[user]:password@]host:port/db, or rediss:// for TLS"
    )
    variant_ttl: int = _declare(
        30 * 24 * 3600,  # the S3 lifecycle's 30 days
        "seconds a variant lives in the redis store",
    )
    cache_dir: str = _declare("./.next-image-cache", "filesystem store folder")
    cache_max_bytes: int = _declare(1_000_000_000, "filesystem store bound")
    hot_cache_bytes: int = _declare(
        64_000_000,
        "filesystem and redis stores: bytes of recent records (redis: variants) each process"
        " keeps in memory, 0 for none",
    )
    timeout: float = _declare(30.0, "seconds per request, fetch + transform")
    max_attempts: int = _declare(3, "tries of a transient upstream failure")
    fetch_timeout: float = _declare(7.0, "seconds per upstream hop (Next's 7 s)", flag=False)
    max_transforms: int | None = _declare(
        None, "transforms running at once", parse=int, default_text="one per CPU"
    )
    max_queue: int = _declare(32, "requests waiting for a transform; more get 503")
    memory_budget: int | None = _declare(
        None,
        "bytes running transforms may reserve",
        parse=int,
        default_text="half the memory limit",
    )
    fast_first_view: float = _declare(
        0.0,
        "seconds an AVIF miss may take (by its plan) before it is answered with WebP, cached "
        "10 s, while the AVIF is produced after the response; 0 for off (Next's behaviour)",
    )
    animated: AnimatedMode = _declare(  # noqa: RUF009 (ruff cannot see the Literal alias is immutable)
        "passthrough",
        "animated GIF and WebP: passthrough (served as they are, Next's behaviour) or webp "
        "(resized frame by frame to animated WebP for a browser that accepts WebP)",
        choices=MODES,
    )
    animated_max_frames: int = _declare(
        DEFAULT_MAX_FRAMES, "animated webp: an animation with more frames is served as it is"
    )
    animated_max_pixels: int = _declare(
        DEFAULT_MAX_PIXELS,
        "animated webp: an animation whose frames decode to more pixels in all is served as it is",
    )
    store_timeout: float = _declare(3.0, "seconds per store call before it counts as failed")
    strict_redirects: bool = _declare(False, "re-apply remotePatterns on every redirect hop")
    docs: bool = _declare(
        False, "also serve the OpenAPI schema (/openapi.json) and interactive docs (/docs)"
    )
    workers: str = _declare(
        "1",
        "worker processes on the one port, a number or auto (one per CPU); a worker that "
        "dies is replaced",
    )
    access_log: bool = _declare(
        True,
        "a line per request on stdout (uvicorn's access log); false where a CDN's logs suffice: "
        "the line is about a tenth of a cache hit's CPU",
        flag=False,
    )
    isolate_transforms: bool | None = _declare(
        None,
        "run each transform in a child process: a libvips crash, a transform over its memory "
        "limit or past its deadline fails only its own request; false to run them in the worker",
        parse=_switch,
        default_text="on for serve, off on Lambda",
        flag=False,
    )
    transforms_per_child: int = _declare(
        500, "transforms an isolated child process runs before it is replaced"
    )
    deploy_generation: str = _declare(
        "",
        "this deploy's generation (the construct sets it to a hash of the app's public/, "
        "static media and images config): a pointer written under another generation is "
        "revalidated with a conditional request before it is trusted",
        flag=False,
    )
    bucket: str | None = _declare(
        None, "the variants bucket; naming one selects the S3 store", context="lambda"
    )
    prefix: str = _declare("", "key prefix in the variants bucket or Redis", context="lambda")
    assets_bucket: str | None = _declare(
        None, "the bucket of the app's uploaded public/ and _next/static/media", context="lambda"
    )
    assets_prefix: str = _declare("", "key prefix in the assets bucket", context="lambda")
    max_inline_bytes: int | None = _declare(
        None,
        "larger results are answered with a redirect to the stored variant",
        parse=int,
        # lambda_handler's LAMBDA_MAX_INLINE_BYTES: what keeps a response under the payload cap
        default_text="4400000 on Lambda with the S3 store, else unset",
        context="lambda",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Environment first, then explicit overrides (CLI flags) that are not None."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = env.get(setting.env)
            if raw is not None and raw != "":
                values[setting.name] = setting.read(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        for setting in SETTINGS:
            if setting.choices and getattr(settings, setting.name) not in setting.choices:
                raise ValueError(f"{setting.env} must be {setting.expected}")
        return settings


def _flag(name: str, declared: str | bool, context: Context) -> str | None:
    if isinstance(declared, str):
        return declared
    return "--" + name.replace("_", "-") if declared and context == "serve" else None


SETTINGS: tuple[Setting, ...] = tuple(
    replace(
        f.metadata["setting"],
        name=f.name,
        flag=_flag(f.name, f.metadata["flag"], f.metadata["setting"].context),
        env=f.metadata["setting"].env or ENV_PREFIX + f.name.upper(),
    )
    for f in fields(Settings)
)
