"""Magic-byte content sniffing and animation detection, as Next 16.4.6 does it.

Next's code: ``detectContentType`` in
``packages/next/src/server/image-optimizer/detect-content-type.ts``, and the bundled
``is-animated`` that ``imageOptimizerTransform`` (``transform.ts`` beside it) calls. The
upstream ``Content-Type`` header is never consulted: these bytes decide everything, and
``detect_content_type`` never raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from handler.formats import (
    AVIF,
    BMP,
    GIF,
    HEIC,
    ICNS,
    ICO,
    JP2,
    JPEG,
    JXL,
    PDF,
    PNG,
    SVG,
    TIFF,
    WEBP,
)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# ``detectContentType``'s byte checks in its order, first match wins; between these groups come
# its WebP check and its two ``hasFtypBox`` checks (AVIF, then HEIC).
_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", JPEG),
    (_PNG_SIGNATURE, PNG),
    (b"GIF8", GIF),
)
_AFTER_WEBP: tuple[tuple[bytes, str], ...] = (
    (b"<?xml", SVG),
    (b"<svg", SVG),
)
_AFTER_AVIF: tuple[tuple[bytes, str], ...] = (
    (b"\x00\x00\x01\x00", ICO),
    (b"icns", ICNS),
    (b"II*\x00", TIFF),
    (b"BM", BMP),
    (b"\xff\x0a", JXL),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", JXL),
)
_AFTER_HEIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", PDF),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", JP2),
)


def detect_content_type(buf: bytes) -> str | None:
    """Next's ``detectContentType``: magic bytes, then the ``image-detector`` fallback."""
    if not buf:
        return None
    for magic, mime in _PREFIXES:
        if buf.startswith(magic):
            return mime
    if buf.startswith(b"RIFF") and buf[8:12] == b"WEBP":
        return WEBP
    for magic, mime in _AFTER_WEBP:
        if buf.startswith(magic):
            return mime
    if _ftyp_brand(buf) == b"avif":
        return AVIF
    for magic, mime in _AFTER_AVIF:
        if buf.startswith(magic):
            return mime
    if _ftyp_brand(buf) == b"heic":
        return HEIC
    for magic, mime in _AFTER_HEIC:
        if buf.startswith(magic):
            return mime
    try:
        found = _detector(buf[:1024])
    except _DetectorThrew:
        return None  # Next's detector throws here; we call it "not an image"
    return _DETECTOR_MIME.get(found) if found else None


def _ftyp_brand(buf: bytes) -> bytes | None:
    """The major brand of a leading ftyp box whose declared size fits the buffer (16.4 rule)."""
    if len(buf) < 12 or buf[4:8] != b"ftyp":
        return None
    if not 16 <= int.from_bytes(buf[0:4], "big") <= len(buf):
        return None
    return buf[8:12]


# --- The fallback: ``image-detector`` (image-size's type handlers) -------------------------------
#
# Only the handlers whose answer can differ from the table above, or shadow a later handler
# (a handler that matches first wins even when it maps to null), are modelled.


class _DetectorThrew(Exception):
    """A handler's ``validate`` threw in JS (image-size's PNG check does on a bad first chunk)."""


def _u16le(buf: bytes, offset: int) -> int | None:
    """JS reads past the end as ``undefined``, so any comparison with it is false."""
    part = buf[offset : offset + 2]
    return int.from_bytes(part, "little") if len(part) == 2 else None


def _is_png(buf: bytes) -> bool:
    if buf[1:8] != b"PNG\r\n\x1a\n":
        return False
    chunk = buf[12:16]
    if chunk == b"CgBI":  # Apple's "fried" PNG
        chunk = buf[28:32]
    if chunk != b"IHDR":
        raise _DetectorThrew
    return True


def _is_cur(buf: bytes) -> bool:
    count = _u16le(buf, 4)
    return _u16le(buf, 0) == 0 and count is not None and count != 0 and _u16le(buf, 2) == 2


def _is_ico(buf: bytes) -> bool:
    count = _u16le(buf, 4)
    return _u16le(buf, 0) == 0 and count is not None and count != 0 and _u16le(buf, 2) == 1


_HEIF_BRANDS = frozenset({b"avif", b"mif1", b"msf1", b"heic", b"heix", b"hevc", b"hevx"})


def _is_heif(buf: bytes) -> bool:
    return buf[4:8] == b"ftyp" and buf[8:12] in _HEIF_BRANDS


def _is_jp2(buf: bytes) -> bool:
    if buf[4:8] != b"jP  ":
        return False
    sig_len = int.from_bytes(buf[0:4], "big")
    return sig_len >= 1 and buf[sig_len + 4 : sig_len + 8] == b"ftyp"


def _is_jxl_container(buf: bytes) -> bool:
    return buf[4:8] == b"JXL " and buf[16:20] == b"ftyp" and buf[20:24] == b"jxl "


# JS \s, which differs from Python's: it includes U+FEFF and excludes U+001C..U+001F.
_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_SVG_ROOT = re.compile(f"<svg[{_JS_SPACE}]([^>\"']|\"[^\"]*\"|'[^']*')*>")


