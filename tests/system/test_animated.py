"""Animated GIF and WebP to animated WebP (``NEXT_IMAGE_ANIMATED=webp``,
handler/pipeline/animated.py).

Every output is decoded frame by frame (libvips with ``n=-1``): the frame count, each frame's
size, the delays and the loop count, and the alpha band. Through the pure pipeline and through
the real app (in-process and in an isolated child); what is not transformed (the default mode, a
browser without WebP, APNG, an animation over a cap, an output no smaller than its source) must
be answered exactly as Next answers it: the source's bytes and Next's headers.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pyvips

from handler.contract.config import ImagesConfig, load_images_config
from handler.contract.validate import validate_params
from handler.entry.settings import Settings
from handler.pipeline import animated
from handler.pipeline.animated import PASSTHROUGH, AnimatedOptions
from handler.pipeline.transform import (
    Plan,
    Transformed,
    plan_transform,
    run_transform,
    transform_image,
)
from handler.request.keys import etag_of, variant_key
from kit import imagegen
from kit.support import MakeApp

WEBP_ON = AnimatedOptions("webp")
CONFIG = ImagesConfig()
DELAYS = [40, 80, 120, 160, 200, 240]
LOOP = 3
BOTH = "image/avif,image/webp,image/apng,*/*;q=0.8"  # Chrome's Accept for images


def animation(
    fmt: str,
    *,
    frames: int = 6,
    width: int = 200,
    height: int = 150,
    alpha: bool = False,
    noise: bool = True,
) -> bytes:
    """An animated GIF or WebP whose frames differ; ``noise`` makes it cost what real
    animations do. Without, it is a screen recording's: thin lines on a flat page and a moving
    cursor, smaller as GIF than as lossy WebP. With ``alpha`` the right half of every frame is
    fully transparent. Delays ``DELAYS``, played ``LOOP`` times."""
    page = pyvips.Image.black(width, height, bands=3).new_from_image([245, 245, 245])
    for y in range(4, height, 6):
        page = page.draw_rect([30, 30, 160], 4, y, max(1, width - 8 - y * 7 % 60), 2, fill=True)
    pages = []
    for i in range(frames):
        if noise:
            bands = [pyvips.Image.gaussnoise(width, height, sigma=50, mean=60 + 20 * i)] * 3
            image = bands[0].bandjoin(bands[1:]).cast("uchar")
        else:
            image = page.draw_rect([0, 0, 0], (10 + i * 8) % width, height // 2, 6, 10, fill=True)
        if alpha:
            opaque = pyvips.Image.black(width, height).cast("uchar")
            image = image.bandjoin(opaque.draw_rect(255, 0, 0, width // 2, height, fill=True))
        pages.append(image.copy(interpretation="srgb"))
    image = pyvips.Image.arrayjoin(pages, across=1).copy()
    image.set_type(pyvips.GValue.gint_type, "page-height", height)
    image.set_type(pyvips.GValue.array_int_type, "delay", DELAYS[:frames] + [100] * (frames - 6))
    image.set_type(pyvips.GValue.gint_type, "loop", LOOP)
    return bytes(image.gifsave_buffer() if fmt == "gif" else image.webpsave_buffer(Q=90))


def frames_of(body: bytes) -> Any:
    """Every frame, decoded: libvips stacks them, ``page-height`` apart."""
    return pyvips.Image.new_from_buffer(body, "", n=-1)


def assert_animated_webp(body: bytes, *, frames: int, width: int, height: int) -> Any:
    decoded = frames_of(body)
    assert decoded.get("vips-loader") == "webpload_buffer"
    assert decoded.get("n-pages") == frames
    assert decoded.width == width
    assert decoded.get("page-height") == height
    assert decoded.height == height * frames
    assert decoded.get("delay") == [*DELAYS, *[100] * (frames - 6)][:frames]
    assert decoded.get("loop") == LOOP
    return decoded


def transform(source: bytes, *, w: int = 64, mime: str = "image/webp", **options: Any) -> Any:
    return transform_image(
        source,
        width=w,
        quality=75,
        mime_type=mime,
        config=CONFIG,
        animated=replace(WEBP_ON, **options),
    )


# --- The pure pipeline ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["gif", "webp"])
@pytest.mark.parametrize(("w", "height"), [(64, 48), (128, 96), (384, 150)])
def test_every_frame_is_resized_and_timed_as_before(fmt: str, w: int, height: int) -> None:
    source = animation(fmt)
    out = transform(source, w=w)
    assert (out.kind, out.content_type) == ("optimized", "image/webp")
    assert len(out.body) < len(source)
    width = min(w, 200)  # never upscaled
    assert_animated_webp(out.body, frames=6, width=width, height=height)


def test_odd_sizes_get_the_width_asked_for_and_a_rounded_height() -> None:
    source = animation("gif", frames=7, width=333, height=217)
    out = transform(source, w=100)
    decoded = frames_of(out.body)
    assert (decoded.width, decoded.get("page-height"), decoded.get("n-pages")) == (100, 65, 7)


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_transparency_is_kept_in_every_frame(fmt: str) -> None:
    out = transform(animation(fmt, alpha=True), w=64)
    decoded = assert_animated_webp(out.body, frames=6, width=64, height=48)
    assert decoded.bands == 4
    for frame in range(6):
        top = frame * 48
        assert decoded(4, top + 4)[3] == 255  # left half opaque
        assert decoded(60, top + 4)[3] == 0  # right half transparent


def test_passthrough_is_the_default() -> None:
    source = animation("gif")
    out = transform_image(source, width=64, quality=75, mime_type="image/webp", config=CONFIG)
    assert out == Transformed(source, "image/gif", "original")


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"max_frames": 5}, "more frames than allowed"),
        ({"max_pixels": 200 * 150 * 6 - 1}, "more decoded pixels than allowed"),
    ],
)
@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_over_a_cap_the_animation_is_served_as_it_is(
    fmt: str, options: dict[str, Any], why: str
) -> None:
    source = animation(fmt)
    assert transform(source, **options) == Transformed(source, f"image/{fmt}", "original"), why


def test_at_the_caps_it_is_transformed() -> None:
    out = transform(animation("gif"), max_frames=6, max_pixels=200 * 150 * 6)
    assert out.kind == "optimized"


def test_over_the_per_frame_pixel_limit_it_is_served_as_it_is() -> None:
    source = animation("gif")
    out = transform_image(
        source,
        width=64,
        quality=75,
        mime_type="image/webp",
        config=replace(CONFIG, img_opt_max_input_pixels=200 * 150 - 1),
        animated=WEBP_ON,
    )
    assert out == Transformed(source, "image/gif", "original")


def test_apng_is_served_as_it_is() -> None:
    """libvips 8.18's PNG loader reads only an APNG's default image: no frames to resize."""
    source = imagegen.animated_png(3, 64, 64)
    with pytest.raises(pyvips.Error, match="does not support optional argument n"):
        pyvips.Image.new_from_buffer(source, "", n=-1)
    assert transform(source) == Transformed(source, "image/png", "original")


def test_an_output_no_smaller_than_its_source_is_not_served() -> None:
    """Flat frames compress better as GIF than as lossy WebP: the GIF is served, as by Next."""
    source = animation("gif", noise=False)
    out = transform(source, w=128)
    assert out == Transformed(source, "image/gif", "original")


@pytest.mark.parametrize(
    ("mime", "also_webp", "mode"),
    [
        ("image/webp", False, "webp"),
        ("image/avif", True, "webp"),
        ("image/avif", False, "passthrough"),  # a browser that names AVIF alone
        ("", False, "passthrough"),  # neither
    ],
)
def test_only_a_browser_that_takes_webp_gets_it(mime: str, also_webp: bool, mode: str) -> None:
    assert animated.for_request(WEBP_ON, mime, also_webp).mode == mode
    assert animated.for_request(PASSTHROUGH, mime, also_webp) == PASSTHROUGH


def test_also_webp_follows_next_negotiation_for_webp_alone() -> None:
    both = load_images_config('{"formats": ["image/avif", "image/webp"]}')
    avif_only = load_images_config('{"formats": ["image/avif"]}')
    query = "url=/a.gif&w=640&q=75"
    assert validate_params(query, BOTH, both).also_webp
    assert not validate_params(query, "image/avif", both).also_webp
    assert not validate_params(query, "image/avif,*/*", both).also_webp  # wildcards pick nothing
    assert not validate_params(query, "image/avif,image/webp;q=0", both).also_webp
    assert not validate_params(query, BOTH, avif_only).also_webp  # WebP not among the formats
    assert not validate_params(query, BOTH, CONFIG).also_webp  # WebP negotiated: not needed


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_the_plan_counts_every_frame(fmt: str) -> None:
    """Admission control reserves what the transform holds: libvips' WebP loader decodes every
    frame (width x height x 4 x frames) before the first is resized; its GIF loader one frame."""

    def plan(frames: int) -> Plan:
        source = animation(fmt, frames=frames, width=400, height=300, noise=False)
        planned = plan_transform(
            source, width=64, quality=75, mime_type="image/webp", config=CONFIG, animated=WEBP_ON
        )
        assert isinstance(planned, Plan) and planned.animated
        assert planned.content_type == "image/webp"
        return planned

    few, more, many = plan(6), plan(12), plan(60)
    decoded = 400 * 300 * 4 * 60
    if fmt == "webp":
        assert many.memory >= decoded
        assert many.memory - few.memory >= 400 * 300 * 4 * 54
    else:
        assert many.memory == few.memory  # one frame's canvases, whatever the count
    # Every frame is decoded and encoded: the time grows by each frame's share.
    assert many.seconds - few.seconds == pytest.approx(9 * (more.seconds - few.seconds))
    assert more.seconds > few.seconds


def test_a_past_deadline_stops_it_and_nothing_is_stored() -> None:
    source = animation("webp")
    planned = plan_transform(
        source, width=64, quality=75, mime_type="image/webp", config=CONFIG, animated=WEBP_ON
    )
    assert isinstance(planned, Plan)
    out = run_transform(planned, CONFIG, deadline=time.monotonic() - 1)
    assert out == Transformed(source, "image/webp", "fallback", transient=True)


def test_the_variant_key_differs_only_where_the_answer_may() -> None:
    keys = {
        variant_key("h", 640, 75, "image/webp", animated=animated.key_suffix(options))
        for options in (PASSTHROUGH, WEBP_ON, replace(WEBP_ON, max_frames=10))
    }
    assert len(keys) == 3
    assert variant_key("h", 640, 75, "image/webp") in keys  # pass-through keeps its keys


# --- Settings ------------------------------------------------------------------------------------


def test_settings_from_the_environment() -> None:
    assert Settings.from_env({}).animated == "passthrough"
    settings = Settings.from_env(
        {
            "NEXT_IMAGE_ANIMATED": "webp",
            "NEXT_IMAGE_ANIMATED_MAX_FRAMES": "50",
            "NEXT_IMAGE_ANIMATED_MAX_PIXELS": "1000000",
        }
    )
    assert (settings.animated, settings.animated_max_frames, settings.animated_max_pixels) == (
        "webp",
        50,
        1_000_000,
    )
    with pytest.raises(ValueError, match="NEXT_IMAGE_ANIMATED must be passthrough or webp"):
        Settings.from_env({"NEXT_IMAGE_ANIMATED": "avif"})


# --- Through the app -----------------------------------------------------------------------------


def put(public_dir: Path, name: str, body: bytes) -> bytes:
    (public_dir / name).write_bytes(body)
    return body


def next_headers(response: Any) -> dict[str, str]:
    """The headers Next's rules decide (not the date, nor whether it was a hit)."""
    return {k: v for k, v in response.headers.items() if k not in ("date", "x-nextjs-cache")}


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_the_app_answers_animated_webp_then_hits(
    make_app: MakeApp, public_dir: Path, fmt: str
) -> None:
    put(public_dir, f"a.{fmt}", animation(fmt, alpha=True))
    app = make_app(animated="webp")
    first = app.get(f"url=/a.{fmt}&w=128&q=75")
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/webp"
    assert first.headers["x-nextjs-cache"] == "MISS"
    assert first.headers["vary"] == "Accept"
    assert first.headers["cache-control"] == "public, max-age=14400, must-revalidate"
    assert first.headers["etag"] == etag_of(first.content)  # an optimized image's ETag
    assert first.headers["content-disposition"] == 'attachment; filename="a.webp"'
    assert frames_of(first.content).bands == 4
    assert_animated_webp(first.content, frames=6, width=128, height=96)
    again = app.get(f"url=/a.{fmt}&w=128&q=75")
    assert (again.headers["x-nextjs-cache"], again.content) == ("HIT", first.content)
    etag = first.headers["etag"]
    assert app.get(f"url=/a.{fmt}&w=128&q=75", **{"if-none-match": etag}).status_code == 304


