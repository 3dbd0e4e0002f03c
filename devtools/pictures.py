"""The e2e app's images, drawn with pyvips into its folders before ``next build``.

Every picture is made here rather than committed, the same bytes on every run (seeded): scenes
(a two-colour gradient, a sun, hills and a little grain, so that the screenshot shows what went
where), a logo with transparency, and a noise image too large for Lambda's inline limit once
optimized.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, NamedTuple

import pyvips

Colour = tuple[int, int, int]


class Picture(NamedTuple):
    path: str  # relative to the app folder
    width: int
    height: int


def scene(width: int, height: int, top: Colour, bottom: Colour, sun: Colour, seed: int) -> Any:
    """A landscape-ish picture: a sky gradient, a sun, two rows of hills, some grain."""
    rng = random.Random(seed)
    y = pyvips.Image.xyz(width, height)[1] / max(height - 1, 1)
    sky = (y * [b - t for t, b in zip(top, bottom, strict=True)] + list(top)).cast("uchar")
    image = sky.copy(interpretation="srgb")
    radius = height // 7
    image = image.draw_circle(
        list(sun), int(width * rng.uniform(0.2, 0.8)), height // 3, radius, fill=True
    )
    for row, shade in ((0.62, 0.55), (0.78, 0.35)):
        colour = [int(c * shade) for c in bottom]
        for _ in range(5):
            r = int(height * rng.uniform(0.15, 0.3))
            image = image.draw_circle(
                colour, rng.randrange(width), int(height * row) + r, r, fill=True
            )
        image = image.draw_rect(colour, 0, int(height * (row + 0.12)), width, height, fill=True)
    grain = pyvips.Image.gaussnoise(width, height, sigma=6, mean=0, seed=seed)
    return (image + grain).cast("uchar").copy(interpretation="srgb")


def logo(size: int) -> Any:
    """A ring and a dot on a transparent background (RGBA)."""
    rgba = pyvips.Image.black(size, size, bands=4).copy(interpretation="srgb")
    centre = size // 2
    rgba = rgba.draw_circle([200, 40, 90, 255], centre, centre, size * 45 // 100, fill=True)
    rgba = rgba.draw_circle([0, 0, 0, 0], centre, centre, size * 33 // 100, fill=True)
    return rgba.draw_circle([30, 90, 200, 255], centre, centre, size // 6, fill=True)


def noise(width: int, height: int) -> Any:
    """Independent Gaussian noise in each channel: AV1 cannot compress it much."""
    bands = [
        pyvips.Image.gaussnoise(width, height, sigma=80, mean=128, seed=seed)
        for seed in (10, 11, 12)
    ]
    return bands[0].bandjoin(bands[1:]).cast("uchar").copy(interpretation="srgb")


PHOTO = Picture("app/photo.jpg", 2400, 1600)  # the static import
STREET = Picture("public/images/street.jpg", 1600, 1067)
LOGO = Picture("public/images/logo.png", 512, 512)
CARDS = tuple(Picture(f"public/images/{n}.jpg", 1200, 900) for n in ("harbour", "meadow", "dunes"))
# 3840 wide, so that w=3840 keeps every pixel of noise: a wider source is downsampled and the
# averaging makes its AVIF far smaller (a 5000 px one gives ~2.2 MB at 3840).
HUGE = Picture("public/images/huge.png", 3840, 3600)
MOUNTAIN = Picture("/remote/mountain.jpg", 1000, 667)  # the path on the "remote" server


def remote() -> bytes:
    """The remote image's bytes: the test serves them from its own loopback server."""
    image = scene(MOUNTAIN.width, MOUNTAIN.height, (200, 220, 240), (90, 100, 120), (255,) * 3, 6)
    return bytes(image.jpegsave_buffer(Q=88))


def draw(app: Path) -> dict[str, Picture]:
    """Write the app's images into ``app`` (its source folder and ``public/``)."""
    made = {
        PHOTO: scene(*PHOTO[1:], (90, 150, 230), (240, 200, 150), (255, 230, 120), 1),
        STREET: scene(*STREET[1:], (40, 40, 80), (200, 120, 90), (250, 250, 210), 2),
        CARDS[0]: scene(*CARDS[0][1:], (120, 180, 220), (30, 90, 140), (255, 255, 255), 3),
        CARDS[1]: scene(*CARDS[1][1:], (170, 210, 250), (70, 150, 60), (255, 220, 90), 4),
        CARDS[2]: scene(*CARDS[2][1:], (250, 170, 90), (210, 160, 90), (255, 250, 230), 5),
        LOGO: logo(LOGO.width),
        HUGE: noise(HUGE.width, HUGE.height),
    }
    return save(app, made)


def save(app: Path, made: dict[Picture, Any]) -> dict[str, Picture]:
    """Write each drawn image to its path under ``app`` (PNG or JPEG by its ending), leaving a
    file that already holds the same bytes untouched; the pictures by path."""
    for picture, image in made.items():
        target = app / picture.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix == ".png":
            data = bytes(image.pngsave_buffer(compression=1))
        else:
            data = bytes(image.jpegsave_buffer(Q=88))
        if not target.is_file() or target.read_bytes() != data:
            target.write_bytes(data)
    return {p.path: p for p in made}