def _is_svg(buf: bytes) -> bool:
    return _SVG_ROOT.search(buf[:1000].decode("utf-8", errors="replace")) is not None


_HANDLERS: dict[str, Callable[[bytes], bool]] = {
    "bmp": lambda b: b[:2] == b"BM",
    "cur": _is_cur,
    "dds": lambda b: b[:4] == b"DDS ",
    "gif": lambda b: re.match(rb"GIF8[79]a", b) is not None,
    "heif": _is_heif,
    "icns": lambda b: b[:4] == b"icns",
    "ico": _is_ico,
    "j2c": lambda b: b[:4] == b"\xffO\xffQ",
    "jp2": _is_jp2,
    "jpg": lambda b: b[:2] == b"\xff\xd8",
    "jxl": _is_jxl_container,
    "jxl-stream": lambda b: b[:2] == b"\xff\x0a",
    "ktx": lambda b: b[1:7] in {b"KTX 11", b"KTX 20"},
    "png": _is_png,
    "pnm": lambda b: b[:2] in {b"P1", b"P2", b"P3", b"P4", b"P5", b"P6", b"P7", b"PF"},
    "psd": lambda b: b[:4] == b"8BPS",
    "svg": _is_svg,
    "tga": lambda b: _u16le(b, 0) == 0 and _u16le(b, 4) == 0,
    "tiff": lambda b: b[:4] in {b"II*\x00", b"MM\x00*"},
    "webp": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP" and b[12:15] == b"VP8",
}
_FIRST_BYTE = {
    0x38: "psd",
    0x42: "bmp",
    0x44: "dds",
    0x47: "gif",
    0x49: "tiff",
    0x4D: "tiff",
    0x52: "webp",
    0x69: "icns",
    0x89: "png",
    0xFF: "jpg",
}
_DETECTOR_MIME = {
    "webp": WEBP,
    "png": PNG,
    "jpg": JPEG,
    "gif": GIF,
    "svg": SVG,
    "jxl": JXL,
    "jxl-stream": JXL,
    "jp2": JP2,
    "tiff": TIFF,
    "bmp": BMP,
    "ico": ICO,
    "icns": ICNS,
}


def _detector(buf: bytes) -> str | None:
    """image-size's ``detector``: the first-byte guess, then every handler in order."""
    guess = _FIRST_BYTE.get(buf[0])
    if guess and _HANDLERS[guess](buf):
        return guess
    return next((name for name, validate in _HANDLERS.items() if validate(buf)), None)


# --- isAnimated (``is-animated``) ----------------------------------------------------------------


def is_animated(buf: bytes, content_type: str) -> bool:
    """``isAnimated``, consulted by Next only for GIF, PNG and WebP; the bytes pick the rule."""
    if content_type not in (GIF, PNG, WEBP):
        return False
    if buf[:3] == b"GIF":
        return _gif_is_animated(buf)
    if buf[:8] == _PNG_SIGNATURE:
        return _png_is_animated(buf)
    if buf[8:12] == b"WEBP":
        return b"ANIM" in buf
    return False


def _at(buf: bytes, offset: int) -> int:
    """A byte, or 0 past the end (JS ``undefined`` is falsy and ``undefined & n`` is 0)."""
    return buf[offset] if 0 <= offset < len(buf) else 0


def _data_blocks_length(buf: bytes, offset: int) -> int:
    length = 0
    while size := _at(buf, offset + length):
        length += size + 1
    return length + 1


def _colour_table_size(flags: int) -> int:
    return 3 * 2 ** ((flags & 0x07) + 1) if flags & 0x80 else 0


def _gif_is_animated(buf: bytes) -> bool:
    """More than one image descriptor among the blocks after the global colour table."""
    offset = 13 + _colour_table_size(_at(buf, 10))
    images = 0
    while images < 2 and offset < len(buf):
        block = buf[offset]
        if block == 0x2C:  # image descriptor
            images += 1
            offset += 10 + _colour_table_size(_at(buf, offset + 9))
            offset += _data_blocks_length(buf, offset + 1) + 1
        elif block == 0x21:  # extension
            offset += 2
            offset += _data_blocks_length(buf, offset)
        else:  # trailer, or garbage: stop
            break
    return images > 1


def _png_is_animated(buf: bytes) -> bool:
    """acTL before the first IDAT, each IDAT after fcTL/IDAT, and an fdAT after fcTL/fdAT.

    An APNG whose default image is not part of the animation (no fcTL before IDAT) is static.
    Where ``is-animated`` would throw reading a chunk length past the end, we stop the walk.
    """
    has_actl = has_idat = has_fdat = False
    previous = b""
    offset = 8
    while offset + 4 <= len(buf):
        length = int.from_bytes(buf[offset : offset + 4], "big")
        kind = buf[offset + 4 : offset + 8]
        if kind == b"acTL":
            has_actl = True
        elif kind == b"IDAT":
            if not has_actl or previous not in (b"fcTL", b"IDAT"):
                return False
            has_idat = True
        elif kind == b"fdAT":
            if not has_idat or previous not in (b"fcTL", b"fdAT"):
                return False
            has_fdat = True
        previous = kind
        offset += 12 + length
    return has_actl and has_idat and has_fdat