def test_a_browser_that_names_avif_and_webp_gets_webp(make_app: MakeApp, public_dir: Path) -> None:
    put(public_dir, "a.gif", animation("gif"))
    app = make_app(load_images_config('{"formats": ["image/avif", "image/webp"]}'), animated="webp")
    response = app.get("url=/a.gif&w=64&q=75", accept=BOTH)
    assert response.headers["content-type"] == "image/webp"
    assert_animated_webp(response.content, frames=6, width=64, height=48)


@pytest.mark.parametrize(
    ("formats", "accept"),
    [
        ('["image/webp"]', "image/png,image/*;q=0.8"),  # no WebP
        ('["image/webp"]', None),
        ('["image/avif", "image/webp"]', "image/avif"),  # AVIF alone
        ('["image/avif"]', BOTH),  # WebP not allowed by the config
    ],
)
def test_without_webp_the_browser_gets_what_next_sends(
    make_app: MakeApp, public_dir: Path, formats: str, accept: str | None
) -> None:
    source = put(public_dir, "a.gif", animation("gif"))
    config = load_images_config(f'{{"formats": {formats}}}')
    on = make_app(config, animated="webp").get("url=/a.gif&w=64&q=75", accept=accept)
    off = make_app(config).get("url=/a.gif&w=64&q=75", accept=accept)
    assert on.status_code == off.status_code == 200
    assert on.content == off.content == source
    assert next_headers(on) == next_headers(off)
    assert on.headers["content-type"] == "image/gif"


