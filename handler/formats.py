"""One descriptor per output format: everything the code knows about writing it, in one place.

The pipeline (saver, options, cost model), the headers (file extension), the config (which
formats ``images.formats`` may list) and the OpenAPI read these rather than tables of their own.
pyvips-free on purpose, like the store keys that import ``pipeline_version`` from here: only
``handler.pipeline.transform`` calls the savers named, and libvips is loaded when a variant key
is first made (the version it names), never by importing this.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# The media types every layer names: sniffed sources, negotiated outputs, headers.
JPEG = "image/jpeg"
PNG = "image/png"
GIF = "image/gif"
WEBP = "image/webp"
SVG = "image/svg+xml"
AVIF = "image/avif"
ICO = "image/x-icon"
ICNS = "image/x-icns"
TIFF = "image/tiff"
BMP = "image/bmp"
JXL = "image/jxl"
HEIC = "image/heic"
PDF = "application/pdf"
JP2 = "image/jp2"

# Bump on any change of output bytes; the libvips version is added (``pipeline_version``).
PIPELINE_REVISION = "1"


@functools.cache
def pipeline_version() -> str:
    """What goes into every variant key: our revision and the libvips version, as another
    libvips build may encode different bytes. Imports pyvips (once, on the first call)."""
    import pyvips

    return "{}-vips{}.{}.{}".format(PIPELINE_REVISION, *(pyvips.version(i) for i in range(3)))


def avif_quality(quality: int) -> int:
    """``optimizeImage``'s ``max(Math.round(q * (50 / 80)), 1)``: JS rounds .5 up, round() won't."""
    return max((quality * 5 + 4) // 8, 1)


def _as_asked(quality: int) -> int:
    return quality


@dataclass(frozen=True)
class OutputFormat:
    """How one format is written: the libvips parameters of Next's ``optimizeImage`` calls, as
    sharp 0.35.5's src/pipeline.cc passes them (all with keep="none"), and what it costs."""

    mime_type: str
    extension: str  # the file name's, in ``Content-Disposition``
    saver: str  # the ``pyvips.Image`` method that writes it to a buffer
    options: Mapping[str, object]  # the saver's keyword arguments
    quality: Callable[[int], int] | None  # the saver's ``Q`` for the request's ``q``; None: unused
    # Peak memory model (``Plan.memory``): the encoder's working set per output pixel.
    encoder_bytes_per_pixel: int
    # Duration model (``Plan.seconds``): CPU seconds per output megapixel on one reference core.
    encode_seconds_per_megapixel: float
    # Added to ``options`` when ``imgOptMozjpeg`` is on (pyvips-binary's libvips is mozjpeg's).
    mozjpeg: Mapping[str, object] = field(default_factory=dict)
    negotiable: bool = False  # ``images.formats`` may list it (Next: AVIF and WebP only)


OUTPUT_FORMATS: tuple[OutputFormat, ...] = (
    OutputFormat(
        AVIF,
        "avif",
        "heifsave_buffer",
        {
            "compression": "av1",
            "effort": 3,
            "bitdepth": 8,
            "subsample_mode": "off",  # 4:4:4, sharp's default chroma
            "lossless": False,
            "tune": "auto",
            "keep": "none",
        },
        avif_quality,
        encoder_bytes_per_pixel=40,
        encode_seconds_per_megapixel=0.33,
        negotiable=True,
    ),
    OutputFormat(
        WEBP,
        "webp",
        "webpsave_buffer",
        {
            "alpha_q": 100,
            "effort": 4,
            "preset": "default",
            "lossless": False,
            "near_lossless": False,
            "smart_subsample": False,
            "smart_deblock": False,
            "min_size": False,
            "mixed": False,
            "exact": False,
            "keep": "none",
        },
        _as_asked,
        encoder_bytes_per_pixel=4,
        encode_seconds_per_megapixel=0.07,
        negotiable=True,
    ),
    # The alpha band, if any, is flattened onto black by libvips, as with sharp.
    OutputFormat(
        JPEG,
        "jpeg",
        "jpegsave_buffer",
        {"subsample_mode": "on", "optimize_coding": True, "keep": "none"},
        _as_asked,
        encoder_bytes_per_pixel=5,
        encode_seconds_per_megapixel=0.055,
        mozjpeg={
            "interlace": True,
            "trellis_quant": True,
            "overshoot_deringing": True,
            "optimize_scans": True,
            "quant_table": 3,
        },
    ),
    # sharp's png({quality}) turns palette on: libimagequant quantisation.
    OutputFormat(
        PNG,
        "png",
        "pngsave_buffer",
        {
            "palette": True,
            "effort": 7,
            "dither": 1.0,
            "compression": 6,
            "filter": "none",
            "interlace": False,
            "bitdepth": 8,
            "keep": "none",
        },
        _as_asked,
        encoder_bytes_per_pixel=8,
        encode_seconds_per_megapixel=0.6,
    ),
    # No GIF encoder is chosen by Next: sharp writes the input format with its defaults; q unused.
    OutputFormat(
        GIF,
        "gif",
        "gifsave_buffer",
        {
            "effort": 7,
            "dither": 1.0,
            "bitdepth": 8,
            "reuse": True,
            "interframe_maxerror": 0,
            "interpalette_maxerror": 3,
            "interlace": False,
            "keep": "none",
        },
        None,
        encoder_bytes_per_pixel=8,
        encode_seconds_per_megapixel=0.9,
    ),
    # As for GIF: sharp's default tiffsave, JPEG-compressed at Q80 whatever q was asked for.
    OutputFormat(
        TIFF,
        "tiff",
        "tiffsave_buffer",
        {"compression": "jpeg", "Q": 80, "predictor": "horizontal", "keep": "none"},
        None,
        encoder_bytes_per_pixel=5,
        encode_seconds_per_megapixel=0.06,
    ),
)
FORMATS: Mapping[str, OutputFormat] = {f.mime_type: f for f in OUTPUT_FORMATS}
# What ``images.formats`` may list, in Next's order.
NEGOTIABLE: tuple[str, ...] = tuple(f.mime_type for f in OUTPUT_FORMATS if f.negotiable)
