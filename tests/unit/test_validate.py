"""validateParams with the default 16.4.6 config unless a case says otherwise.

Next's code: ``ImageOptimizerCache.validateParams`` in
``packages/next/src/server/image-optimizer.ts``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from urllib.parse import quote

import pytest

from handler.contract import errors
from handler.contract.config import ImagesConfig, load_images_config
from handler.contract.errors import ImageError
from handler.contract.validate import validate_params
from handler.model import ImageParams

DEFAULT = ImagesConfig()
ANY_REMOTE = load_images_config('{"remotePatterns": [{"hostname": "**"}]}')
QUALITIES = load_images_config('{"qualities": [50, 75, 100]}')
WEBP = "image/webp"


def error_of(query: str, config: ImagesConfig = DEFAULT, accept: str | None = WEBP) -> str:
    with pytest.raises(ImageError) as caught:
        validate_params(query, accept, config)
    assert caught.value.status == 400
    return caught.value.message


@pytest.mark.parametrize(
    ("query", "message"),
    [
        # each message, in the order validateParams checks
        ("w=640&q=75", errors.URL_REQUIRED),
        ("url=&w=640&q=75", errors.URL_REQUIRED),
        ("url=/test.png&url=/a.png&w=640&q=75", errors.URL_ARRAY),
        ("url=&url=/a.png&w=640&q=75", errors.URL_ARRAY),
        ("url=/" + "a" * 4000 + "&w=640&q=75", errors.URL_TOO_LONG),
        ("url=//example.vercel.sh&w=640&q=75", errors.URL_PROTOCOL_RELATIVE),
        ("url=/_next/image?url=test.pngw=1&q=75", errors.URL_RECURSIVE),
        ("url=/assets/_next/image?url=%2Ftest.png&w=128&q=75", errors.URL_RECURSIVE),
        ("url=%2F_next%2F%2569mage&w=640&q=75", errors.URL_RECURSIVE),
        ("url=%252F_next%252Fimage%253Furl%253D%25252Ftest.png&w=640&q=75", errors.URL_INVALID),
        ("url=file://example.vercel.sh:1234/test.png&w=640&q=75", errors.URL_INVALID),
        ("url=ftp://example.vercel.sh/test.png&w=640&q=75", errors.URL_INVALID),
        ("url=http://vercel.com/button&w=640&q=75", errors.URL_NOT_ALLOWED),
        ("url=/api/cc?x=1&w=640&q=75", errors.URL_NOT_ALLOWED),
        ("url=/test.png&q=75", errors.W_REQUIRED),
        ("url=/test.png&w=0&q=75", errors.W_INVALID),
        ("url=/test.png&w=-100&q=75", errors.W_INVALID),
        ("url=/test.png&w=foo&q=75", errors.W_INVALID),
        ("url=/test.png&w=99.9&q=75", errors.W_INVALID),
        ("url=/test.png&w=1000&q=75", errors.width_not_allowed("1000")),
        ("url=/test.png&w=8&q=70", errors.width_not_allowed("8")),
        ("url=/test.png&w=640", errors.Q_REQUIRED),
        ("url=/test.png&w=640&q=101", errors.Q_INVALID),
        ("url=/test.png&w=640&q=0", errors.Q_INVALID),
        ("url=/test.png&w=640&q=foo", errors.Q_INVALID),
        ("url=/test.png&w=640&q=99.9", errors.Q_INVALID),
        ("url=/test.png&w=640&q=80", errors.quality_not_allowed("80")),
        ("url=/test.png&w=640&q=75&q=75", errors.Q_ARRAY),
        # edge cases, and which check wins when several fail
        ("url=/test.png&w=640&w=640&q=75", errors.W_ARRAY),
        ("url=/test.png&w=&q=75", errors.W_REQUIRED),
        ("url=/test.png&w=640&q=", errors.Q_REQUIRED),
        ("url=/test.png&w=%2B640&q=75", errors.W_INVALID),
        ("url=/test.png&w=640%0A&q=75", errors.W_INVALID),
        ("url=/test.png&w=000&q=75", errors.W_INVALID),
        ("url=/test.png&w=16&q=75", errors.width_not_allowed("16")),
        (
            "url=/test.png&w=99999999999999999999&q=75",
            errors.width_not_allowed("100000000000000000000"),
        ),
        ("url=/test.png&w=9999999999999999999999&q=75", errors.width_not_allowed("1e+22")),
        ("url=/test.png&w=" + "9" * 400 + "&q=75", errors.width_not_allowed("Infinity")),
        ("url=/test.png&w=00640&q=075", None),  # leading zeros are fine
        ("url=ftp://x&q=1", errors.URL_INVALID),  # url checks run first
        ("url=/a.png&w=abc", errors.W_INVALID),  # w syntax before q presence
        ("url=/a.png&w=1000&q=foo", errors.Q_INVALID),  # q syntax before the width allow-list
        ("url=/a.png&w=1000&q=101", errors.width_not_allowed("1000")),
        ("url=nope&w=640&q=75", errors.URL_INVALID),
        ("url=javascript:alert(1)&w=640&q=75", errors.URL_INVALID),
        ("url=data:image/png;base64,AAAA&w=640&q=75", errors.URL_INVALID),
        ("url=/_next/image&w=640&q=75", errors.URL_RECURSIVE),
        ("url=/_next/image/x.png&w=640&q=75", errors.URL_RECURSIVE),
        ("url=/x/%5F%6Eext/image&w=640&q=75", errors.URL_RECURSIVE),
        ("url=/a/../_next/image&w=640&q=75", errors.URL_RECURSIVE),
        ("url=/a?v=1&w=640&q=75", errors.URL_NOT_ALLOWED),
        ("url=/a?&w=640&q=75", None),  # "?" alone parses to search ''
    ],
)
def test_messages(query: str, message: str | None) -> None:
    if message is None:
        assert isinstance(validate_params(query, WEBP, DEFAULT), ImageParams)
    else:
        assert error_of(query) == message


def test_quality_message_interpolates_the_raw_string() -> None:
    config = load_images_config('{"qualities": [50]}')
    assert error_of("url=/a.png&w=640&q=075", config) == errors.quality_not_allowed("075")


def test_quality_allow_list() -> None:
    assert error_of("url=/a.png&w=640&q=13", QUALITIES) == errors.quality_not_allowed("13")
    assert validate_params("url=/a.png&w=640&q=50", None, QUALITIES).quality == 50


def test_relative_success_keeps_the_raw_href() -> None:
    params = validate_params("url=%2Fa%2F..%2Fb%20c.png&w=00640&q=075", "image/webp", DEFAULT)
    assert params == ImageParams(
        href="/a/../b c.png",
        is_absolute=False,
        is_static=False,
        width=640,
        quality=75,
        mime_type="image/webp",
    )


@pytest.mark.parametrize(
    ("url", "href"),
    [
        ("HTTPS://Example.COM:443/a/../b?x=1#f", "https://example.com/b?x=1#f"),
        ("https:/x.com/a", "https://x.com/a"),
        ("http://0x7f.1/", "http://127.0.0.1/"),
        ("http://2130706433/", "http://127.0.0.1/"),
        ("http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/"),
        ("https://bücher.de/ä b.png", "https://xn--bcher-kva.de/%C3%A4%20b.png"),
        ("https://user:pw@example.com/a", "https://user:pw@example.com/a"),
        (
            "http://localhost:3000/_next/image?url=/a.png",
            "http://localhost:3000/_next/image?url=/a.png",
        ),
    ],
)
def test_absolute_href_is_whatwg_normalised(url: str, href: str) -> None:
    # Private-looking hosts pass validation; the SSRF guard is the fetcher's job
    # (``fetchExternalImage``).
    params = validate_params(f"url={quote(url, safe='')}&w=640&q=75", None, ANY_REMOTE)
    assert (params.href, params.is_absolute, params.mime_type) == (href, True, "")


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:1234/a",
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://0x7f.1/",
        "http://169.254.169.254/",
        "http://10.0.0.1/",
    ],
)
def test_case_64_hosts_reach_the_fetcher(url: str) -> None:
    assert validate_params(f"url={quote(url, safe='')}&w=640&q=75", None, ANY_REMOTE).is_absolute


def test_hostnames_longer_than_dns_allows_are_not_allowed() -> None:
    longest = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters
    fits = quote(f"https://{longest}/a.png", safe="")
    assert validate_params(f"url={fits}&w=640&q=75", None, ANY_REMOTE).is_absolute
    too_long = quote(f"https://c{longest}/a.png", safe="")
    assert error_of(f"url={too_long}&w=640&q=75", ANY_REMOTE) == errors.URL_NOT_ALLOWED
    domain = load_images_config(json.dumps({"domains": [f"c{longest}"]}))
    assert error_of(f"url={too_long}&w=640&q=75", domain) == errors.URL_NOT_ALLOWED


def test_domains_allow_any_protocol_port_and_path() -> None:
    config = load_images_config('{"domains": ["example.com"]}')
    url = quote("http://EXAMPLE.com:8080/any/path?q=1", safe="")
    assert validate_params(f"url={url}&w=640&q=75", None, config).href == (
        "http://example.com:8080/any/path?q=1"
    )
    sub = quote("http://sub.example.com/a", safe="")
    assert error_of(f"url={sub}&w=640&q=75", config) == errors.URL_NOT_ALLOWED


@pytest.mark.parametrize(
    ("base_path", "url", "is_static"),
    [
        ("", "/_next/static/media/a.123.jpg", True),
        ("", "/_next/static/immutable/media/a.jpg", True),
        ("", "/_next/static/mediafoo.jpg", True),  # a plain prefix test, like Next
        ("", "/_next/static/chunks/a.jpg", False),
        ("/docs", "/docs/_next/static/media/a.jpg", True),
        ("/docs", "/docs/_next/static/immutable/media/a.jpg", True),
        ("/docs", "/_next/static/media/a.jpg", False),
    ],
)
def test_is_static(base_path: str, url: str, is_static: bool) -> None:
    config = replace(DEFAULT, base_path=base_path)
    assert validate_params(f"url={url}&w=640&q=75", None, config).is_static is is_static


def test_length_counts_utf16_code_units() -> None:
    fits = "/" + "a" * 3069 + "😀"  # 3072 UTF-16 units
    assert validate_params(f"url={quote(fits)}&w=640&q=75", None, DEFAULT).href == fits
    assert error_of(f"url={quote(fits + 'a')}&w=640&q=75") == errors.URL_TOO_LONG


def test_recursion_regex_end_is_the_end_of_the_string() -> None:
    # JS `$` does not match before a trailing newline, so Next does not call this recursive.
    params = validate_params("url=%2F_next%2Fimage%250A&w=640&q=75", None, DEFAULT)
    assert params.href == "/_next/image%0A"


def test_absolute_next_image_url_is_allowed() -> None:
    url = quote("https://other.example/_next/image?url=%2Fa.png&w=64&q=75", safe="")
    assert validate_params(f"url={url}&w=640&q=75", None, ANY_REMOTE).is_absolute


@pytest.mark.parametrize(
    ("accept", "mime_type"),
    [
        ("image/avif,image/webp,image/apng,image/*,*/*;q=0.8", "image/avif"),  # case 29
        ("image/webp,image/apng,image/*,*/*;q=0.8", "image/webp"),  # case 30
        ("image/invalid", ""),  # case 31
        (None, ""),
    ],
)
def test_mime_type(accept: str | None, mime_type: str) -> None:
    config = replace(DEFAULT, formats=("image/avif", "image/webp"))
    assert validate_params("url=/a.png&w=640&q=75", accept, config).mime_type == mime_type


def test_case_66_malformed_accept_is_our_400() -> None:
    assert error_of("url=/a.png&w=640&q=75", accept="image/webp;foo") == errors.ACCEPT_INVALID


def test_parameter_errors_win_over_a_malformed_accept() -> None:
    assert error_of("url=/a.png&w=640&q=80", accept="image/webp;foo") == (
        errors.quality_not_allowed("80")
    )


@pytest.mark.parametrize(
    "url", ["%2F%25E0%25A4%25A.png", "%2F%25E0%25A4.png", "%2F%25ED%25A0%2580"]
)
def test_case_67_malformed_escape_is_our_400(url: str) -> None:
    assert error_of(f"url={url}&w=640&q=75") == errors.URL_MALFORMED_ESCAPE


def test_unparsable_relative_url_is_invalid() -> None:
    assert error_of("url=%2F%5C%5B&w=640&q=75") == errors.URL_INVALID


ONLY_PNG = load_images_config('{"localPatterns": [{"pathname": "/only/*.png"}]}')


@pytest.mark.parametrize("separator", ["%2F", "%2f", "%5C", "%5c"])
def test_encoded_separators_never_widen_a_local_pattern(separator: str) -> None:
    # Next lets /only/*.png serve public/only/private/secret.png this way; we refuse it.
    url = f"/only/private{separator}secret.png"
    query = f"url={quote(url, safe='/')}&w=640&q=75"
    assert error_of(query, ONLY_PNG) == errors.URL_NOT_ALLOWED
    assert error_of(query) == errors.URL_NOT_ALLOWED  # Next 16's default localPatterns too
    no_patterns = replace(DEFAULT, local_patterns=None)  # Next 15: no allow-list to widen
    assert validate_params(query, None, no_patterns).href == url


def test_only_real_encoded_separators_are_refused() -> None:
    assert validate_params("url=/only/ok.png&w=640&q=75", None, ONLY_PNG).href == "/only/ok.png"
    literal = validate_params("url=/only/a%25252Fb.png&w=640&q=75", None, ONLY_PNG)
    assert literal.href == "/only/a%252Fb.png"  # the file is named "a%2Fb.png"
    # A raw backslash is a real separator once WHATWG-parsed: the pattern sees two segments.
    assert error_of("url=/only/a%5Cb.png&w=640&q=75", ONLY_PNG) == errors.URL_NOT_ALLOWED


def test_query_decoding_matches_urlsearchparams() -> None:
    params = validate_params("url=/a+b%2Bc%FF.png&w=640&q=75", None, DEFAULT)
    assert params.href == "/a b+c\ufffd.png"
