"""The image pipeline, Next 16.4.6's ``imageOptimizerTransform`` and ``optimizeImage``
(``packages/next/src/server/image-optimizer/transform.ts``): pure bytes -> bytes, no I/O.

Sniff, reject or pass through, choose the output type and quality, then one libvips
``thumbnail`` and one save with sharp 0.35.5's encoder settings (``handler.formats``); on a
pyvips failure, the original bytes, as Next serves them. Planning reads only the header, so
admission control can reserve a transform's memory and time before a pixel is decoded.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, Unpack

import pyvips

from handler.contract import errors
from handler.contract.config import ImagesConfig
from handler.contract.errors import ImageError
from handler.formats import (
    AVIF,
    BMP,
    FORMATS,
    GIF,
    HEIC,
    ICNS,
    ICO,
    JPEG,
    JXL,
    OUTPUT_FORMATS,
    PNG,
    SVG,
    WEBP,
    OutputFormat,
)
from handler.model import VariantKind
from handler.pipeline import animated as animation
from handler.pipeline.animated import PASSTHROUGH, AnimatedOptions
from handler.pipeline.sniff import detect_content_type, is_animated

# Next 16.3+ (``getSharp`` in transform.ts): block every loader, then allow only these.
_ALLOWED_LOADERS = (
    "VipsForeignLoadJpeg",
    "VipsForeignLoadPng",
    "VipsForeignLoadNsgif",
    "VipsForeignLoadWebp",
    "VipsForeignLoadTiff",
    "VipsForeignLoadSvg",
    "VipsForeignLoadHeif",
)


def setup_libvips() -> None:
    """The process-wide libvips settings, applied once by the composition root (``wiring``).

    Only Next's loaders may run (a crafted file cannot reach libvips' other parsers), and the
    operation cache is off: every source is new, and the cache would keep copies of recent
    source buffers alive (about 17 cached operations per transform).
    """
    pyvips.cache_set_max(0)
    pyvips.operation_block_set("VipsForeignLoad", True)
    for loader in _ALLOWED_LOADERS:
        pyvips.operation_block_set(loader, False)


_BYPASS = frozenset({SVG, ICO, ICNS, BMP, JXL, HEIC})  # served as they are (``BYPASS_TYPES``)
_MAX_COORD = 10_000_000  # VIPS_MAX_COORD: "no limit" for the other thumbnail axis


# A GIF frame is decoded whole onto an RGBA canvas (no shrink-on-load): a 180 KB file can claim
# 16383x16383 and cost 1 GB. Larger canvases are served as they are, as over the pixel limit.
GIF_MAX_PIXELS = 50_000_000

# Peak memory model for ``Plan.memory``, fitted on 3640-3840 px photos (peak RSS of one transform):
# a fixed part, the encoder's working set per output pixel (each format's
# ``encoder_bytes_per_pixel``), and what the decoder holds whole.
_FIXED_BYTES = 24 << 20
_STREAMED_ROWS = 1024  # a sequential decode holds strips (and resize windows), not the image

# Duration model for ``Plan.seconds``, fitted on the same photos (CPU seconds of one transform on
# a 2-core x86 VM, 640-3840 px, WebP/AVIF/JPEG; within 0.4-3.4x of the measured time, where one
# average was 50x off between a 640 px WebP and a 5K-source 3840 px AVIF): a fixed part, the
# decode per source megapixel, and the encode per output megapixel (each format's
# ``encode_seconds_per_megapixel``), by far the largest for AVIF.
_FIXED_SECONDS = 0.04
_DECODE_SECONDS_PER_MEGAPIXEL = 0.013


@dataclass(frozen=True)
class Transformed:
    body: bytes
    content_type: str  # e.g. "image/webp"; for pass-through the sniffed source type
    kind: VariantKind  # "optimized" | "original" (animated/bypass) | "fallback" (pyvips failed)
    transient: bool = False  # a fallback forced by a timeout: serve it, never store it


@dataclass(frozen=True, eq=False)
class Plan:
    """An optimisation decided and sized from the header, not yet decoded.

    ``memory`` is what the transform will hold at its peak, so that admission control can
    reserve it before any pixel is decoded; ``seconds`` is how long it should take on one core
    of the reference machine, so that admission control can tell a queued request how long it
    will wait.
    """

    source: bytes
    upstream: str  # the sniffed source type, served if the transform fails
    content_type: str
    width: int
    quality: int
    header: pyvips.Image
    memory: int
    seconds: float

    @property
    def animated(self) -> bool:
        """An animation to write as animated WebP (only ``animated="webp"`` plans one).

        Read from the bytes, not stored: a process that rebuilds a plan from its figures (an
        isolated transform's child) finds the same answer.
        """
        return self.content_type == WEBP and is_animated(self.source, self.upstream)


class _Request(TypedDict):
    """``plan_transform``'s keyword arguments, which ``transform_image`` hands on."""

    width: int
    quality: int
    mime_type: str
    config: ImagesConfig
    animated: NotRequired[AnimatedOptions]


def transform_image(source: bytes, **request: Unpack[_Request]) -> Transformed:
    """``plan_transform`` then ``run_transform``, for callers that need no admission control."""
    plan = plan_transform(source, **request)
    return plan if isinstance(plan, Transformed) else run_transform(plan, request["config"])


def plan_transform(
    source: bytes,
    *,
    width: int,
    quality: int,
    mime_type: str,
    config: ImagesConfig,
    animated: AnimatedOptions = PASSTHROUGH,
) -> Transformed | Plan:
    """``imageOptimizerTransform``'s decision order: reject, pass through, or plan an optimisation.

    Only the header is read. Whatever sharp would refuse before decoding (no encoder, too many
    pixels) is already the original-bytes fallback here. ``animated``: what this request may get
    for an animation (``animated.for_request``); Next's pass-through by default.
    """
    upstream = detect_content_type(source)
    if upstream is None or not upstream.startswith("image/") or "," in upstream:
        # The source answered in full; it is the transform that finds the bytes unusable.
        raise ImageError(400, errors.NOT_AN_IMAGE, category="pipeline")
    if upstream.startswith("image/svg") and not config.dangerously_allow_svg:
        raise ImageError(400, errors.TYPE_NOT_ALLOWED, category="pipeline")
    if upstream in _BYPASS:
        return Transformed(source, upstream, "original")
    if is_animated(source, upstream):
        return _plan_animation(source, upstream, width, quality, config, animated)
    content_type = output_type(mime_type, upstream)
    fallback = Transformed(source, upstream, "fallback")
    if content_type not in _SAVERS:
        return fallback
    try:
        header = pyvips.Image.new_from_buffer(source, "")  # lazy: reads the header only
    except pyvips.Error:
        return fallback
    pixels = header.width * header.height
    limit = config.img_opt_max_input_pixels
    if limit > 0 and pixels > limit:  # 0 means none, as with sharp
        return fallback
    if upstream == GIF and pixels > GIF_MAX_PIXELS:
        return fallback
    memory = estimate_memory(header, upstream, width, content_type)
    seconds = estimate_seconds(header, width, content_type)
    return Plan(source, upstream, content_type, width, quality, header, memory, seconds)


def _plan_animation(
    source: bytes,
    upstream: str,
    width: int,
    quality: int,
    config: ImagesConfig,
    options: AnimatedOptions,
) -> Transformed | Plan:
    """Served as it is (Next), or planned as an animated WebP with every frame's cost."""
    original = Transformed(source, upstream, "original")
    if options.mode == "passthrough":
        return original
    try:
        header = pyvips.Image.new_from_buffer(source, "")  # lazy: the first frame's header
    except pyvips.Error:
        return original
    frames = animation.inspect(source, upstream, header, options, config.img_opt_max_input_pixels)
    if frames is None:
        return original
    memory, seconds = frames.memory(width), frames.seconds(width)
    return Plan(source, upstream, WEBP, width, quality, header, memory, seconds)


def run_transform(
    plan: Plan, config: ImagesConfig, *, deadline: float | None = None
) -> Transformed:
    """Decode, resize and encode; on a pyvips failure serve the original bytes, as Next does.

    ``deadline`` (``time.monotonic()``) is the request's; sharp's own timeout applies as well.
    A failure once either has passed is a timeout, which is transient: never to be stored.
    """
    timeout = config.img_opt_timeout_seconds  # 0 means none, as with sharp's timeout()
    own = time.monotonic() + timeout if timeout > 0 else None
    stop = min((d for d in (own, deadline) if d is not None), default=None)
    moving = plan.animated
    try:
        body = _optimize(plan, config, stop, moving)
    except pyvips.Error:
        timed_out = stop is not None and time.monotonic() >= stop
        # An animation libvips cannot read is served as Next serves every animation.
        kind: VariantKind = "original" if moving and not timed_out else "fallback"
        return Transformed(plan.source, plan.upstream, kind, transient=timed_out)
    if moving and not animation.worth_keeping(body, plan.source):
        return Transformed(plan.source, plan.upstream, "original")
    return Transformed(body, plan.content_type, "optimized")


def output_type(mime_type: str, upstream: str) -> str:
    """The negotiated type, else the source type with WebP and AVIF downlevelled to JPEG.

    This is how ``imageOptimizerTransform`` chooses its ``contentType``.

    Unlike Next, a parameterised type (``image/webp;level=1``) is encoded as its base type
    rather than written in the source format under a WebP label.
    """
    if mime_type:
        return mime_type.partition(";")[0]
    return JPEG if upstream in (WEBP, AVIF) else upstream


def estimate_memory(header: pyvips.Image, upstream: str, width: int, content_type: str) -> int:
    """Bytes one transform holds at its peak: fixed part + encoder working set + whole decodes.

    libvips streams most decodes strip by strip, but a GIF frame, an interlaced PNG, a
    progressive JPEG and HEIF/AVIF are decoded whole, and every encoder but JPEG's and TIFF's
    holds the whole output.
    """
    in_w, in_h, bands = header.width, header.height, header.bands
    orientation = _orientation(header)
    out_pixels = _output_pixels(header, width)
    memory = _FIXED_BYTES + out_pixels * FORMATS[content_type].encoder_bytes_per_pixel
    if orientation != 1:
        memory += out_pixels * bands  # the in-memory copy autorot needs
    interlaced = header.get_typeof("interlaced") and header.get("interlaced")
    if upstream == GIF or upstream in (AVIF, HEIC):
        memory += in_w * in_h * 4
    elif upstream == JPEG and interlaced:
        memory += in_w * in_h * bands * 4  # coefficient buffers for every scan
    elif upstream == PNG and interlaced:
        memory += in_w * in_h * bands * (2 if header.format == "ushort" else 1)
    elif upstream == WEBP:
        memory += out_pixels * 4  # decoded whole, at the shrink-on-load scale
    else:
        memory += in_w * bands * _STREAMED_ROWS
    return memory


def estimate_seconds(header: pyvips.Image, width: int, content_type: str) -> float:
    """Seconds one transform takes on one reference core: decode, then an encode that costs
    per output pixel (an AVIF pixel ~5x a WebP one)."""
    source_megapixels: float = header.width * header.height / 1e6
    output_megapixels = _output_pixels(header, width) / 1e6
    return (
        _FIXED_SECONDS
        + _DECODE_SECONDS_PER_MEGAPIXEL * source_megapixels
        + FORMATS[content_type].encode_seconds_per_megapixel * output_megapixels
    )


def _output_pixels(header: pyvips.Image, width: int) -> int:
    """Pixels of the output: ``w`` limits the width as shown (after EXIF rotation), no upscaling."""
    shown_w = header.height if _orientation(header) >= 5 else header.width
    scale = min(1.0, width / max(shown_w, 1))
    return int(header.width * header.height * scale * scale)


def _optimize(
    plan: Plan, config: ImagesConfig, deadline: float | None, moving: bool = False
) -> bytes:
    """sharp's ``rotate().resize(w, withoutEnlargement).<encoder>()``: one thumbnail, one save.

    ``moving``: an animation, every frame resized (``animated.thumbnail``), saved as WebP.
    """
    header, width = plan.header, plan.width
    if moving:
        frames = animation.thumbnail(plan.source, width, **_colour_options(header))
        if deadline is not None:
            _cancel_after(frames, deadline)
        return _SAVERS[plan.content_type](frames, plan.quality, config)
    orientation = _orientation(header)
    swap = orientation >= 5  # 5-8 turn the image by 90°: w then limits the source's height
    image = pyvips.Image.thumbnail_buffer(
        plan.source,
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
    return _SAVERS[plan.content_type](image, plan.quality, config)


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


# --- Encoders: each output format's saver, options and quality (``handler.formats``) ---

_Saver = Callable[[pyvips.Image, int, ImagesConfig], bytes]


def _save(output: OutputFormat, image: pyvips.Image, quality: int, config: ImagesConfig) -> bytes:
    """One save, as the format's descriptor says; its mozjpeg options if the config asks."""
    options = dict(output.options)
    if output.quality is not None:
        options["Q"] = output.quality(quality)
    if config.img_opt_mozjpeg:
        options.update(output.mozjpeg)
    return bytes(getattr(image, output.saver)(**options))


_SAVERS: dict[str, _Saver] = {f.mime_type: functools.partial(_save, f) for f in OUTPUT_FORMATS}
