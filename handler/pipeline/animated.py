"""Animated GIF and WebP to animated WebP, opt-in (``NEXT_IMAGE_ANIMATED=webp``). Pure, no I/O.

Next 16.4.6 serves every animated GIF, WebP and PNG as it is, whatever ``w`` asks for (its
``isAnimated`` check, before sharp): that stays the default (``passthrough``). With ``webp``, an
animation the browser may receive as WebP is resized frame by frame and written as animated
WebP; what is still served as it is, and why: docs/architecture.md, "Animated WebP".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from handler.formats import AVIF, GIF, WEBP

if TYPE_CHECKING:  # loaded by the pipeline; the settings import this module without libvips
    import pyvips

AnimatedMode = Literal["passthrough", "webp"]
MODES: tuple[AnimatedMode, ...] = ("passthrough", "webp")
DEFAULT_MAX_FRAMES = 500
DEFAULT_MAX_PIXELS = 100_000_000  # decoded pixels of all frames together

# What libvips can decode frame by frame (``n=-1``); its PNG loader has no ``n``.
DECODABLE = frozenset({GIF, WEBP})
_MAX_COORD = 10_000_000  # VIPS_MAX_COORD: "no limit" for the other thumbnail axis

# Peak memory, measured (peak RSS of one transform, 240x240 to 2000x2000 frames, 24-301 frames,
# w 384-3840): libvips' GIF loader decodes one frame at a time onto its canvas (two canvases
# held), but its WebP loader decodes every frame of the animation before the first is resized
# (452 MiB for 25 frames of 2000x2000, 381 MiB of RGBA); libwebp's animation encoder keeps a
# few whole output frames (~24 bytes per output pixel of one frame).
_FIXED_BYTES = 24 << 20
_GIF_CANVASES = 2
_WEBP_DECODE_OVERHEAD = 1.2
_ENCODER_BYTES_PER_FRAME_PIXEL = 24
_RGBA = 4

# Seconds on one reference core (the pipeline's model): a fixed part, the decode and resize per
# source megapixel of all frames, and WebP's encode per output megapixel of all frames (measured
# 0.02-0.05 s per output megapixel for screen recordings, 0.18 for noise; 0.07 for photos).
_FIXED_SECONDS = 0.04
_DECODE_SECONDS_PER_MEGAPIXEL = 0.02
_ENCODE_SECONDS_PER_MEGAPIXEL = 0.07


@dataclass(frozen=True)
class AnimatedOptions:
    """``NEXT_IMAGE_ANIMATED`` and its caps (``NEXT_IMAGE_ANIMATED_MAX_FRAMES`` / ``_PIXELS``)."""

    mode: AnimatedMode = "passthrough"
    max_frames: int = DEFAULT_MAX_FRAMES
    max_pixels: int = DEFAULT_MAX_PIXELS


PASSTHROUGH = AnimatedOptions()


@dataclass(frozen=True)
class Animation:
    """An animation to transform, sized from its header: ``frames`` of ``width`` x ``height``."""

    upstream: str
    width: int
    height: int
    frames: int

    def output_size(self, width: int) -> tuple[int, int]:
        """One output frame: ``w`` wide (never upscaled), the height in proportion, rounded."""
        if width >= self.width:
            return self.width, self.height
        return width, max(1, round(self.height * width / self.width))

    def memory(self, width: int) -> int:
        """Bytes the transform holds at its peak: the decode (one GIF frame's canvases, or every
        WebP frame: width x height x 4 bands x frames) and the encoder's few output frames."""
        frame = self.width * self.height * _RGBA
        if self.upstream == WEBP:
            decode = int(frame * self.frames * _WEBP_DECODE_OVERHEAD)
        else:
            decode = frame * _GIF_CANVASES
        out_w, out_h = self.output_size(width)
        return _FIXED_BYTES + decode + out_w * out_h * _ENCODER_BYTES_PER_FRAME_PIXEL

    def seconds(self, width: int) -> float:
        """Seconds on one reference core: every frame decoded, resized and encoded."""
        out_w, out_h = self.output_size(width)
        source_megapixels = self.width * self.height * self.frames / 1e6
        output_megapixels = out_w * out_h * self.frames / 1e6
        return (
            _FIXED_SECONDS
            + _DECODE_SECONDS_PER_MEGAPIXEL * source_megapixels
            + _ENCODE_SECONDS_PER_MEGAPIXEL * output_megapixels
        )


def for_request(options: AnimatedOptions, mime_type: str, also_webp: bool) -> AnimatedOptions:
    """The options that apply to one request: WebP output only where the browser takes WebP.

    ``mime_type`` is the negotiated type; ``also_webp``: AVIF was negotiated and the browser
    names WebP too (``ImageParams.also_webp``). A browser that accepts only AVIF, or neither,
    gets every animation as it is, as from Next.
    """
    if options.mode == "webp" and (mime_type == WEBP or (mime_type == AVIF and also_webp)):
        return options
    return PASSTHROUGH


def key_suffix(options: AnimatedOptions) -> str:
    """Appended to the variant key of a request the option applies to (``for_request``): the
    answer for an animated source differs, and so does the answer under other caps."""
    if options.mode == "passthrough":
        return ""
    return f"-a{options.mode}{options.max_frames}f{options.max_pixels}px"


def inspect(
    source: bytes,
    upstream: str,
    header: pyvips.Image,
    options: AnimatedOptions,
    max_input_pixels: int,
) -> Animation | None:
    """The animation to transform, from its header; None to serve it as it is (as Next does).

    ``header`` is the lazily loaded first frame (``new_from_buffer(source, "")``): libvips
    reads the frame count from the file without decoding a pixel. ``max_input_pixels`` is
    ``imgOptMaxInputPixels`` (0: none), which applies to each frame.
    """
    if options.mode != "webp" or upstream not in DECODABLE:
        return None
    frames = header.get("n-pages") if header.get_typeof("n-pages") else 1
    if not isinstance(frames, int) or frames < 2:
        return None  # Next's isAnimated said animated, libvips finds one frame: as it is
    if header.get_typeof("orientation") and header.get("orientation") not in (0, 1):
        return None  # rotating every frame is not worth it for so rare a file
    frame_pixels = header.width * header.height
    if max_input_pixels > 0 and frame_pixels > max_input_pixels:
        return None
    if frames > options.max_frames or frame_pixels * frames > options.max_pixels:
        return None
    return Animation(upstream, header.width, header.height, frames)


def thumbnail(source: bytes, width: int, **colour: str) -> pyvips.Image:
    """Every frame resized to ``width`` (never upscaled), stacked as libvips pages.

    ``thumbnail`` given ``n=-1`` resizes page by page: the result keeps the frame count, gets the
    new ``page-height``, and keeps ``delay`` (ms per frame) and ``loop``, which ``webpsave``
    writes. The loaders' default ``fail_on`` (none) is kept: browsers play a truncated GIF.
    ``colour``: the pipeline's ICC options for this source (none for an untagged one).
    """
    import pyvips

    return pyvips.Image.thumbnail_buffer(
        source,
        width,
        height=_MAX_COORD,
        size="down",
        no_rotate=True,
        option_string="n=-1",
        **colour,
    )


def worth_keeping(body: bytes, source: bytes) -> bool:
    """Whether the animated WebP beats the source on bytes; else the source is served."""
    return len(body) < len(source)
