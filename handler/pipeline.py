"""The image pipeline: pure bytes -> bytes with pyvips. No I/O.

Interface:
    PIPELINE_VERSION: str  -- goes into variant keys; bump on any change of output bytes
    transform_image(source: bytes, *, width: int, quality: int, mime_type: str,
                    config: ImagesConfig) -> Transformed
    output_type(mime_type: str, upstream: str) -> str  -- §7.2
    avif_quality(quality: int) -> int  -- §7.3
Implements Next 16.4.6 ``imageOptimizerTransform`` (contract §6.2, §7): sniff, policy
(reject / pass-through), choose output type and quality, then pyvips; on a pyvips failure serve
the original bytes (kind "fallback").

The pyvips work is one ``thumbnail_buffer`` (shrink-on-load, ICC import/export to sRGB, 16 -> 8
bit, premultiplied resize) and one save with sharp 0.35.5's encoder parameters. EXIF rotation is
done by us rather than by ``thumbnail`` so that the in-memory copy it needs stays cancellable.

The process should run with ``pyvips.cache_set_max(0)``: libvips' operation cache would otherwise
keep copies of recent source buffers alive (about 17 cached operations per transform). That is
the entry point's decision, not this module's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyvips

from handler import errors
from handler.config import ImagesConfig
from handler.errors import ImageError
from handler.sniff import (
    AVIF,
    BMP,
    GIF,
    HEIC,
    ICNS,
    ICO,
    JPEG,
    JXL,
    PNG,
    SVG,
    TIFF,
    WEBP,
    detect_content_type,
    is_animated,
)
from handler.stores.base import VariantKind

# The libvips version is part of it: another libvips build may encode different bytes.
PIPELINE_VERSION = "1-vips{}.{}.{}".format(*(pyvips.version(i) for i in range(3)))

# Next 16.3+ (``getSharp``): block every loader, then allow only these (contract §13 item 9).
_ALLOWED_LOADERS = (
    "VipsForeignLoadJpeg",
    "VipsForeignLoadPng",
    "VipsForeignLoadNsgif",
    "VipsForeignLoadWebp",
    "VipsForeignLoadTiff",
    "VipsForeignLoadSvg",
    "VipsForeignLoadHeif",
)


def _allow_only_next_loaders() -> None:
    pyvips.operation_block_set("VipsForeignLoad", True)
    for loader in _ALLOWED_LOADERS:
        pyvips.operation_block_set(loader, False)


_allow_only_next_loaders()

_BYPASS = frozenset({SVG, ICO, ICNS, BMP, JXL, HEIC})  # served as they are (§6.2 step 4)
_MAX_COORD = 10_000_000  # VIPS_MAX_COORD: "no limit" for the other thumbnail axis


@dataclass(frozen=True)
class Transformed:
    body: bytes
    content_type: str  # e.g. "image/webp"; for pass-through the sniffed source type
    kind: VariantKind  # "optimized" | "original" (animated/bypass) | "fallback" (pyvips failed)


class _Unprocessable(Exception):
    """sharp would throw before decoding (too many pixels, no encoder): serve the original."""


def transform_image(
    source: bytes, *, width: int, quality: int, mime_type: str, config: ImagesConfig
) -> Transformed:
    """Next's decision order (§6.2): reject, pass through, or optimise with an original fallback."""
    upstream = detect_content_type(source)
    if upstream is None or not upstream.startswith("image/") or "," in upstream:
        raise ImageError(400, errors.NOT_AN_IMAGE)
    if upstream.startswith("image/svg") and not config.dangerously_allow_svg:
        raise ImageError(400, errors.TYPE_NOT_ALLOWED)
    if is_animated(source, upstream) or upstream in _BYPASS:
        return Transformed(source, upstream, "original")
    content_type = output_type(mime_type, upstream)
    try:
        body = _optimize(source, width, quality, content_type, config)
    except (pyvips.Error, _Unprocessable):
        return Transformed(source, upstream, "fallback")
    return Transformed(body, content_type, "optimized")


def output_type(mime_type: str, upstream: str) -> str:
    """§7.2: the negotiated type, else the source type with WebP and AVIF downlevelled to JPEG.

    Unlike Next, a parameterised type (``image/webp;level=1``) is encoded as its base type
    rather than written in the source format under a WebP label.
    """
    if mime_type:
        return mime_type.partition(";")[0]
    return JPEG if upstream in (WEBP, AVIF) else upstream


