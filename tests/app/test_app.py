"""Next's /_next/image behaviour at the HTTP level, through the real app.

Next's code: ``imageOptimizer`` and ``sendResponse`` in
``packages/next/src/server/image-optimizer.ts``; docs/compatibility.md lists where we deviate.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handler.contract.config import ImagesConfig, load_images_config
from kit import imagegen
from kit.configs import remote_config
from kit.support import MakeApp, Route, Upstream, request_headers

OLD_SAFARI = "image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5"
CSP = "script-src 'none'; frame-src 'none'; sandbox;"
BARE_ERROR_HEADERS = {"cache-control", "vary", "etag", "content-security-policy"}


def config(**images: Any) -> ImagesConfig:
    return load_images_config(json.dumps(images))


def assert_error(response: Any, status: int, message: str) -> None:
    """Next's bare error; a transient one (500, 502, 503, 504) is also never cached."""
    assert (response.status_code, response.text) == (status, message)
    headers = set(response.headers.keys())
    if status in (500, 502, 503, 504):
        assert response.headers["cache-control"] == "no-store"
        headers.discard("cache-control")
    assert not BARE_ERROR_HEADERS & headers
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def write(public_dir: Path, name: str, body: bytes) -> Path:
    path = public_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("w=640&q=75", '"url" parameter is required'),
        ("url=&w=640&q=75", '"url" parameter is required'),
        ("url=/test.png&url=/a.png&w=640&q=75", '"url" parameter cannot be an array'),
        ("url=/" + "a" * 4000 + "&w=640&q=75", '"url" parameter is too long'),
        (
            "url=//example.vercel.sh&w=640&q=75",
            '"url" parameter cannot be a protocol-relative URL (//)',
        ),
        ("url=/_next/image?url=test.pngw=1&q=75", '"url" parameter cannot be recursive'),
        ("url=%2F_next%2F%2569mage&w=640&q=75", '"url" parameter cannot be recursive'),
        ("url=%252F_next%252Fimage&w=640&q=75", '"url" parameter is invalid'),
        ("url=ftp://example.vercel.sh/test.png&w=640&q=75", '"url" parameter is invalid'),
        ("url=http://vercel.com/button&w=640&q=75", '"url" parameter is not allowed'),
        ("url=/api/cc%3Fx%3D1&w=640&q=75", '"url" parameter is not allowed'),
        ("url=/test.png&q=75", '"w" parameter (width) is required'),
        ("url=/test.png&w=99.9&q=75", '"w" parameter (width) must be an integer greater than 0'),
        ("url=/test.png&w=1000&q=75", '"w" parameter (width) of 1000 is not allowed'),
        ("url=/test.png&w=8&q=70", '"w" parameter (width) of 8 is not allowed'),
        ("url=/test.png&w=640", '"q" parameter (quality) is required'),
        (
            "url=/test.png&w=640&q=101",
            '"q" parameter (quality) must be an integer between 1 and 100',
        ),
        ("url=/test.png&w=640&q=80", '"q" parameter (quality) of 80 is not allowed'),
        ("url=/test.png&w=640&q=75&q=75", '"q" parameter (quality) cannot be an array'),
    ],
)
def test_validation_errors_are_bare_400s(make_app: MakeApp, query: str, message: str) -> None:
    assert_error(make_app().get(query), 400, message)


def test_optimized_png_to_webp_with_nexts_headers(make_app: MakeApp) -> None:
    app = make_app()
    response = app.get("url=/test.png&w=640&q=75")
    assert response.status_code == 200
    assert imagegen.decode(response.content)[:3] == ("webp", 640, 480)
    headers = response.headers
    assert headers["vary"] == "Accept"
    assert headers["cache-control"] == "public, max-age=14400, must-revalidate"
    assert headers["content-type"] == "image/webp"
    assert headers["content-disposition"] == 'attachment; filename="test.webp"'
    assert headers["content-security-policy"] == CSP
    assert headers["x-nextjs-cache"] == "MISS"
    assert headers["content-length"] == str(len(response.content))
    etag = base64.urlsafe_b64encode(__import__("hashlib").sha256(response.content).digest())
    assert headers["etag"] == etag.rstrip(b"=").decode()
    assert list(headers.keys())[:3] == ["vary", "cache-control", "etag"]
    again = app.get("url=/test.png&w=640&q=75")
    assert again.headers["x-nextjs-cache"] == "HIT"
    assert again.headers["etag"] == headers["etag"]
    assert again.content == response.content


