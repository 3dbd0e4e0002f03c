"""Test images made in memory, and a decoder to check what the service sent back.

Every generator returns encoded bytes. Pictures share one layout so that placement survives
resizing and rotation: a flat ``colour`` with a red block in the top-left corner and a blue block
in the bottom-right corner, as the picture is meant to be *displayed* (EXIF orientation applied).

Generators: jpeg, png, webp, avif, gif, tiff, animated_gif, animated_png, animated_webp, svg,
ico, icns, bmp, jp2, truncated_jpeg. Inspection: decode, pixel, fields.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Literal, NamedTuple

import pyvips

RED = (255, 0, 0)
BLUE = (0, 0, 255)
GREY = (128, 128, 128)
Colour = tuple[int, int, int]

# Applied to the upright picture, these give the stored pixels for each EXIF orientation: the
# inverse of what a viewer (libvips ``autorot``) applies.
_STORE_FOR_ORIENTATION = {
    1: lambda im: im,
    2: lambda im: im.fliphor(),
    3: lambda im: im.rot180(),
    4: lambda im: im.flipver(),
    5: lambda im: im.rot90().fliphor(),
    6: lambda im: im.rot270(),
    7: lambda im: im.rot270().fliphor(),
    8: lambda im: im.rot90(),
}


def picture(width: int, height: int, *, colour: Colour = GREY, alpha: bool = False) -> Any:
    """The upright test picture as an 8-bit sRGB pyvips image.

    With ``alpha``, the left half is opaque and the right half fully transparent.
    """
    image = (pyvips.Image.black(width, height, bands=3) + list(colour)).cast("uchar")
    block = max(1, min(width, height) // 4)
    image = image.draw_rect(list(RED), 0, 0, block, block, fill=True)
    image = image.draw_rect(list(BLUE), width - block, height - block, block, block, fill=True)
    if alpha:
        opaque = pyvips.Image.black(width, height).cast("uchar")
        image = image.bandjoin(opaque.draw_rect(255, 0, 0, width // 2, height, fill=True))
    return image.copy(interpretation="srgb")


def jpeg(
    width: int,
    height: int,
    *,
    orientation: int | None = None,
    icc: Literal["p3", "cmyk"] | None = None,
    embed_profile: bool = True,
    colour: Colour = GREY,
    quality: int = 95,
) -> bytes:
    """A JPEG that *displays* as ``width`` x ``height``.

    ``orientation`` stores the pixels turned so that the EXIF tag brings them upright again.
    ``icc="p3"`` stores Display-P3 values with the P3 profile (sRGB red becomes about
    (234, 51, 35), so a decoder that ignores the profile shows a dull red); ``icc="cmyk"``
    stores CMYK through libvips' built-in CMYK profile. ``embed_profile=False`` drops the
    profile (for CMYK, readers must then assume one).
    """
    image = picture(width, height, colour=colour)
    if orientation is not None:
        image = _STORE_FOR_ORIENTATION[orientation](image).copy()
        image.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    if icc is not None:
        image = image.icc_transform(icc, input_profile="srgb")
    keep = "all" if embed_profile else "exif"
    return bytes(image.jpegsave_buffer(Q=quality, keep=keep))


def png(
    width: int, height: int, *, alpha: bool = False, bits: Literal[8, 16] = 8, colour: Colour = GREY
) -> bytes:
    """A PNG; ``bits=16`` scales every sample by 257 so 8-bit output should equal the 8-bit one."""
    image = picture(width, height, colour=colour, alpha=alpha)
    if bits == 16:
        image = (image.cast("ushort") * 257).cast("ushort").copy(interpretation="rgb16")
    return bytes(image.pngsave_buffer(bitdepth=bits))


def webp(
    width: int, height: int, *, alpha: bool = False, colour: Colour = GREY, quality: int = 95
) -> bytes:
    return bytes(picture(width, height, colour=colour, alpha=alpha).webpsave_buffer(Q=quality))


def avif(width: int, height: int, *, alpha: bool = False, colour: Colour = GREY) -> bytes:
    """A still AVIF (major brand ``avif``); keep it small, AV1 encoding is slow."""
    image = picture(width, height, colour=colour, alpha=alpha)
    return bytes(image.heifsave_buffer(compression="av1", Q=80, effort=0))


def gif(width: int, height: int, *, colour: Colour = GREY) -> bytes:
    return bytes(picture(width, height, colour=colour).gifsave_buffer())


def tiff(width: int, height: int, *, colour: Colour = GREY) -> bytes:
    """A little-endian (``II*``) uncompressed TIFF."""
    return bytes(picture(width, height, colour=colour).tiffsave_buffer())


def _frames(count: int, width: int, height: int) -> Any:
    """``count`` pictures of different colours stacked as libvips pages."""
    pages = [picture(width, height, colour=(i * 60 % 256, 100, 50)) for i in range(count)]
    image = pyvips.Image.arrayjoin(pages, across=1).copy()
    image.set_type(pyvips.GValue.gint_type, "page-height", height)
    image.set_type(pyvips.GValue.array_int_type, "delay", [100] * count)
    return image


def animated_gif(frames: int = 3, width: int = 32, height: int = 32) -> bytes:
    return bytes(_frames(frames, width, height).gifsave_buffer())


def animated_webp(frames: int = 3, width: int = 32, height: int = 32) -> bytes:
    return bytes(_frames(frames, width, height).webpsave_buffer(Q=90))


def animated_png(
    frames: int = 3, width: int = 16, height: int = 16, *, default_image_animated: bool = True
) -> bytes:
    """An APNG, chunk by chunk.

    With ``default_image_animated=False`` the IDAT image has no fcTL: it is only a fallback
    picture and the ``frames`` animation frames all live in fdAT chunks. ``is-animated`` (so
    Next) calls such a file static.
    """
    raster = [_rgba_rows(width, height, (i * 60 % 256, 100, 50)) for i in range(frames + 1)]
    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))]
    chunks.append(_chunk(b"acTL", struct.pack(">II", frames, 0)))
    sequence = 0
    if default_image_animated:
        chunks.append(_chunk(b"fcTL", _fctl(sequence, width, height)))
        sequence += 1
        animation = raster[1:frames]
    else:
        animation = raster[1 : frames + 1]
    chunks.append(_chunk(b"IDAT", raster[0]))
    for data in animation:
        chunks.append(_chunk(b"fcTL", _fctl(sequence, width, height)))
        chunks.append(_chunk(b"fdAT", struct.pack(">I", sequence + 1) + data))
        sequence += 2
    chunks.append(_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _fctl(sequence: int, width: int, height: int) -> bytes:
    # sequence, size, offset, delay 1/10 s, dispose none, blend source
    return struct.pack(">IIIIIHHBB", sequence, width, height, 0, 0, 1, 10, 0, 0)


def _rgba_rows(width: int, height: int, colour: Colour) -> bytes:
    row = b"\x00" + bytes([*colour, 255]) * width  # filter type 0, then RGBA pixels
    return zlib.compress(row * height)


def svg(width: int = 64, height: int = 64) -> bytes:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        f'<rect width="{width}" height="{height}" fill="red"/></svg>'
    ).encode()


def ico(size: int = 16) -> bytes:
    """A one-image ICO holding a PNG."""
    body = png(size, size)
    entry = struct.pack("<BBBBHHII", size, size, 0, 0, 1, 32, len(body), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + entry + body


def icns(size: int = 16) -> bytes:
    """An ICNS with one PNG-encoded ``ic04`` (16 px) element."""
    body = png(size, size)
    element = b"ic04" + struct.pack(">I", 8 + len(body)) + body
    return b"icns" + struct.pack(">I", 8 + len(element)) + element


def bmp(width: int = 8, height: int = 8, colour: Colour = GREY) -> bytes:
    """A 24-bit bottom-up BMP."""
    stride = (width * 3 + 3) & ~3
    row = bytes([colour[2], colour[1], colour[0]]) * width  # BGR
    pixels = (row + b"\x00" * (stride - len(row))) * height
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    header = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return header + info + pixels


def jp2() -> bytes:
    """The JPEG 2000 signature and ftyp boxes only: enough to sniff, and no loader takes it."""
    signature = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
    return signature + struct.pack(">I", 20) + b"ftypjp2 " + b"\x00" * 4 + b"jp2 "


def truncated_jpeg(width: int = 256, height: int = 256, keep_fraction: float = 0.5) -> bytes:
    """A noisy JPEG cut short: libjpeg warns "Premature end of JPEG file"."""
    noise = pyvips.Image.gaussnoise(width, height, mean=128, sigma=40).cast("uchar")
    body = bytes(noise.bandjoin([noise, noise]).copy(interpretation="srgb").jpegsave_buffer(Q=90))
    return body[: int(len(body) * keep_fraction)]


class Decoded(NamedTuple):
    format: str  # "jpeg", "png", "webp", "avif", "heic", "gif", "tiff", ...
    width: int
    height: int
    bands: int


def decode(body: bytes) -> Decoded:
    """What a client would see: the format (by libvips' loader), size and band count."""
    image = pyvips.Image.new_from_buffer(body, "")
    fmt = image.get("vips-loader").removesuffix("load_buffer").removesuffix("load")
    if fmt == "heif":
        fmt = "avif" if image.get("heif-compression") == "av1" else "heic"
    return Decoded(fmt, image.width, image.height, image.bands)


def pixel(body: bytes, x: int, y: int) -> list[int]:
    """One decoded pixel, rounded; negative coordinates count from the right/bottom edge."""
    image = pyvips.Image.new_from_buffer(body, "")
    values = image(x % image.width, y % image.height)
    return [round(v) for v in values]


def fields(body: bytes) -> list[str]:
    """The metadata fields libvips finds in the encoded image."""
    return list(pyvips.Image.new_from_buffer(body, "").get_fields())


def noise_jpeg(width: int, height: int, *, seed: int = 0) -> bytes:
    """A photo-like JPEG that costs real encoder time (flat test pictures encode in no time).

    ``seed`` changes the bytes, so each seed is a distinct source (a distinct cache miss).
    """
    bands = [pyvips.Image.gaussnoise(width, height, sigma=60, mean=128 + seed % 64) for _ in "rgb"]
    image = bands[0].bandjoin(bands[1:]).cast("uchar").copy(interpretation="srgb")
    return bytes(image.jpegsave_buffer(Q=90))
