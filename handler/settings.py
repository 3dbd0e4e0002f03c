"""Our own settings (stores, sources, limits): environment variables, overridable by CLI flags.

Every setting has one environment variable, so ``next-image serve`` and the Lambda function are
configured the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

StoreKind = Literal["memory", "filesystem", "s3", "redis"]

ENV_PREFIX = "NEXT_IMAGE_"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 3000
    public_dir: str | None = None
    origin: str | None = None
    config: str | None = None  # path to a Next build/config file, or inline JSON
    store: StoreKind = "memory"
    cache_dir: str = "./.next-image-cache"
    cache_max_bytes: int = 1_000_000_000
    hot_cache_bytes: int = 64_000_000  # the filesystem store's in-memory tier, per process; 0: none
    timeout: float = 30.0  # budget per request, covering fetch and transform
    max_attempts: int = 3  # tries of a transient upstream failure
    fetch_timeout: float = 7.0  # per upstream hop, as Next.js
    bucket: str | None = None
    prefix: str = ""
    assets_bucket: str | None = None
    assets_prefix: str = ""
    max_inline_bytes: int | None = None  # larger bodies: 302 to the stored variant (Lambda's cap)
    max_transforms: int | None = None  # transforms at once; None: one per CPU
    max_queue: int = 32  # requests waiting for a transform slot; more are answered 503
    memory_budget: int | None = None  # bytes all running transforms may hold; None: derived
    strict_redirects: bool = False  # re-apply remotePatterns on every redirect hop
    store_timeout: float = 3.0  # seconds per store call; a slower store counts as failing
    redis_url: str | None = None  # redis:// or rediss://, with a password if needed
    variant_ttl: int = 30 * 24 * 3600  # seconds a Redis variant lives (the S3 lifecycle's 30 days)
    workers: str = "1"  # serve's worker processes: a number, or "auto" (one per CPU)
    docs: bool = False  # serve also answers /openapi.json and /docs

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Environment first, then explicit overrides (CLI flags) that are not None."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.type, raw, f.name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        if settings.store not in ("memory", "filesystem", "s3", "redis"):
            raise ValueError(f"{ENV_PREFIX}STORE must be memory, filesystem, s3 or redis")
        return settings


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(type_name: object, raw: str, name: str) -> object:
    text = str(type_name)
    if text == "bool":
        if raw.lower() not in _TRUE | _FALSE:
            raise ValueError(f"{ENV_PREFIX}{name.upper()} must be true or false, got {raw!r}")
        return raw.lower() in _TRUE
    try:
        if text.startswith("int"):
            return int(raw)
        if text.startswith("float"):
            return float(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name.upper()} must be a number, got {raw!r}") from None
    return raw