@pytest.mark.parametrize(
    ("name", "accept", "fmt", "filename"),
    [
        ("test.png", None, "png", "test.png"),
        ("test.png", "*/*", "png", "test.png"),
        ("test.png", OLD_SAFARI, "png", "test.png"),
        ("test.jpg", OLD_SAFARI, "jpeg", "test.jpeg"),
        ("test.webp", OLD_SAFARI, "jpeg", "test.jpeg"),
        ("test.webp", "image/png", "jpeg", "test.jpeg"),
        ("test.avif", OLD_SAFARI, "jpeg", "test.jpeg"),
        ("test.png", "image/webp,*/*", "webp", "test.webp"),
        ("test.png", "image/webp,image/apng,image/*,*/*;q=0.8", "webp", "test.webp"),
        ("test.png", "image/invalid", "png", "test.png"),
        ("test.gif", "image/invalid", "gif", "test.gif"),
        ("test.tiff", "image/invalid", "tiff", "test.tiff"),
        ("test.gif", "image/webp", "webp", "test.webp"),
        ("test.tiff", "image/webp", "webp", "test.webp"),
        ("test.avif", "image/webp", "webp", "test.webp"),
    ],
)
def test_output_type_follows_accept_and_source(
    make_app: MakeApp, public_dir: Path, name: str, accept: str | None, fmt: str, filename: str
) -> None:
    sources = {
        "test.webp": lambda: imagegen.webp(800, 600),
        "test.avif": lambda: imagegen.avif(800, 600),
        "test.gif": lambda: imagegen.gif(800, 600),
        "test.tiff": lambda: imagegen.tiff(800, 600),
    }
    if name in sources:
        write(public_dir, name, sources[name]())
    response = make_app().get(f"url=/{name}&w=640&q=75", accept=accept)
    assert response.status_code == 200
    decoded = imagegen.decode(response.content)
    assert (decoded.format, decoded.width, decoded.height) == (fmt, 640, 480)
    assert response.headers["content-disposition"] == f'attachment; filename="{filename}"'


def test_avif_when_configured_and_accepted(make_app: MakeApp) -> None:
    app = make_app(config(formats=["image/avif", "image/webp"]))
    response = app.get(
        "url=/test.png&w=64&q=75", accept="image/avif,image/webp,image/apng,*/*;q=0.8"
    )
    assert response.headers["content-type"] == "image/avif"
    assert imagegen.decode(response.content)[:3] == ("avif", 64, 48)
    assert response.headers["content-disposition"] == 'attachment; filename="test.avif"'


@pytest.mark.parametrize(
    ("name", "make", "content_type"),
    [
        ("animated.gif", imagegen.animated_gif, "image/gif"),
        ("animated.png", imagegen.animated_png, "image/png"),
        ("animated.webp", imagegen.animated_webp, "image/webp"),
        ("test.ico", imagegen.ico, "image/x-icon"),
        ("test.icns", imagegen.icns, "image/x-icns"),
        ("test.bmp", imagegen.bmp, "image/bmp"),
    ],
)
def test_pass_through_types_serve_the_original_bytes(
    make_app: MakeApp, public_dir: Path, name: str, make: Any, content_type: str
) -> None:
    path = write(public_dir, name, make())
    response = make_app().get(f"url=/{name}&w=640&q=75")
    assert response.status_code == 200
    assert response.content == path.read_bytes()
    assert response.headers["content-type"] == content_type
    assert response.headers["vary"] == "Accept"
    stat = path.stat()
    upstream_etag = f'W/"{stat.st_size:x}-{int(stat.st_mtime * 1000):x}"'
    expected = base64.urlsafe_b64encode(upstream_etag.encode()).rstrip(b"=").decode()
    assert response.headers["etag"] == expected