@pytest.mark.parametrize(
    ("name", "make", "settings"),
    [
        ("big.gif", lambda: animation("gif"), {"animated_max_frames": 5}),
        ("big.webp", lambda: animation("webp"), {"animated_max_pixels": 100_000}),
        ("flat.gif", lambda: animation("gif", noise=False), {}),
        ("a.png", lambda: imagegen.animated_png(3, 64, 64), {}),
    ],
)
def test_what_is_not_transformed_is_answered_as_next_answers_it(
    make_app: MakeApp, public_dir: Path, name: str, make: Any, settings: dict[str, Any]
) -> None:
    source = put(public_dir, name, make())
    on = make_app(animated="webp", **settings).get(f"url=/{name}&w=128&q=75")
    off = make_app().get(f"url=/{name}&w=128&q=75")
    assert on.status_code == off.status_code == 200
    assert on.content == off.content == source  # byte-identical
    assert next_headers(on) == next_headers(off)  # Next's pass-through headers, ETag included


def test_switching_modes_never_serves_the_other_modes_answer(
    make_app: MakeApp, public_dir: Path
) -> None:
    """One store, three deployments in turn: each mode finds only its own answers."""
    from handler.stores.memory import MemoryStore

    source = put(public_dir, "a.gif", animation("gif"))
    store = MemoryStore()
    off = make_app(store=store).get("url=/a.gif&w=64&q=75")
    assert (off.headers["x-nextjs-cache"], off.content) == ("MISS", source)
    on = make_app(store=store, animated="webp").get("url=/a.gif&w=64&q=75")
    assert (on.headers["x-nextjs-cache"], on.headers["content-type"]) == ("MISS", "image/webp")
    fewer = make_app(store=store, animated="webp", animated_max_frames=5)
    capped = fewer.get("url=/a.gif&w=64&q=75")
    assert (capped.headers["x-nextjs-cache"], capped.content) == ("MISS", source)
    back = make_app(store=store).get("url=/a.gif&w=64&q=75")
    assert (back.headers["x-nextjs-cache"], back.content) == ("HIT", source)
    still = make_app(store=store, animated="webp").get("url=/a.gif&w=64&q=75")
    assert (still.headers["x-nextjs-cache"], still.content) == ("HIT", on.content)


