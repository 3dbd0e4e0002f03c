"""Loading and normalising the images config from every supported source.

Next's code: ``imageConfigDefault`` in ``packages/next/src/shared/lib/image-config.ts``,
``assignDefaults`` in ``packages/next/src/server/config.ts``, ``writeImagesManifest`` in
``packages/next/src/build/index.ts``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from handler.contract.config import ImagesConfig, load_images_config

# The images object of a real 16.4.6 required-server-files.json with no images config.
DEFAULT_IMAGES_JSON = json.loads("""{
  "deviceSizes":[640,750,828,1080,1200,1920,2048,3840],
  "imageSizes":[32,48,64,96,128,256,384],
  "path":"/_next/image","loader":"default","loaderFile":"","domains":[],
  "disableStaticImages":false,"minimumCacheTTL":14400,"formats":["image/webp"],
  "maximumRedirects":3,"maximumResponseBody":50000000,"dangerouslyAllowLocalIP":false,
  "dangerouslyAllowSVG":false,
  "contentSecurityPolicy":"script-src 'none'; frame-src 'none'; sandbox;",
  "contentDispositionType":"attachment",
  "localPatterns":[{"pathname":"**","search":""}],
  "remotePatterns":[],"qualities":[75],"unoptimized":false,"customCacheHandler":false}""")

GLOB_ANY = r"^(?:(?!(?:^|\/)\.{1,2}(?:\/|$))(?:(?:(?!(?:^|\/)\.{1,2}(?:\/|$)).)*?)\/?)$"
MANIFEST = {
    "version": 1,
    "images": {
        **DEFAULT_IMAGES_JSON,
        "path": "/docs/_next/image",
        "sizes": [640, 750, 828, 1080, 1200, 1920, 2048, 3840, 32, 48, 64, 96, 128, 256, 384],
        "remotePatterns": [
            {
                "protocol": "http",
                "hostname": "^(?:^(?:localhost)$)$",
                "port": "3918",
                "pathname": GLOB_ANY,
            }
        ],
        "localPatterns": [{"pathname": GLOB_ANY, "search": ""}],
    },
}


def required_server_files(images: dict[str, Any], **config: Any) -> dict[str, Any]:
    return {"version": 1, "config": {"distDir": ".next", **config, "images": images}}


def write(path: Path, doc: object) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


def test_defaults_are_next_16_4_6() -> None:
    config = load_images_config(None)
    assert config == ImagesConfig()
    assert config.to_json() == DEFAULT_IMAGES_JSON
    assert config.sizes == (
        640,
        750,
        828,
        1080,
        1200,
        1920,
        2048,
        3840,
        32,
        48,
        64,
        96,
        128,
        256,
        384,
    )
    assert (config.base_path, config.img_opt_timeout_seconds) == ("", 7.0)
    assert (config.img_opt_max_input_pixels, config.img_opt_mozjpeg) == (268_402_689, True)


def test_next_directory_prefers_required_server_files(tmp_path: Path) -> None:
    images = {**DEFAULT_IMAGES_JSON, "qualities": [50, 75], "maximumDiskCacheSize": 0}
    experimental = {
        "imgOptTimeoutInSeconds": 3,
        "imgOptMaxInputPixels": 1000,
        "imgOptMozjpeg": False,
    }
    write(
        tmp_path / "required-server-files.json",
        required_server_files(images, basePath="/docs", experimental=experimental),
    )
    write(tmp_path / "images-manifest.json", MANIFEST)
    config = load_images_config(str(tmp_path))
    assert config.qualities == (50, 75)
    assert config.base_path == "/docs"
    assert (config.img_opt_timeout_seconds, config.img_opt_max_input_pixels) == (3.0, 1000)
    assert config.img_opt_mozjpeg is False
    assert config.to_json() == images  # resolved build output is taken as is


def test_next_directory_falls_back_to_the_manifest(tmp_path: Path) -> None:
    write(tmp_path / "images-manifest.json", MANIFEST)
    config = load_images_config(str(tmp_path))
    assert config.base_path == "/docs"
    (pattern,) = config.remote_patterns
    assert (pattern.protocol, pattern.port, pattern.search) == ("http", "3918", None)
    assert pattern.hostname.search("localhost") and not pattern.hostname.search("localhostx")
    assert pattern.pathname.search("/a/b.png") and not pattern.pathname.search("/a/../b")
    assert config.to_json()["remotePatterns"] == MANIFEST["images"]["remotePatterns"]  # type: ignore[index]
    assert config.to_json()["sizes"] == MANIFEST["images"]["sizes"]  # type: ignore[index]


def test_required_server_files_path(tmp_path: Path) -> None:
    source = write(tmp_path / "rsf.json", required_server_files({"formats": ["image/avif"]}))
    assert load_images_config(source).formats == ("image/avif",)


def test_images_manifest_path(tmp_path: Path) -> None:
    source = write(tmp_path / "images-manifest.json", MANIFEST)
    assert len(load_images_config(source).remote_patterns) == 1


@pytest.mark.parametrize(
    "shape",
    [
        lambda images: {"images": images, "basePath": "/b"},
        lambda images: images,
    ],
)
def test_user_json_file_shapes(tmp_path: Path, shape: Any) -> None:
    source = write(tmp_path / "next-images.json", shape({"minimumCacheTTL": 60}))
    config = load_images_config(source)
    assert config.minimum_cache_ttl == 60
    assert config.device_sizes == ImagesConfig().device_sizes  # merged over the defaults


def test_inline_json_with_base_path_and_experimental() -> None:
    config = load_images_config(
        ' {"images": {"unoptimized": true}, "basePath": "/b",'
        ' "experimental": {"imgOptMozjpeg": false}}'
    )
    assert (config.unoptimized, config.base_path, config.img_opt_mozjpeg) == (True, "/b", False)


def test_user_local_patterns_get_the_static_media_patterns() -> None:
    config = load_images_config('{"localPatterns": [{"pathname": "/assets/**", "search": "?v=1"}]}')
    assert config.to_json()["localPatterns"] == [
        {"pathname": "/assets/**", "search": "?v=1"},
        {"pathname": "/_next/static/media/**", "search": ""},
        {"pathname": "/_next/static/immutable/media/**", "search": ""},
    ]


def test_static_media_patterns_are_not_duplicated() -> None:
    given = [{"pathname": "/_next/static/media/**", "search": ""}, {"pathname": "/a"}]
    config = load_images_config(json.dumps({"localPatterns": given}))
    assert config.to_json()["localPatterns"] == [
        *given,
        {"pathname": "/_next/static/immutable/media/**", "search": ""},
    ]


def test_remote_patterns_are_normalised() -> None:
    config = load_images_config(
        json.dumps(
            {
                "remotePatterns": [
                    {"protocol": "https:", "hostname": "*.example.com"},
                    "https://example.com/account/**",
                    "http://Example.com:8080/a?x=1",
                ]
            }
        )
    )
    assert config.to_json()["remotePatterns"] == [
        {"protocol": "https", "hostname": "*.example.com"},
        {
            "protocol": "https",
            "hostname": "example.com",
            "port": "",
            "pathname": "/account/**",
            "search": "",
        },
        {
            "protocol": "http",
            "hostname": "example.com",
            "port": "8080",
            "pathname": "/a",
            "search": "?x=1",
        },
    ]
    assert [p.port for p in config.remote_patterns] == [None, "", "8080"]


def test_to_json_round_trips() -> None:
    config = load_images_config(
        '{"remotePatterns": ["https://a.com/x/**"], "localPatterns": [{"pathname": "/a/**"}],'
        ' "domains": ["b.com"], "formats": ["image/avif", "image/webp"], "deviceSizes": [100.0]}'
    )
    assert config.device_sizes == (100,)
    again = load_images_config(json.dumps(config.to_json()))
    assert again.to_json() == config.to_json()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            '{"remotePatterns": [{"protocol": "ftp", "hostname": "a"}]}',
            'Specified images.remotePatterns must have protocol "http" or "https" received "ftp".',
        ),
        (
            '{"remotePatterns": ["ftp://a.com/x"]}',
            'Specified images.remotePatterns must have protocol "http" or "https" received "ftp".',
        ),
        (
            '{"remotePatterns": [{"pathname": "/a"}]}',
            r"images.remotePatterns\[0\].hostname is required",
        ),
        ('{"remotePatterns": [{"hostname": "a", "port": "123456"}]}', r"remotePatterns\[0\].port"),
        (
            '{"remotePatterns": [{"hostname": "a", "path": "/x"}]}',
            r"remotePatterns\[0\]: unknown key",
        ),
        ('{"remotePatterns": [{"hostname": "a(b)"}]}', r"remotePatterns\[0\]: unsupported glob"),
        (
            '{"remotePatterns": ["not a url"]}',
            r"remotePatterns\[0\]: 'not a url' is not a valid URL",
        ),
        (
            '{"localPatterns": [{"pathname": 5}]}',
            r"images.localPatterns\[0\].pathname must be a string",
        ),
        ('{"deviceSizes": [0]}', r"images.deviceSizes\[0\] must be an integer >= 1 and <= 10000"),
        ('{"deviceSizes": [true]}', r"images.deviceSizes\[0\] must be an integer"),
        ('{"imageSizes": [1.5]}', r"images.imageSizes\[0\] must be an integer"),
        ('{"qualities": []}', "images.qualities must have at least 1 item"),
        ('{"qualities": [101]}', r"images.qualities\[0\]"),
        (
            '{"formats": ["image/png"]}',
            r"images.formats\[0\] must be one of image/avif, image/webp",
        ),
        ('{"minimumCacheTTL": -1}', "images.minimumCacheTTL"),
        ('{"maximumRedirects": 21}', "images.maximumRedirects"),
        ('{"dangerouslyAllowSVG": "yes"}', "images.dangerouslyAllowSVG must be a boolean"),
        ('{"contentDispositionType": "x"}', "images.contentDispositionType must be one of"),
        ('{"loader": "nope"}', "images.loader must be one of"),
        ('{"domains": "a.com"}', "images.domains must be an array"),
        ('{"remotePattern": []}', "images: unknown key\\(s\\) remotePattern"),
        ('{"images": {}, "basePath": "docs"}', "basePath must start with"),
        (
            '{"images": {}, "experimental": {"imgOptTimeoutInSeconds": 0}}',
            "experimental.imgOptTimeoutInSeconds must be a positive number",
        ),
        ('{"images": []}', "images must be an object"),
        ("{nope", "inline JSON is not valid JSON"),
    ],
)
def test_invalid_config_names_the_key(source: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_images_config(source)


def test_missing_sources(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"neither required-server-files\.json nor images-manifest"
    ):
        load_images_config(str(tmp_path))
    with pytest.raises(ValueError, match="cannot read images config"):
        load_images_config(str(tmp_path / "missing.json"))