def test_svg_is_refused_unless_allowed(make_app: MakeApp, public_dir: Path) -> None:
    path = write(public_dir, "test.svg", imagegen.svg())
    refused = make_app().get("url=/test.svg&w=640&q=75")
    assert_error(refused, 400, '"url" parameter is valid but image type is not allowed')
    allowed = make_app(config(dangerouslyAllowSVG=True)).get("url=/test.svg&w=640&q=75")
    assert allowed.status_code == 200
    assert allowed.content == path.read_bytes()
    assert allowed.headers["content-type"] == "image/svg+xml"
    assert allowed.headers["content-length"] == str(path.stat().st_size)
    assert allowed.headers["content-disposition"] == 'attachment; filename="test.svg"'
    assert allowed.headers["content-security-policy"] == CSP


def test_svg_bytes_under_another_name_are_still_svg(make_app: MakeApp, public_dir: Path) -> None:
    write(public_dir, "fake.png", imagegen.svg())
    response = make_app().get("url=/fake.png&w=640&q=75")
    assert_error(response, 400, '"url" parameter is valid but image type is not allowed')


@pytest.mark.parametrize(("name", "body"), [("doc.pdf", b"%PDF-1.4\n%..."), ("a.txt", b"hello")])
def test_non_images_are_rejected(
    make_app: MakeApp, public_dir: Path, name: str, body: bytes
) -> None:
    write(public_dir, name, body)
    response = make_app().get(f"url=/{name}&w=640&q=75")
    assert_error(response, 400, "The requested resource isn't a valid image.")


def test_jp2_falls_back_to_the_original(make_app: MakeApp, public_dir: Path) -> None:
    path = write(public_dir, "test.jp2", imagegen.jp2())
    response = make_app().get("url=/test.jp2&w=640&q=75")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jp2"
    assert response.content == path.read_bytes()


def test_truncated_jpeg_serves_original_with_minimum_ttl(
    make_app: MakeApp, public_dir: Path
) -> None:
    path = write(public_dir, "cut.jpg", imagegen.truncated_jpeg())
    response = make_app(config(minimumCacheTTL=60)).get("url=/cut.jpg&w=640&q=75")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == path.read_bytes()
    assert response.headers["cache-control"] == "public, max-age=60, must-revalidate"


def test_missing_and_empty_files(make_app: MakeApp, public_dir: Path) -> None:
    app = make_app()
    message = '"url" parameter is valid but internal response is invalid'
    assert_error(app.get("url=/does_not_exist.jpg&w=640&q=75"), 404, message)
    write(public_dir, "empty.png", b"")
    assert_error(app.get("url=/empty.png&w=640&q=75"), 400, message)


@pytest.mark.parametrize(
    "url",
    [
        "/../secret.png",
        "/%2e%2e/secret.png",
        "/a/%2e%2e%2f%2e%2e%2fsecret.png",
        "/..%2fsecret.png",
        "/..%5csecret.png",
        "/link/secret.png",
        "/linkfile.png",
    ],
)
def test_path_traversal_is_impossible(
    make_app: MakeApp, public_dir: Path, tmp_path: Path, url: str
) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(imagegen.png(64, 64))
    (public_dir / "link").symlink_to(tmp_path, target_is_directory=True)
    (public_dir / "linkfile.png").symlink_to(secret)
    response = make_app().get(f"url={url.replace('%', '%25')}&w=640&q=75")
    assert response.status_code in (400, 404)
    assert not response.headers.get("content-type", "").startswith("image/")


def test_never_upscales(make_app: MakeApp, public_dir: Path) -> None:
    write(public_dir, "small.jpg", imagegen.jpeg(400, 300))
    response = make_app().get("url=/small.jpg&w=1080&q=75")
    assert imagegen.decode(response.content)[:3] == ("webp", 400, 300)


def test_exif_orientation_applies_before_resize(make_app: MakeApp, public_dir: Path) -> None:
    write(public_dir, "exif6.jpg", imagegen.jpeg(200, 400, orientation=6))
    response = make_app().get("url=/exif6.jpg&w=128&q=75")
    assert imagegen.decode(response.content)[:3] == ("webp", 128, 256)


