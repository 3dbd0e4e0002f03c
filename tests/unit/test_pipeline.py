"""transform_image: Next 16.4.6 policy and the pyvips pipeline, on decoded output.

Next's code: ``imageOptimizerTransform`` and ``optimizeImage`` in
``packages/next/src/server/image-optimizer/transform.ts``.
"""

from __future__ import annotations

import struct
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pyvips

from devtools.crafted import png_claiming
from handler.contract import errors
from handler.contract.config import ImagesConfig, load_images_config
from handler.contract.errors import ImageError
from handler.formats import avif_quality, pipeline_version
from handler.pipeline.transform import (
    Plan,
    Transformed,
    plan_transform,
    run_transform,
    setup_libvips,
    transform_image,
)
from kit import imagegen
from kit.imagegen import BLUE, RED

CONFIG = ImagesConfig()
setup_libvips()  # as the composition root does for every process that serves


def run(
    source: bytes, *, w: int = 128, q: int = 75, mime: str = "image/webp", **config: Any
) -> Transformed:
    return transform_image(
        source, width=w, quality=q, mime_type=mime, config=replace(CONFIG, **config)
    )


def close(actual: list[int], expected: tuple[int, ...] | list[int], tolerance: int = 12) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def test_pipeline_version_names_libvips() -> None:
    assert pipeline_version().endswith(
        "-vips{}.{}.{}".format(*(pyvips.version(i) for i in range(3)))
    )


# --- Orientation --------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_before_resize(orientation: int) -> None:
    # Displays as 400x200 whatever the tag; w is the width after rotation (test case 70).
    out = run(imagegen.jpeg(400, 200, orientation=orientation), w=128, mime="image/jpeg")
    assert out.kind == "optimized"
    assert out.content_type == "image/jpeg"
    assert imagegen.decode(out.body) == ("jpeg", 128, 64, 3)
    assert close(imagegen.pixel(out.body, 3, 3), RED)
    assert close(imagegen.pixel(out.body, -3, -3), BLUE)
    assert "orientation" not in imagegen.fields(out.body)


def test_orientation_6_portrait_from_landscape_pixels() -> None:
    # sharp's rotate() before resize(), as optimizeImage calls them: 400x200 stored pixels,
    # orientation 6 -> 128x256.
    stored = pyvips.Image.black(400, 200, bands=3).copy(interpretation="srgb")
    stored.set_type(pyvips.GValue.gint_type, "orientation", 6)
    out = run(bytes(stored.jpegsave_buffer()), w=128)
    assert imagegen.decode(out.body) == ("webp", 128, 256, 3)


# --- Colour ---------------------------------------------------------------------------------------


def test_display_p3_is_converted_not_stripped() -> None:
    source = imagegen.jpeg(64, 64, icc="p3")
    stored_red = pyvips.Image.new_from_buffer(source, "")(8, 8)
    assert stored_red[1] > 35  # P3 numbers for sRGB red: about (234, 51, 35)
    out = run(source, w=64, mime="image/png")
    assert imagegen.decode(out.body) == ("png", 64, 64, 3)
    red = imagegen.pixel(out.body, 8, 8)
    assert red[0] >= 248 and red[1] <= 8 and red[2] <= 12, red
    assert "icc-profile-data" not in imagegen.fields(out.body)


@pytest.mark.parametrize("embed_profile", [True, False])
def test_cmyk_jpeg_becomes_srgb(embed_profile: bool) -> None:
    source = imagegen.jpeg(64, 64, icc="cmyk", embed_profile=embed_profile)
    assert pyvips.Image.new_from_buffer(source, "").interpretation == "cmyk"
    out = run(source, w=32, mime="")
    assert imagegen.decode(out.body) == ("jpeg", 32, 32, 3)
    image = pyvips.Image.new_from_buffer(out.body, "")
    assert image.interpretation == "srgb"
    r, g, b = imagegen.pixel(out.body, 2, 2)
    assert r > 200 and g < 40 and b < 40  # still red through the CMYK round trip
    assert "icc-profile-data" not in imagegen.fields(out.body)


def test_16_bit_png_to_8_bit() -> None:
    out = run(imagegen.png(64, 32, bits=16), w=32, mime="image/png")
    assert imagegen.decode(out.body) == ("png", 32, 16, 3)
    image = pyvips.Image.new_from_buffer(out.body, "")
    assert image.format == "uchar"
    assert close(imagegen.pixel(out.body, 16, 8), (128, 128, 128), 2)


