"""A static export's images config: found in its build, served, and validated as usual.

``next build`` with ``output: 'export'`` (Next 16.4.6) writes the same ``.next`` files as a
server build: ``required-server-files.json`` (its ``config`` now with ``output: 'export'``),
``images-manifest.json`` (regex sources, and ``path`` with the slash Next appends for a custom
loader) and, for the export, ``export-detail.json``. The images use a custom loader, the one
``next-image loader`` writes; Next's own image route would answer 404 for it, the optimizer must
not. The documents below are the shapes a real export build wrote (``tests/e2e/export_app``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from handler.contract.config import load_images_config
from kit.support import MakeApp
from next_image_cdk.bundled_config import bundle_images_config

LOADER_FILE = "/home/ci/site/next-image-loader.js"  # absolute: Next resolves it at build time
IMAGES: dict[str, Any] = {
    "deviceSizes": [640, 750, 828, 1080, 1200, 1920, 2048, 3840],
    "imageSizes": [32, 48, 64, 96, 128, 256, 384],
    "path": "/_next/image/",
    "loader": "custom",
    "loaderFile": LOADER_FILE,
    "domains": [],
    "disableStaticImages": False,
    "minimumCacheTTL": 14400,
    "formats": ["image/avif", "image/webp"],
    "maximumRedirects": 3,
    "maximumResponseBody": 50000000,
    "dangerouslyAllowLocalIP": False,
    "dangerouslyAllowSVG": False,
    "contentSecurityPolicy": "script-src 'none'; frame-src 'none'; sandbox;",
    "contentDispositionType": "attachment",
    "localPatterns": [{"pathname": "**", "search": ""}],
    "remotePatterns": [],
    "qualities": [60, 75],
    "unoptimized": False,
    "customCacheHandler": False,
}


def export_build(root: Path, *, loader_file: str = LOADER_FILE, base_path: str = "") -> Path:
    """The ``.next`` folder of an export build, as Next 16.4.6 writes its config files."""
    build = root / ".next"
    build.mkdir(parents=True)
    images = {**IMAGES, "loaderFile": loader_file, "path": f"{base_path}/_next/image/"}
    config = {
        "images": images,
        "basePath": base_path,
        "output": "export",
        "trailingSlash": True,
        "experimental": {"imgOptTimeoutInSeconds": 7},
    }
    (build / "required-server-files.json").write_text(
        json.dumps({"version": 1, "config": config, "appDir": str(root), "files": []})
    )
    localpatterns = [{"pathname": "^(?:\\/.*)$", "search": ""}]
    manifest = {**images, "localPatterns": localpatterns, "sizes": [640, 32]}
    (build / "images-manifest.json").write_text(json.dumps({"version": 1, "images": manifest}))
    (build / "export-detail.json").write_text(
        json.dumps({"version": 1, "outDirectory": str(root / "out"), "success": True})
    )
    return build


def test_an_export_build_is_served_and_validated_as_usual(
    make_app: MakeApp, tmp_path: Path
) -> None:
    config = load_images_config(str(export_build(tmp_path)))
    assert (config.loader, config.serves_images) == ("custom", True)
    app = make_app(config)
    ok = app.get("url=%2Ftest.png&w=640&q=60", accept="image/avif,image/webp")
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/avif"
    # Validated against the export's config: its widths, its qualities, its localPatterns.
    width, quality = app.get("url=%2Ftest.png&w=641&q=60"), app.get("url=%2Ftest.png&w=640&q=80")
    assert width.text == '"w" parameter (width) of 641 is not allowed'
    assert quality.text == '"q" parameter (quality) of 80 is not allowed'
    assert app.get("url=%2Ftest.png%3Fv%3D1&w=640&q=60").status_code == 400
    # The path Next writes with the custom loader's slash is redirected, as for any app.
    slash = app.client.get("/_next/image/?url=%2Ftest.png&w=640&q=60", follow_redirects=False)
    assert slash.status_code == 308


def test_the_manifest_alone_keeps_the_base_path(tmp_path: Path) -> None:
    build = export_build(tmp_path, base_path="/docs")
    (build / "required-server-files.json").unlink()
    config = load_images_config(str(build))
    assert config.base_path == "/docs" and config.qualities == (60, 75)
    assert config.serves_images  # its loaderFile is next-image-loader.js
    assert bundle_images_config(next_dir=build).base_path == "/docs"


@pytest.mark.parametrize(
    ("loader_file", "served"),
    [
        ("/app/next-image-loader.js", True),
        ("C:\\app\\src\\next-image-loader.ts", True),
        ("/app/next-image-loader.mjs", True),
        ("/app/cloudinary-loader.js", False),
    ],
)
def test_a_server_apps_custom_loader_is_served_when_it_is_ours(
    make_app: MakeApp, loader_file: str, served: bool
) -> None:
    """An app on another host with ``next-image loader``'s module: its build's config, not an
    export's, is served only for that loader; any other custom loader keeps Next's 404."""
    images = {**IMAGES, "loaderFile": loader_file}
    document = json.dumps({"version": 1, "config": {"images": images, "basePath": ""}})
    config = load_images_config(document)
    assert config.serves_images is served
    status = make_app(config).get("url=%2Ftest.png&w=640&q=75").status_code
    assert status == (200 if served else 404)


def test_an_unoptimized_export_is_not_served(tmp_path: Path) -> None:
    build = export_build(tmp_path)
    path = build / "required-server-files.json"
    document = json.loads(path.read_text())
    document["config"]["images"] |= {"unoptimized": True, "loader": "default"}
    path.write_text(json.dumps(document))
    assert not load_images_config(str(build)).serves_images


def test_the_function_bundle_keeps_what_makes_it_an_export(tmp_path: Path) -> None:
    """The construct bundles the config with the function: ``output`` must survive, or the
    deployed function answers 404 to every image of the export."""
    bundled = bundle_images_config(next_dir=export_build(tmp_path))
    assert (bundled.export, bundled.trailing_slash) == (True, True)
    shipped = tmp_path / "shipped" / bundled.filename
    shipped.parent.mkdir()
    shipped.write_text(json.dumps(bundled.content))
    config = load_images_config(str(shipped))
    assert config.serves_images and config.qualities == (60, 75)
    assert config.img_opt_timeout_seconds == 7