def test_static_media_is_immutable_on_miss_and_hit(make_app: MakeApp, public_dir: Path) -> None:
    write(public_dir, "_next/static/media/photo.3f2a1b.jpg", imagegen.jpeg(800, 600))
    app = make_app()
    for expected_cache in ("MISS", "HIT"):
        response = app.get("url=/_next/static/media/photo.3f2a1b.jpg&w=640&q=75")
        assert response.headers["cache-control"] == "public, max-age=315360000, immutable"
        assert response.headers["x-nextjs-cache"] == expected_cache


def test_if_none_match_gives_a_bare_304(make_app: MakeApp) -> None:
    app = make_app(config(qualities=[50, 75, 100]))
    first = app.get("url=/test.png&w=640&q=75")
    etag = first.headers["etag"]
    response = app.get("url=/test.png&w=640&q=75", **{"if-none-match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert dict(response.headers) == {
        "vary": "Accept",
        "cache-control": "public, max-age=14400, must-revalidate",
        "etag": etag,
        "content-type": "image/webp",
    }
    other = app.get("url=/test.png&w=640&q=50", **{"if-none-match": etag})
    assert other.status_code == 200
    assert other.headers["etag"] != etag


def test_head_has_headers_and_no_body(make_app: MakeApp) -> None:
    app = make_app()
    full = app.get("url=/test.png&w=640&q=75")
    response = app.client.head(
        "/_next/image?url=/test.png&w=640&q=75", headers={"accept": "image/webp"}
    )
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(full.content))
    assert response.headers["content-type"] == "image/webp"


def test_unicode_file_name(make_app: MakeApp, public_dir: Path) -> None:
    write(public_dir, "日本.png", imagegen.png(64, 64))
    response = make_app().get("url=%2F%E6%97%A5%E6%9C%AC.png&w=640&q=75")
    assert response.status_code == 200
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"??.webp\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.webp"
    )


def test_inline_disposition_and_custom_csp(make_app: MakeApp) -> None:
    app = make_app(
        config(contentDispositionType="inline", contentSecurityPolicy="default-src 'none'")
    )
    response = app.get("url=/test.png&w=640&q=75")
    assert response.headers["content-disposition"] == 'inline; filename="test.webp"'
    assert response.headers["content-security-policy"] == "default-src 'none'"


def test_deviations_answer_400_where_next_answers_500(make_app: MakeApp) -> None:
    app = make_app()
    assert_error(
        app.get("url=/test.png&w=640&q=75", accept="image/webp;foo"), 400, "Invalid Accept header"
    )
    assert_error(
        app.get("url=%2F%25E0%25A4%25A.png&w=640&q=75"),
        400,
        '"url" parameter has a malformed percent-encoding',
    )


def test_trailing_slash_redirects_and_other_paths_404(make_app: MakeApp) -> None:
    app = make_app()
    response = app.client.get("/_next/image/?url=/test.png&w=640&q=75", follow_redirects=False)
    assert response.status_code == 308
    assert response.headers["location"] == "/_next/image?url=/test.png&w=640&q=75"
    assert app.client.get("/_next/imagefoo?url=/test.png&w=640&q=75").status_code == 404
    assert app.client.get("/_next/image/foo?url=/test.png&w=640&q=75").status_code == 404


@pytest.mark.parametrize(
    "images", [{"loader": "cloudinary", "path": "https://x/"}, {"unoptimized": True}]
)
def test_non_default_loader_or_unoptimized_is_404(
    make_app: MakeApp, images: dict[str, Any]
) -> None:
    assert make_app(config(**images)).get("url=/test.png&w=640&q=75").status_code == 404


def test_base_path(make_app: MakeApp) -> None:
    app = make_app(load_images_config(json.dumps({"config": {"basePath": "/docs", "images": {}}})))
    assert app.client.get("/_next/image?url=/test.png&w=640&q=75").status_code == 404
    response = app.client.get(
        "/docs/_next/image?url=/test.png&w=640&q=75", headers={"accept": "image/webp"}
    )
    assert response.status_code == 200