# --- Alpha ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mime", "fmt"), [("image/webp", "webp"), ("image/avif", "avif"), ("", "png")]
)
def test_alpha_kept(mime: str, fmt: str) -> None:
    out = run(imagegen.png(64, 32, alpha=True), w=32, mime=mime)
    assert imagegen.decode(out.body) == (fmt, 32, 16, 4)
    assert imagegen.pixel(out.body, 4, 8)[3] >= 250  # opaque left half
    assert imagegen.pixel(out.body, -4, 8)[3] <= 5  # transparent right half


def test_alpha_webp_to_jpeg_is_flattened_on_black() -> None:
    out = run(imagegen.webp(64, 32, alpha=True), w=32, mime="")  # WebP downlevels to JPEG
    assert out.content_type == "image/jpeg"
    assert imagegen.decode(out.body) == ("jpeg", 32, 16, 3)
    assert close(imagegen.pixel(out.body, -4, 8), (0, 0, 0), 4)
    assert close(imagegen.pixel(out.body, 10, 10), (128, 128, 128), 10)


# --- Output type ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "mime", "content_type", "fmt"),
    [
        (imagegen.jpeg(256, 128), "", "image/jpeg", "jpeg"),
        (imagegen.png(256, 128), "", "image/png", "png"),
        (imagegen.gif(256, 128), "", "image/gif", "gif"),  # static GIF stays GIF (case 31)
        (imagegen.gif(256, 128), "image/webp", "image/webp", "webp"),  # ... or WebP (case 32)
        (imagegen.tiff(256, 128), "", "image/tiff", "tiff"),
        (imagegen.tiff(256, 128), "image/webp", "image/webp", "webp"),
        (imagegen.webp(256, 128), "", "image/jpeg", "jpeg"),  # downlevel (case 27)
        (imagegen.avif(64, 32), "", "image/jpeg", "jpeg"),  # downlevel (case 28)
        (imagegen.avif(64, 32), "image/webp", "image/webp", "webp"),
        (imagegen.jpeg(256, 128), "image/avif", "image/avif", "avif"),
        (imagegen.png(256, 128), "image/webp;level=1", "image/webp", "webp"),  # not Next's quirk
    ],
)
def test_output_type(source: bytes, mime: str, content_type: str, fmt: str) -> None:
    out = run(source, w=32, mime=mime)
    assert (out.kind, out.content_type) == ("optimized", content_type)
    assert imagegen.decode(out.body)[:3] == (fmt, 32, 16)


def test_png_output_is_palette() -> None:
    out = run(imagegen.png(64, 64), w=32, mime="")
    image = pyvips.Image.new_from_buffer(out.body, "")
    assert image.get("palette") == 1


def test_jpeg_output_is_progressive_unless_mozjpeg_is_off() -> None:
    source = imagegen.jpeg(256, 128)
    assert pyvips.Image.new_from_buffer(run(source, mime="image/jpeg").body, "").get("interlaced")
    plain = run(source, mime="image/jpeg", img_opt_mozjpeg=False).body
    assert not pyvips.Image.new_from_buffer(plain, "").get_typeof("interlaced")
    assert imagegen.decode(plain) == ("jpeg", 128, 64, 3)


def test_quality_is_applied() -> None:
    source = imagegen.truncated_jpeg(256, 256, keep_fraction=1.0)  # noise: size tracks quality
    low, high = run(source, q=20).body, run(source, q=90).body
    assert len(low) < len(high)
    assert imagegen.decode(low) == imagegen.decode(high) == ("webp", 128, 128, 3)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (1, 1),
        (4, 3),
        (20, 13),
        (36, 23),
        (50, 31),
        (52, 33),
        (68, 43),
        (75, 47),
        (84, 53),
        (100, 63),
    ],
)
def test_avif_quality_mapping_rounds_half_up(q: int, expected: int) -> None:
    assert avif_quality(q) == expected


def test_avif_output() -> None:
    out = run(imagegen.png(64, 48), w=32, q=4, mime="image/avif")
    assert imagegen.decode(out.body) == ("avif", 32, 24, 3)


# --- Size -----------------------------------------------------------------------------------------


def test_never_upscales_but_still_reencodes() -> None:
    source = imagegen.jpeg(400, 300)  # test case 47: 400 px wide at w=1080
    out = run(source, w=1080)
    assert out.kind == "optimized"
    assert imagegen.decode(out.body) == ("webp", 400, 300, 3)
    same_width = run(source, w=400, mime="image/jpeg")
    assert same_width.body != source
    assert imagegen.decode(same_width.body) == ("jpeg", 400, 300, 3)