def avif_quality(quality: int) -> int:
    """§7.3: ``max(Math.round(q * 50 / 80), 1)``; JS rounds .5 up, Python's round() would not."""
    return max((quality * 5 + 4) // 8, 1)


def _optimize(
    source: bytes, width: int, quality: int, content_type: str, config: ImagesConfig
) -> bytes:
    """sharp's ``rotate().resize(w, withoutEnlargement).<encoder>()``: one thumbnail, one save."""
    save = _SAVERS.get(content_type)
    if save is None:
        raise _Unprocessable(content_type)
    timeout = config.img_opt_timeout_seconds  # 0 means none, as with sharp's timeout()
    deadline = time.monotonic() + timeout if timeout > 0 else None

    header = pyvips.Image.new_from_buffer(source, "")  # lazy: reads the header only
    limit = config.img_opt_max_input_pixels
    if limit > 0 and header.width * header.height > limit:  # 0 means none, as with sharp
        raise _Unprocessable("too many input pixels")
    orientation = _orientation(header)
    swap = orientation >= 5  # 5-8 turn the image by 90°: w then limits the source's height
    image = pyvips.Image.thumbnail_buffer(
        source,
        _MAX_COORD if swap else width,
        height=width if swap else _MAX_COORD,
        size="down",
        no_rotate=True,
        # sharp's failOn "warning". libvips 8.18's thumbnail does not hand its own fail_on
        # argument to the loader (a truncated JPEG still "succeeds"); the option string does.
        option_string="fail_on=warning",
        **_colour_options(header),
    )
    if deadline is not None:
        _cancel_after(image, deadline)
    if orientation != 1:
        # Rotation needs random access; thumbnail() would make this same copy, uncancellably.
        image = image.copy_memory().autorot()
        if deadline is not None:
            _cancel_after(image, deadline)
    return save(image, quality, config)


def encode(image: pyvips.Image, content_type: str, quality: int, config: ImagesConfig) -> bytes:
    """The encoder call alone, as the pipeline makes it (the benchmark's raw baseline uses it)."""
    return _SAVERS[content_type](image, quality, config)


def _orientation(header: pyvips.Image) -> int:
    """EXIF orientation 1-8 as libvips reads it; anything else means upright."""
    if not header.get_typeof("orientation"):
        return 1
    value = header.get("orientation")
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _colour_options(header: pyvips.Image) -> dict[str, str]:
    """Import with the embedded (or default CMYK) profile and export to sRGB, as sharp does.

    Untagged RGB and grey images skip ICC entirely: thumbnail converts them to 8-bit sRGB / B_W
    with a plain colourspace conversion, which is what sharp does too.
    """
    cmyk = header.interpretation == "cmyk"
    if not (cmyk or header.get_typeof("icc-profile-data")):
        return {}
    return {
        "output_profile": "srgb",
        # Used when there is no embedded profile (CMYK) or it is unusable.
        "input_profile": "cmyk" if cmyk else "srgb",
        "intent": "perceptual",
    }


def _cancel_after(image: pyvips.Image, deadline: float) -> None:
    """sharp's ``timeout``: libvips stops the computation once the deadline has passed."""

    def on_eval(target: pyvips.Image, _progress: Any) -> None:
        if time.monotonic() > deadline:
            target.set_kill(True)

    image.set_progress(True)
    image.signal_connect("eval", on_eval)


# --- Encoders: sharp 0.35.5's libvips parameters (contract §7.5), all with keep="none" ----------

_Saver = Callable[[pyvips.Image, int, ImagesConfig], bytes]


def _save_jpeg(image: pyvips.Image, quality: int, config: ImagesConfig) -> bytes:
    # The alpha band, if any, is flattened onto black by libvips, as with sharp.
    if config.img_opt_mozjpeg:  # pyvips-binary's libvips is built on mozjpeg: these all apply
        return bytes(
            image.jpegsave_buffer(
                Q=quality,
                interlace=True,
                subsample_mode="on",
                trellis_quant=True,
                overshoot_deringing=True,
                optimize_scans=True,
                quant_table=3,
                optimize_coding=True,
                keep="none",
            )
        )
    return bytes(
        image.jpegsave_buffer(Q=quality, subsample_mode="on", optimize_coding=True, keep="none")
    )


def _save_webp(image: pyvips.Image, quality: int, _config: ImagesConfig) -> bytes:
    return bytes(
        image.webpsave_buffer(
            Q=quality,
            alpha_q=100,
            effort=4,
            preset="default",
            lossless=False,
            near_lossless=False,
            smart_subsample=False,
            smart_deblock=False,
            min_size=False,
            mixed=False,
            exact=False,
            keep="none",
        )
    )


def _save_avif(image: pyvips.Image, quality: int, _config: ImagesConfig) -> bytes:
    return bytes(
        image.heifsave_buffer(
            Q=avif_quality(quality),
            compression="av1",
            effort=3,
            bitdepth=8,
            subsample_mode="off",  # 4:4:4, sharp's default chroma
            lossless=False,
            tune="auto",
            keep="none",
        )
    )


def _save_png(image: pyvips.Image, quality: int, _config: ImagesConfig) -> bytes:
    # sharp's png({quality}) turns palette on: libimagequant quantisation.
    return bytes(
        image.pngsave_buffer(
            Q=quality,
            palette=True,
            effort=7,
            dither=1.0,
            compression=6,
            filter="none",
            interlace=False,
            bitdepth=8,
            keep="none",
        )
    )


def _save_gif(image: pyvips.Image, _quality: int, _config: ImagesConfig) -> bytes:
    # No GIF encoder is chosen by Next: sharp writes the input format with its defaults; q unused.
    return bytes(
        image.gifsave_buffer(
            effort=7,
            dither=1.0,
            bitdepth=8,
            reuse=True,
            interframe_maxerror=0,
            interpalette_maxerror=3,
            interlace=False,
            keep="none",
        )
    )


def _save_tiff(image: pyvips.Image, _quality: int, _config: ImagesConfig) -> bytes:
    # As for GIF: sharp's default tiffsave, JPEG-compressed at Q80 whatever q was asked for.
    return bytes(
        image.tiffsave_buffer(compression="jpeg", Q=80, predictor="horizontal", keep="none")
    )


_SAVERS: dict[str, _Saver] = {
    JPEG: _save_jpeg,
    WEBP: _save_webp,
    AVIF: _save_avif,
    PNG: _save_png,
    GIF: _save_gif,
    TIFF: _save_tiff,
}
