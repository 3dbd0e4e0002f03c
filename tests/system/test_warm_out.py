"""``next-image warm --out DIR``: a static export's variants written as files, no function.

A small export as ``next build`` writes one: pages whose ``<img>`` (``src``, ``srcset``) and
preload links (``imagesrcset``) name the variants, built by ``next-image-loader.js`` either as
optimizer URLs or as the files its files mode links; the images under ``out/``. The files must
land where the loader's files mode points, decode as the one format asked, at the width asked
(never enlarged), beside the loader module that links them.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from handler.commands.cli import main
from handler.commands.loader import files_path, loader_source
from handler.commands.warm.out import LOADER_PATH, page_urls
from kit import imagegen

AVIF_AND_WEBP = json.dumps({"images": {"formats": ["image/avif", "image/webp"]}})


def optimizer_url(src: str, width: int, quality: int = 75) -> str:
    """As the loader builds it, HTML-escaped as React writes it into an attribute."""
    url = quote(src, safe="")
    return f"/_next/image?url={url}&amp;w={width}&amp;q={quality}"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """``out/``: two pages, a JPEG, a PNG with alpha, a static import, a name with a space."""
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "_next" / "static" / "media").mkdir(parents=True)
    (out / "images" / "street.jpg").write_bytes(imagegen.jpeg(1600, 1067))
    (out / "images" / "logo.png").write_bytes(imagegen.png(512, 512, alpha=True))
    (out / "images" / "a b.jpg").write_bytes(imagegen.jpeg(300, 200))
    (out / "_next" / "static" / "media" / "photo.1a2b.jpg").write_bytes(imagegen.jpeg(2400, 1600))
    photo_src = "/_next/static/media/photo.1a2b.jpg"
    remote = optimizer_url("https://cdn.example.com/a.jpg", 640)
    street = ", ".join(
        f"{optimizer_url('/images/street.jpg', w)} {x}x" for x, w in ((1, 640), (2, 1080))
    )
    photo = ", ".join(f"{optimizer_url(photo_src, w)} {w}w" for w in (640, 3840))
    (out / "index.html").write_text(
        "<!DOCTYPE html><html><head>"
        f'<link rel="preload" as="image" imageSrcSet="{photo}" imageSizes="100vw"/>'
        "</head><body>"
        f'<img alt="street" srcSet="{street}" src="{optimizer_url("/images/street.jpg", 1080)}"/>'
        f'<img alt="photo" sizes="100vw" srcSet="{photo}" src="{optimizer_url(photo_src, 3840)}"/>'
        '<img alt="remote" src="https://cdn.example.com/a.jpg"/>'
        f'<img alt="remote, optimized" src="{remote}"/>'
        '<link rel="stylesheet" href="/_next/static/css/a.css"/>'
        "</body></html>"
    )
    # A page built with the files mode: the variants it links are the same shape.
    logo = ", ".join(
        f"{files_path('/images/logo.png', w, 75, 'webp')} {x}x" for x, w in ((1, 128), (2, 256))
    )
    space = files_path("/images/a b.jpg", 640, 75, "webp")
    (out / "about.html").write_text(
        f'<html><body><img srcset="{logo}" src="{files_path("/images/logo.png", 256, 75, "webp")}">'
        f'<img src="{space}"></body></html>'
    )
    return out


def test_page_urls_reads_src_srcset_and_preloads(site: Path) -> None:
    urls = page_urls(site)
    assert "/_next/image?url=%2Fimages%2Fstreet.jpg&w=1080&q=75" in urls  # &amp; unescaped
    assert "/_next/image-files/images/logo.png.w128q75.webp" in urls
    assert "https://cdn.example.com/a.jpg" in urls
    assert not [u for u in urls if u.endswith(".css")]
    assert len(urls) == len(set(urls))


def test_warm_out_writes_the_files_the_pages_link(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = tmp_path / "files"
    argv = ["warm", "--out", str(files), "--pages", str(site), "--public-dir", str(site)]
    assert main([*argv, "--jobs", "2"]) == 0
    expected = {
        ("/images/street.jpg", 640): 640,
        ("/images/street.jpg", 1080): 1080,
        ("/_next/static/media/photo.1a2b.jpg", 640): 640,
        ("/_next/static/media/photo.1a2b.jpg", 3840): 2400,  # never enlarged
        ("/images/logo.png", 128): 128,
        ("/images/logo.png", 256): 256,
        ("/images/a b.jpg", 640): 300,
    }
    written = sorted(p for p in files.rglob("*.webp"))
    assert len(written) == len(expected)
    for (src, width), decoded_width in expected.items():
        path = files / unquote(files_path(src, width, 75, "webp").removeprefix("/"))
        decoded = imagegen.decode(path.read_bytes())
        assert (decoded.format, decoded.width) == ("webp", decoded_width), path
    # The logo keeps its alpha; the module beside the files links them, WebP fixed.
    logo = files / "_next/image-files/images/logo.png.w128q75.webp"
    assert imagegen.decode(logo.read_bytes()).bands == 4
    assert (files / LOADER_PATH).read_text() == loader_source("webp")
    summary = capsys.readouterr().out
    assert "wrote 7 of 7 files" in summary and "0 failed" in summary


def test_without_pages_every_image_at_every_width(tmp_path: Path, site: Path) -> None:
    files = tmp_path / "files"
    argv = ["warm", "--out", str(files), "--public-dir", str(site), "--format", "avif"]
    argv += ["--widths", "64,128", "--config", AVIF_AND_WEBP, "--jobs", "1"]
    assert main(argv) == 0
    written = sorted(p.relative_to(files).as_posix() for p in files.rglob("*.avif"))
    assert len(written) == 4 * 2  # four images, two widths, the one quality
    assert "_next/image-files/images/a b.jpg.w64q75.avif" in written
    assert imagegen.decode((files / written[0]).read_bytes()).format == "avif"
    assert (files / LOADER_PATH).read_text() == loader_source("avif")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--format", "avif"], "do not include image/avif"),  # Next's default formats: WebP
        (["--format", "avif", "--config", AVIF_AND_WEBP], "the pages were built for --format webp"),
    ],
)
def test_warm_out_refuses_what_cannot_match_the_pages(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["warm", "--out", str(tmp_path / "files"), "--pages", str(site), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_format_and_pages_need_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["warm", "--store", "filesystem", "--public-dir", str(tmp_path), "--format", "webp"]
    assert main(argv) == 2
    assert "go with --out" in capsys.readouterr().err