def test_shrink_keeps_aspect_ratio() -> None:
    out = run(imagegen.png(800, 600), w=640)  # test case 22's image
    assert imagegen.decode(out.body) == ("webp", 640, 480, 3)


@pytest.mark.parametrize("mime", ["image/jpeg", "image/webp", "image/png", "image/avif"])
def test_metadata_stripped(mime: str) -> None:
    out = run(imagegen.jpeg(64, 64, orientation=6, icc="p3"), w=32, mime=mime)
    assert imagegen.decode(out.body)[1:3] == (32, 32)
    present = set(imagegen.fields(out.body))
    assert not present & {"exif-data", "icc-profile-data", "xmp-data", "iptc-data", "orientation"}


# --- Policy: reject and pass through --------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        b"%PDF-1.7\n%binary\n",
        b"just some text",
        b"<!doctype html><html><body>no svg here</body></html>",
        b"",
        imagegen.avif(16, 16).replace(b"ftypavif", b"ftypavis", 1),  # animated AVIF brand
    ],
)
def test_not_an_image(source: bytes) -> None:
    with pytest.raises(ImageError) as caught:
        run(source)
    assert (caught.value.status, caught.value.message) == (400, errors.NOT_AN_IMAGE)


@pytest.mark.parametrize(
    "source", [imagegen.svg(), b'<html><body><svg width="24"><path d="M0"/></svg></body></html>']
)
def test_svg_rejected_by_default(source: bytes) -> None:
    with pytest.raises(ImageError) as caught:
        run(source)
    assert (caught.value.status, caught.value.message) == (400, errors.TYPE_NOT_ALLOWED)


def test_svg_passed_through_when_allowed() -> None:
    source = imagegen.svg()
    out = run(source, dangerously_allow_svg=True)
    assert out == Transformed(source, "image/svg+xml", "original")


@pytest.mark.parametrize(
    ("source", "content_type"),
    [
        (imagegen.animated_gif(3), "image/gif"),
        (imagegen.animated_png(3), "image/png"),
        (imagegen.animated_webp(3), "image/webp"),
        (imagegen.ico(), "image/x-icon"),
        (imagegen.icns(), "image/x-icns"),
        (imagegen.bmp(), "image/bmp"),
        (b"\xff\x0a\xfa\x7f\x01\x02", "image/jxl"),
        (struct.pack(">I", 24) + b"ftypheic\x00\x00\x00\x00mif1heic", "image/heic"),
    ],
)
def test_passed_through_unchanged(source: bytes, content_type: str) -> None:
    out = run(source, w=16, mime="image/avif")
    assert out == Transformed(source, content_type, "original")


def test_animated_original_keeps_its_frames() -> None:
    source = imagegen.animated_gif(3, 48, 48)
    out = run(source, w=16)
    image = pyvips.Image.new_from_buffer(out.body, "", n=-1)
    assert (image.get("n-pages"), image.width) == (3, 48)


def test_apng_with_static_default_image_is_optimised() -> None:
    # is-animated says "static", so Next resizes it (libvips reads the default image).
    out = run(imagegen.animated_png(3, 32, 32, default_image_animated=False), w=16)
    assert out.kind == "optimized"
    assert imagegen.decode(out.body)[:3] == ("webp", 16, 16)  # opaque: libwebp drops alpha


# --- Fallback: the original bytes with the sniffed type -------------------------------------------


def _assert_fallback(
    out: Transformed, source: bytes, content_type: str, *, transient: bool = False
) -> None:
    """A deterministic failure keeps Next's fallback (stored); a timeout's is transient."""
    assert out.kind == "fallback"
    assert out.content_type == content_type
    assert out.body is source
    assert out.transient is transient


def test_truncated_jpeg_falls_back() -> None:
    source = imagegen.truncated_jpeg()  # test case 72
    _assert_fallback(run(source, mime=""), source, "image/jpeg")
    big = imagegen.truncated_jpeg(1600, 1600)  # shrink-on-load does not hide the damage
    _assert_fallback(run(big, w=64), big, "image/jpeg")


def test_jp2_falls_back() -> None:
    source = imagegen.jp2()  # test case 40: no allowed loader takes it
    _assert_fallback(run(source, mime=""), source, "image/jp2")


def test_loaders_outside_the_allowlist_are_blocked(tmp_path: Path) -> None:
    path = str(tmp_path / "image.v")  # libvips' own format: its loader is not on Next's list
    pyvips.Image.black(4, 4).write_to_file(path)
    with pytest.raises(pyvips.Error):
        pyvips.Image.new_from_file(path).avg()


