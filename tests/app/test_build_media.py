"""``serve --config .next``: statically imported images come from the build's ``static/media``.

A static import's ``/_next/image?url=/_next/static/media/<file>`` is answered from
``.next/static/media``, as the deploy uploads that folder under ``_next/static/media/`` in the
assets bucket, so no ``--origin`` (a running ``next start``) is needed. The folder is read by the
public folder's source, with its containment: nothing outside ``static/media`` is served.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from handler.contract import errors
from handler.contract.headers import NEXT_STATIC_MEDIA_CACHE_CONTROL
from handler.entry.settings import Settings
from handler.entry.wiring import build_app
from kit import imagegen

MEDIA = "/_next/static/media"
WEBP = {"accept": "image/webp,*/*"}


def next_build(root: Path, base_path: str = "") -> Path:
    """A ``.next`` folder as ``next build`` leaves it, as far as the optimizer reads it."""
    build = root / ".next"
    media = build / "static" / "media"
    media.mkdir(parents=True)
    (media / "x.3f2a1b.jpg").write_bytes(imagegen.jpeg(1200, 900))
    config = {"config": {"images": {}, "basePath": base_path}}
    (build / "required-server-files.json").write_text(json.dumps(config))
    return build


def client(images_config: Path, public_dir: Path | None = None) -> TestClient:
    settings = Settings(
        images_config=str(images_config), public_dir=str(public_dir) if public_dir else None
    )
    return TestClient(build_app(settings))


@pytest.mark.parametrize("given", ["folder", "required-server-files.json"])
def test_a_static_import_is_served_from_the_build(tmp_path: Path, given: str) -> None:
    build = next_build(tmp_path)
    public = tmp_path / "public"
    public.mkdir()
    (public / "a.png").write_bytes(imagegen.png(800, 600))
    config = build if given == "folder" else build / given
    with client(config, public) as app:
        response = app.get(f"/_next/image?url={MEDIA}/x.3f2a1b.jpg&w=640&q=75", headers=WEBP)
        assert response.status_code == 200, response.text
        assert imagegen.decode(response.content)[:2] == ("webp", 640)
        assert response.headers["cache-control"] == NEXT_STATIC_MEDIA_CACHE_CONTROL
        # The public folder is still served beside it.
        public_file = app.get("/_next/image?url=/a.png&w=640&q=75", headers=WEBP)
        assert public_file.status_code == 200, public_file.text
        assert imagegen.decode(public_file.content)[:2] == ("webp", 640)


def test_under_a_base_path(tmp_path: Path) -> None:
    build = next_build(tmp_path, base_path="/docs")
    with client(build) as app:
        url = f"/docs/_next/image?url=/docs{MEDIA}/x.3f2a1b.jpg&w=1080&q=75"
        response = app.get(url, headers={"accept": "image/jpeg"})
    assert response.status_code == 200, response.text
    assert imagegen.decode(response.content)[:2] == ("jpeg", 1080)


def test_nothing_outside_static_media_is_served(tmp_path: Path) -> None:
    build = next_build(tmp_path)
    secret = build / "server" / "secret.jpg"
    secret.parent.mkdir()
    secret.write_bytes(imagegen.jpeg(800, 600))
    (build / "static" / "media" / "link.jpg").symlink_to(secret)
    (build / "static" / "secret.jpg").write_bytes(imagegen.jpeg(800, 600))
    with client(build) as app:
        for url in (
            f"{MEDIA}/link.jpg",  # a symlink leading out of the folder
            f"{MEDIA}/..%2F..%2Fserver%2Fsecret.jpg",  # encoded separators
            f"{MEDIA}/%2E%2E/secret.jpg",  # an encoded dot segment: /_next/static/secret.jpg
            f"{MEDIA}/",
        ):
            response = app.get(f"/_next/image?url={url}&w=640&q=75", headers=WEBP)
            assert (response.status_code, response.text) == (404, errors.INTERNAL_INVALID), url


def test_an_inline_config_serves_no_build_folder(tmp_path: Path) -> None:
    next_build(tmp_path)
    settings = Settings(images_config="{}")
    with TestClient(build_app(settings)) as app:
        response = app.get(f"/_next/image?url={MEDIA}/x.3f2a1b.jpg&w=640&q=75", headers=WEBP)
    assert (response.status_code, response.text) == (404, errors.INTERNAL_INVALID)
