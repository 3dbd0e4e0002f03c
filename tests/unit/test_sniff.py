"""Content sniffing and isAnimated against Next's rules.

Next's code: ``detectContentType`` in
``packages/next/src/server/image-optimizer/detect-content-type.ts``, and ``isAnimated`` as
``imageOptimizerTransform`` (``transform.ts`` beside it) uses it.
"""

from __future__ import annotations

import struct

import pytest

from handler.pipeline.sniff import detect_content_type, is_animated
from kit import imagegen


def _ftyp(brand: bytes, size: int = 24, total: int = 32) -> bytes:
    box = struct.pack(">I", size) + b"ftyp" + brand + b"\x00\x00\x00\x00" + b"mif1miaf"
    return box.ljust(total, b"\x00")


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0rest", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b'<?xml version="1.0"?><note/>', "image/svg+xml"),  # any XML document
        (b"<svg>", "image/svg+xml"),
        (b"\x00\x00\x01\x00\x01\x00", "image/x-icon"),
        (b"icns\x00\x00\x00\x08", "image/x-icns"),
        (b"II*\x00\x08\x00\x00\x00", "image/tiff"),
        (b"MM\x00*\x00\x00\x00\x08", "image/tiff"),  # big-endian: found by the fallback
        (b"BMsomething", "image/bmp"),
        (b"\xff\x0a\xfa", "image/jxl"),
        (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "image/jxl"),
        (b"%PDF-1.7\n", "application/pdf"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "image/jp2"),
        (b"\xff\xd8\x00\x00", "image/jpeg"),  # the fallback only wants FF D8
        (b"\x00PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),  # the fallback ignores byte 0
    ],
)
def test_magic_bytes(head: bytes, expected: str) -> None:
    assert detect_content_type(head) == expected


def test_ftyp_box_rule() -> None:
    assert detect_content_type(_ftyp(b"avif")) == "image/avif"
    assert detect_content_type(_ftyp(b"heic")) == "image/heic"
    assert detect_content_type(_ftyp(b"avis")) is None  # animated AVIF
    assert detect_content_type(_ftyp(b"mif1")) is None
    assert detect_content_type(_ftyp(b"heix")) is None
    assert detect_content_type(_ftyp(b"avif", size=12)) is None  # box shorter than 16
    assert detect_content_type(_ftyp(b"avif", size=33)) is None  # box longer than the buffer
    assert detect_content_type(_ftyp(b"avif", size=32)) == "image/avif"  # exactly the buffer


@pytest.mark.parametrize(
    "text",
    [
        '  \n<svg xmlns="http://www.w3.org/2000/svg" width="10"></svg>',
        '<!DOCTYPE svg><svg width="1" height="1"/>',
        "<!-- a comment --><svg viewBox='0 0 1 1'></svg>",
        '<html><body><p>hi</p><svg width="24" height="24"><path d="M0 0"/></svg></body></html>',
        '<!-- --><svg\ufeffwidth="1">',  # JS \s includes U+FEFF
    ],
)
def test_svg_regex_matches(text: str) -> None:
    assert detect_content_type(text.encode()) == "image/svg+xml"


@pytest.mark.parametrize(
    "text",
    [
        "<!-- comment --><svg></svg>",  # <svg> without an attribute
        '<!-- c --><SVG width="1"></SVG>',  # case-sensitive
        "<html><body>plain page</body></html>",
        "hello world",
        " " * 1000 + '<svg width="1"></svg>',  # past the first 1000 bytes
        '<!-- --><svg\x1cwidth="1">',  # Python's \s would match U+001C, JS's does not
    ],
)
def test_svg_regex_misses(text: str) -> None:
    assert detect_content_type(text.encode()) is None


def test_nothing_and_unknown() -> None:
    assert detect_content_type(b"") is None
    assert detect_content_type(b"\x00") is None
    assert detect_content_type(b"\x00\x00\x02\x00\x01\x00") is None  # CUR maps to null
    assert detect_content_type(b"8BPS\x00\x01") is None  # PSD
    assert detect_content_type(b'P3\n<svg width="1">') is None  # PNM matches before SVG


def test_detector_throw_is_none() -> None:
    # image-size's PNG check throws when the first chunk is not IHDR; Next would fail.
    assert detect_content_type(b"\x00PNG\r\n\x1a\n\x00\x00\x00\rIDAT") is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (imagegen.jpeg(8, 8), "image/jpeg"),
        (imagegen.png(8, 8), "image/png"),
        (imagegen.webp(8, 8), "image/webp"),
        (imagegen.avif(8, 8), "image/avif"),
        (imagegen.gif(8, 8), "image/gif"),
        (imagegen.tiff(8, 8), "image/tiff"),
        (imagegen.svg(), "image/svg+xml"),
        (imagegen.ico(), "image/x-icon"),
        (imagegen.icns(), "image/x-icns"),
        (imagegen.bmp(), "image/bmp"),
        (imagegen.jp2(), "image/jp2"),
    ],
)
def test_generated_images(body: bytes, expected: str) -> None:
    assert detect_content_type(body) == expected


def test_gif_animation() -> None:
    assert is_animated(imagegen.animated_gif(3), "image/gif")
    assert is_animated(imagegen.animated_gif(2), "image/gif")
    assert not is_animated(imagegen.gif(16, 16), "image/gif")
    assert not is_animated(b"GIF89a", "image/gif")  # truncated: no descriptors


def test_png_animation() -> None:
    assert is_animated(imagegen.animated_png(3), "image/png")
    assert not is_animated(imagegen.png(16, 16), "image/png")
    # Default image outside the animation (no fcTL before IDAT): static for is-animated.
    assert not is_animated(imagegen.animated_png(3, default_image_animated=False), "image/png")
    # acTL but no fdAT: a one-frame "animation" is static.
    assert not is_animated(imagegen.animated_png(1), "image/png")
    # A few stray bytes after IEND do not raise (is-animated would throw reading past the end).
    assert is_animated(imagegen.animated_png(2) + b"\x00\x01", "image/png")


def test_webp_animation() -> None:
    assert is_animated(imagegen.animated_webp(3), "image/webp")
    assert not is_animated(imagegen.webp(16, 16), "image/webp")
    # The four bytes ANIM anywhere in a WebP are enough.
    assert is_animated(imagegen.webp(16, 16) + b"ANIM", "image/webp")


def test_only_gif_png_webp_can_be_animated() -> None:
    assert not is_animated(imagegen.animated_gif(3), "image/jpeg")
    assert not is_animated(b"RIFF\x00\x00\x00\x00WEBPANIM", "image/avif")
