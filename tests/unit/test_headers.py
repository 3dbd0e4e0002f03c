"""Next's header rules as pure functions.

Next's code: ``setResponseHeaders`` and ``getFileNameWithExtension`` in
``packages/next/src/server/image-optimizer.ts``, ``getMaxAge`` in
``packages/next/src/server/image-optimizer/get-max-age.ts``, ``sendEtagResponse`` in
``packages/next/src/server/send-payload.ts``.
"""

from __future__ import annotations

import pytest

from handler.contract.headers import (
    cache_control,
    content_disposition,
    file_name,
    get_max_age,
    is_fresh,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, 0),
        ("", 0),
        ("max-age=100", 100),
        ("s-maxage=200,max-age=100", 200),
        ("max-age=100, s-maxage=200", 200),
        ("s-maxage=0, max-age=60", 0),  # "0" is a non-empty string in JS
        ("s-maxage=, max-age=60", 60),
        ('max-age="50"', 50),
        ("max-age=10.9", 10),
        ("max-age=1e3", 1),
        ("max-age=-5", -5),
        ("max-age=abc", 0),
        ("max-age = 50", 0),  # a key with spaces is not recognised
        ("no-store", 0),
        ("private, max-age=30", 30),
        ("Max-Age=70", 70),
        ("max-age=10, max-age=20", 20),  # a later duplicate wins
    ],
)
def test_get_max_age(header: str | None, expected: int) -> None:
    assert get_max_age(header) == expected


def test_cache_control_static_and_dynamic() -> None:
    assert cache_control(True, 14400) == "public, max-age=315360000, immutable"
    assert cache_control(False, 14400) == "public, max-age=14400, must-revalidate"


@pytest.mark.parametrize(
    ("href", "content_type", "expected"),
    [
        ("/test.jpg", "image/webp", "test.webp"),
        ("/test.jpg", "image/jpeg", "test.jpeg"),
        ("/dir/a.b.c.png", "image/webp", "a.webp"),
        ("http://h/redirect?to=x.png", "image/webp", "redirect.webp"),
        ("/api/cc", "image/webp", "cc.webp"),
        ("/dir/", "image/webp", "image.bin"),
        ("/x.svg", "image/svg+xml", "x.svg"),
        ("/x.ico", "image/x-icon", "x.ico"),
        ("/x.icns", "image/x-icns", "x.icns"),
        ("/x.jp2", "image/jp2", "x.jp2"),
    ],
)
def test_file_name(href: str, content_type: str, expected: str) -> None:
    assert file_name(href, content_type) == expected


@pytest.mark.parametrize(
    ("href", "kind", "expected"),
    [
        ("/test.png", "attachment", 'attachment; filename="test.webp"'),
        (
            "/日本.png",
            "attachment",
            "attachment; filename=\"??.webp\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.webp",
        ),
        (
            "/%E6%97%A5.png",
            "inline",
            "inline; filename=\"%E6%97%A5.webp\"; filename*=UTF-8''%25E6%2597%25A5.webp",
        ),
        ('/a"b.png', "inline", 'inline; filename="a\\"b.webp"'),
        ("/café.png", "inline", 'inline; filename="café.webp"'),
    ],
)
def test_content_disposition(href: str, kind: str, expected: str) -> None:
    assert content_disposition(href, "image/webp", kind) == expected


ETAG = "DBVeA4PxnvX0XzqRul9EWAJWPgoL21A3jH_6Dv_aK3k"


@pytest.mark.parametrize(
    ("headers", "fresh"),
    [
        ({"if-none-match": ETAG}, True),
        ({"if-none-match": f'"{ETAG}"'}, False),  # Next's ETag is unquoted
        ({"if-none-match": f"W/{ETAG}"}, True),
        ({"if-none-match": f"foo, {ETAG}"}, True),
        ({"if-none-match": "*"}, True),
        ({"if-none-match": ETAG, "cache-control": "no-cache"}, False),
        ({"if-none-match": ETAG, "cache-control": "max-age=0, no-cache"}, False),
        ({"if-none-match": ETAG, "if-modified-since": "Wed, 21 Oct 2015 07:28:00 GMT"}, False),
        ({"if-modified-since": "Wed, 21 Oct 2015 07:28:00 GMT"}, False),
        ({}, False),
        ({"if-none-match": "other"}, False),
    ],
)
def test_is_fresh(headers: dict[str, str], fresh: bool) -> None:
    assert is_fresh(headers, ETAG) is fresh