def test_still_images_are_unchanged(make_app: MakeApp) -> None:
    on = make_app(animated="webp").get("url=/test.png&w=64&q=75")
    off = make_app().get("url=/test.png&w=64&q=75")
    assert on.content == off.content
    assert next_headers(on) == next_headers(off)


def test_in_an_isolated_child_too(make_app: MakeApp, public_dir: Path) -> None:
    """The child rebuilds the plan from its figures and the bytes: an animation is found
    animated there too, and its answer (optimized, or the source served as it is) comes back
    whole, with the headers it gets in-process."""
    put(public_dir, "a.webp", animation("webp"))
    put(public_dir, "flat.gif", animation("gif", noise=False))
    app = make_app(animated="webp", isolate_transforms=True)
    pool = app.coordinator.isolation
    assert pool is not None
    try:
        moving = app.get("url=/a.webp&w=64&q=75")
        assert moving.headers["content-type"] == "image/webp"
        assert_animated_webp(moving.content, frames=6, width=64, height=48)
        in_process = make_app(animated="webp").get("url=/a.webp&w=64&q=75")
        assert next_headers(moving) == next_headers(in_process)
        flat = app.get("url=/flat.gif&w=64&q=75")
        off = make_app().get("url=/flat.gif&w=64&q=75")
        assert flat.content == off.content
        assert next_headers(flat) == next_headers(off)
        assert not pool.failures
    finally:
        pool.close()


def test_warm_asks_as_the_browsers_that_will_come() -> None:
    """``next-image warm`` asks each format with the Accept a browser getting it sends, so with
    animated WebP on, an AVIF browser's variants (keyed as taking WebP too) are the ones made."""
    from handler.commands.warm.images import jobs

    both = load_images_config('{"formats": ["image/avif", "image/webp"]}')
    made = {validate_params(j.query, j.accept, both) for j in jobs(["/a.gif"], both, widths=[640])}
    query = "url=%2Fa.gif&w=640&q=75"
    assert validate_params(query, BOTH, both) in made  # Chrome, Firefox, Safari
    assert validate_params(query, "image/webp,*/*", both) in made