# --- remote sources, served by a real HTTP server on loopback ---


def test_remote_allowed_with_upstream_max_age(make_app: MakeApp, upstream: Upstream) -> None:
    png = imagegen.png(800, 600)
    upstream.routes["/a.png"] = Route(headers={"Cache-Control": "max-age=100"}, body=png)
    upstream.routes["/b.png"] = Route(
        headers={"Cache-Control": "s-maxage=200,max-age=100"}, body=png
    )
    upstream.routes["/c.png"] = Route(headers={"Cache-Control": "max-age=1"}, body=png)
    app = make_app(remote_config(upstream))
    for path, max_age in (("/a.png", 100), ("/b.png", 200), ("/c.png", 5)):
        response = app.get(f"url={upstream.url(path)}&w=640&q=75")
        assert response.status_code == 200
        assert imagegen.decode(response.content)[:3] == ("webp", 640, 480)
        assert response.headers["cache-control"] == f"public, max-age={max_age}, must-revalidate"
    # Nothing of the client's reaches the upstream.
    assert all("cookie" not in r and r["user-agent"] == "node" for r in request_headers(upstream))


def test_remote_sniffs_bytes_not_content_type(make_app: MakeApp, upstream: Upstream) -> None:
    upstream.routes["/png-as-octet-stream"] = Route(
        headers={"Content-Type": "application/octet-stream"}, body=imagegen.png(64, 64)
    )
    response = make_app(remote_config(upstream)).get(
        f"url={upstream.url('/png-as-octet-stream')}&w=640&q=75"
    )
    assert response.headers["content-type"] == "image/webp"
    assert (
        response.headers["content-disposition"] == 'attachment; filename="png-as-octet-stream.webp"'
    )


def test_remote_not_matching_patterns_is_not_allowed(make_app: MakeApp, upstream: Upstream) -> None:
    upstream.routes["/a.png"] = Route(body=imagegen.png(64, 64))
    app = make_app(config(remotePatterns=[{"hostname": "images.example.com"}]))
    assert_error(
        app.get(f"url={upstream.url('/a.png')}&w=640&q=75"), 400, '"url" parameter is not allowed'
    )
    assert upstream.hits == {}


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:{port}/a.png",
        "http://127.0.0.1:{port}/a.png",
        "http://[::1]:{port}/a.png",
        "http://0x7f.1:{port}/a.png",
    ],
)
def test_private_addresses_are_refused(make_app: MakeApp, upstream: Upstream, url: str) -> None:
    upstream.routes["/a.png"] = Route(body=imagegen.png(64, 64))
    app = make_app(config(remotePatterns=[{"hostname": "**"}]))
    response = app.get(f"url={url.format(port=upstream.port)}&w=640&q=75")
    assert_error(response, 400, '"url" parameter is not allowed')
    assert upstream.hits == {}


def test_remote_redirect_and_upstream_errors(make_app: MakeApp, upstream: Upstream) -> None:
    upstream.routes["/img.png"] = Route(body=imagegen.png(64, 64))
    upstream.routes["/redirect"] = Route(301, headers={"Location": "/img.png"})
    upstream.routes["/loop"] = Route(302, headers={"Location": "/loop"})
    upstream.routes["/missing"] = Route(404, b"nope")
    upstream.routes["/empty"] = Route(200, b"")
    upstream.routes["/linkedin"] = Route(999, b"Request denied")
    app = make_app(remote_config(upstream), max_attempts=1)
    ok = app.get(f"url={upstream.url('/redirect')}&w=640&q=75")
    assert ok.status_code == 200
    assert ok.headers["content-disposition"] == 'attachment; filename="redirect.webp"'
    invalid = '"url" parameter is valid but upstream response is invalid'
    assert_error(app.get(f"url={upstream.url('/loop')}&w=640&q=75"), 508, invalid)
    assert_error(app.get(f"url={upstream.url('/missing')}&w=640&q=75"), 404, invalid)
    assert_error(app.get(f"url={upstream.url('/empty')}&w=640&q=75"), 400, invalid)
    assert_error(app.get(f"url={upstream.url('/linkedin')}&w=640&q=75"), 502, invalid)