def test_undecodable_bytes_with_an_image_signature_fall_back() -> None:
    source = b"\xff\xd8\xff\xe0" + b"\x00" * 64
    _assert_fallback(run(source), source, "image/jpeg")


def _decided_from_the_header(source: bytes, mime: str) -> Transformed:
    """What the plan says: a Transformed rather than a Plan means nothing is decoded."""
    plan = plan_transform(source, width=128, quality=75, mime_type=mime, config=CONFIG)
    assert isinstance(plan, Transformed)
    return plan


def test_decompression_bomb_falls_back_from_the_header() -> None:
    source = png_claiming(100_000, 100_000)  # 10^10 pixels in ~100 bytes
    _assert_fallback(_decided_from_the_header(source, "image/webp"), source, "image/png")
    _assert_fallback(run(source), source, "image/png")


def test_max_input_pixels_is_configurable() -> None:
    source = imagegen.png(100, 100)
    _assert_fallback(run(source, img_opt_max_input_pixels=9_999), source, "image/png")
    assert run(source, img_opt_max_input_pixels=10_000).kind == "optimized"
    assert run(source, img_opt_max_input_pixels=0).kind == "optimized"  # 0: no limit, as sharp


@pytest.fixture(scope="module")
def big_jpegs() -> dict[int, bytes]:
    return {o: imagegen.jpeg(2400, 2400, orientation=o, quality=80) for o in (1, 6)}


@pytest.mark.parametrize("orientation", [1, 6])
def test_timeout_cancels_and_falls_back(big_jpegs: dict[int, bytes], orientation: int) -> None:
    source = big_jpegs[orientation]
    out = run(source, w=1920, img_opt_timeout_seconds=0.001)
    # A fallback, not a late "optimized": libvips was stopped mid-way, not run to the end (how
    # soon is bench/budgets.py's to measure).
    _assert_fallback(out, source, "image/jpeg", transient=True)
    assert run(source, w=1920).kind == "optimized"


def test_the_requests_deadline_stops_the_transform_too(big_jpegs: dict[int, bytes]) -> None:
    plan = plan_transform(
        big_jpegs[1],
        width=1920,
        quality=75,
        mime_type="image/webp",
        config=load_images_config(None),
    )
    assert isinstance(plan, Plan)
    out = run_transform(plan, load_images_config(None), deadline=time.monotonic() + 0.001)
    _assert_fallback(out, big_jpegs[1], "image/jpeg", transient=True)


def test_gif_canvases_past_the_whole_decode_limit_are_served_as_they_are() -> None:
    # 7100 x 7100 = 50.4 MP: decoded whole onto an RGBA canvas it would hold ~200 MB.
    source = imagegen.gif(7100, 7100)
    _assert_fallback(_decided_from_the_header(source, ""), source, "image/gif")
    _assert_fallback(run(source, mime=""), source, "image/gif")
    assert run(imagegen.gif(1000, 1000), w=640).kind == "optimized"


@pytest.mark.parametrize(
    ("make", "mime", "at_least_mb", "at_most_mb"),
    [
        (lambda: imagegen.jpeg(4000, 3000), "image/avif", 80, 200),  # 1920 px AVIF out
        (lambda: imagegen.jpeg(4000, 3000), "image/jpeg", 24, 60),  # streamed both ways
        (lambda: imagegen.gif(4000, 4000), "image/webp", 64, 140),  # canvas decoded whole
    ],
)
def test_the_plan_sizes_memory_from_the_header(
    make: Any, mime: str, at_least_mb: int, at_most_mb: int
) -> None:
    plan = plan_transform(
        make(), width=1920, quality=75, mime_type=mime, config=load_images_config(None)
    )
    assert isinstance(plan, Plan)
    assert at_least_mb << 20 <= plan.memory <= at_most_mb << 20


def test_the_plan_times_the_transform_from_the_header() -> None:
    """Admission control queues by these plans: what costs most must plan the longest."""
    config = load_images_config(None)
    source = imagegen.jpeg(4000, 3000)

    def planned(width: int, mime: str) -> float:
        plan = plan_transform(source, width=width, quality=75, mime_type=mime, config=config)
        assert isinstance(plan, Plan)
        return plan.seconds

    small_webp, large_webp = planned(640, "image/webp"), planned(3840, "image/webp")
    large_avif = planned(3840, "image/avif")
    assert 0.04 < small_webp < large_webp < large_avif
    assert large_avif > 10 * small_webp
    assert large_avif > 3 * large_webp  # AVIF encodes cost ~5x WebP's per output pixel
    # No upscaling: past the source's width the plan stays the same.
    assert planned(4000, "image/webp") == planned(8000, "image/webp")
