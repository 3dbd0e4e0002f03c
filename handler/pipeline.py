"""The image pipeline: pure bytes -> bytes with pyvips. No I/O.

Interface:
    PIPELINE_VERSION: str  -- goes into variant keys; bump on any change of output bytes
    transform_image(source: bytes, *, width: int, quality: int, mime_type: str,
                    config: ImagesConfig) -> Transformed
Implements Next 16.4.6 ``imageOptimizerTransform`` (contract §6.2, §7): sniff, policy
(reject / pass-through), choose output type and quality, then pyvips; on a pyvips failure serve
the original bytes (kind "fallback").

TODO(pipeline helper).
"""

from __future__ import annotations

from dataclasses import dataclass

from handler.stores.base import VariantKind


@dataclass(frozen=True)
class Transformed:
    body: bytes
    content_type: str  # e.g. "image/webp"; for pass-through the sniffed source type
    kind: VariantKind  # "optimized" | "original" (animated/bypass) | "fallback" (pyvips failed)