def test_remote_oversize_body_is_413(make_app: MakeApp, upstream: Upstream) -> None:
    upstream.routes["/big.png"] = Route(body=imagegen.png(64, 64) + b"\0" * 300_000)
    app = make_app(remote_config(upstream, maximumResponseBody=200_000))
    response = app.get(f"url={upstream.url('/big.png')}&w=640&q=75")
    assert_error(response, 413, '"url" parameter is valid but upstream response is invalid')


def test_unresolvable_host_is_502(make_app: MakeApp) -> None:
    app = make_app(config(remotePatterns=[{"hostname": "**"}]), max_attempts=1)
    response = app.get("url=http://nonexistent.invalid/a.png&w=640&q=75")
    assert_error(response, 502, '"url" parameter is valid but upstream response is invalid')


@pytest.fixture
def unanswered(upstream: Upstream) -> Iterator[str]:
    """An upstream path whose answer waits until the test is over: every fetch times out."""
    never = threading.Event()
    upstream.routes["/slow.png"] = Route(body=imagegen.png(64, 64), gate=never)
    yield upstream.url("/slow.png")
    never.set()


def test_slow_upstream_times_out_with_504(
    make_app: MakeApp, upstream: Upstream, unanswered: str
) -> None:
    app = make_app(remote_config(upstream), fetch_timeout=0.3, max_attempts=1)
    response = app.get(f"url={unanswered}&w=640&q=75")
    assert_error(response, 504, '"url" parameter is valid but upstream response timed out')


def test_request_time_budget_covers_retries(
    make_app: MakeApp, upstream: Upstream, unanswered: str
) -> None:
    app = make_app(remote_config(upstream), fetch_timeout=0.3, max_attempts=10, timeout=1.0)
    response = app.get(f"url={unanswered}&w=640&q=75")
    assert response.status_code == 504
    assert upstream.hits["/slow.png"] < 10


# --- relative URLs from the app's origin, after the public folder ---


def test_origin_fallback_like_nexts_internal_fetch(make_app: MakeApp, upstream: Upstream) -> None:
    png = imagegen.png(800, 600)
    upstream.routes["/api/cc"] = Route(body=png, headers={"Cache-Control": "public, max-age=86400"})
    upstream.routes["/api/redirect"] = Route(307, headers={"Location": "/api/cc"})
    upstream.routes["/api/needs-cookie"] = Route(401, b"no cookie, no image")
    app = make_app(origin=upstream.url(""))
    local = app.get("url=/test.png&w=640&q=75")  # the public folder answers first
    assert local.status_code == 200
    assert upstream.hits == {}
    response = app.get("url=/api/cc&w=640&q=75", cookie="session=secret")
    assert imagegen.decode(response.content)[:3] == ("webp", 640, 480)
    assert response.headers["cache-control"] == "public, max-age=86400, must-revalidate"
    assert response.headers["content-disposition"] == 'attachment; filename="cc.webp"'
    internal = '"url" parameter is valid but internal response is invalid'
    assert_error(app.get("url=/api/redirect&w=640&q=75"), 502, internal)
    assert_error(
        app.get("url=/api/needs-cookie&w=640&q=75", cookie="session=secret"), 401, internal
    )
    assert_error(app.get("url=/nowhere.png&w=640&q=75"), 404, internal)
    assert all("cookie" not in request for request in request_headers(upstream))


@pytest.mark.parametrize(
    "content_type", ["application/svg+xml", "image/svg+xml,image/svg+xml", "image/png"]
)
def test_svg_bytes_are_svg_whatever_the_upstream_says(
    make_app: MakeApp, upstream: Upstream, content_type: str
) -> None:
    upstream.routes["/a"] = Route(body=imagegen.svg(), headers={"Content-Type": content_type})
    response = make_app(remote_config(upstream)).get(f"url={upstream.url('/a')}&w=640&q=75")
    assert_error(response, 400, '"url" parameter is valid but image type is not allowed')
